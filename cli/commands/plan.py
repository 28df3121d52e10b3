"""`fitplan plan`: what can I train on this machine (or a named card), and how?"""
from __future__ import annotations

import json
import sys

import click

from cli.options import PLOT_OPTION, Count, Finite, request_from_options, train_options, whole


NOTHING_FITS_EXIT = 1   # docs/cli.md: 0 a plan, 1 nothing fits (or nothing the libraries run), 2 a mistake


@click.command("plan")
@click.argument("model")
@train_options
@click.option("--global-batch", type=whole(1, 100_000_000), default=None,
              help="Sequences per optimizer step over all GPUs; gradient accumulation fills the gap.")
@click.option("--prefer", type=click.Choice(["balanced", "speed", "quality", "memory"]), default="balanced",
              show_default=True, help="How to choose among plans that fit.")
@click.option("--tokens", type=Count(), default=None,
              help="Training tokens per epoch (dataset size: 20000000, 2e7 or 20M), for wall time and cost.")
@click.option("--epochs", type=Finite(0, 1e6, low_open=True), default=1.0, show_default=True,
              help="Passes over --tokens.")
@click.option("--trace", is_flag=True,
              help="Confirm the recommended plan by running its real training step on fake tensors "
                   "(adds \"trace\" to the output).")
@PLOT_OPTION
def command(model: str, gpu: str | None, as_json: bool, global_batch: int | None, margin: float, prefer: str,
            tokens: int | None, epochs: float, trace: bool, plot: str | None, **options) -> None:
    """Rank the fine-tuning plans of MODEL that fit, and recommend one.

    Probes this machine's GPUs through NVML, or plans for --gpu NAME. Searches method (full, LoRA,
    QLoRA) x precision x checkpointing x sharding x offload x GPU count, each with the largest
    micro-batch that fits in the card less --margin. Options you set are kept fixed.

    Exit status: 0 with a recommended plan; 1 when nothing fits (the output says what would), 2 for a
    mistake in the input. --plot FILE draws the plans side by side (.png, .svg or .html): memory per GPU
    by component against the card and the usable line, with their predicted tokens/s.

    \b
    Examples:
      fitplan plan meta-llama/Llama-2-7b-hf --gpu "RTX 4090"
      fitplan plan Llama-3.1-8B --gpu rtx3060 --seq-len 4096 --global-batch 32
      fitplan plan Llama-2-70b-hf --gpu h100x8 --method full --tokens 50000000
      fitplan plan Llama-3.1-8B --gpu "RTX 4090" --plot plans.svg
    """
    from cli.render import plan_table

    if plot:
        from cli.commands.estimate import check_plot
        check_plot(plot)
    data, hardware, result = plan_json(model, options, gpu=gpu, global_batch=global_batch, margin=margin,
                                       prefer=prefer, tokens=tokens, epochs=epochs)
    if trace:
        from cli.render import plan_trace_lines
        from measure.trace import trace_plan
        chosen = result.plans[result.recommended] if result.recommended is not None else None
        data["trace"] = trace_plan(model, chosen, hardware, margin=margin)
    if plot:
        draw_plans(plot, data)
    text = None if as_json else "\n".join([plan_table(data), *(plan_trace_lines(data["trace"]) if trace else [])])
    click.echo(json.dumps(data, indent=2) if as_json else text)
    if data["recommended"] is None:
        sys.exit(NOTHING_FITS_EXIT)


def plan_json(model, options: dict, *, gpu: str | None = None, nvml=None, **request) -> tuple:
    """(`plan --json`, the hardware, the search result) for MODEL (a name or a `ResolvedModel`) and the parsed
    options; `nvml`: a fake."""
    from planner.api import search
    from planner.hardware import resolve_hardware
    from planner.model_input import ResolvedModel, resolve_model
    from planner.serialize import plan_dict

    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    hardware = resolve_hardware(gpu, options.get("gpus"), options.get("nodes") or 1, nvml=nvml)
    wanted = request_from_options(resolved, options, **request)
    result = search(wanted, hardware)
    return plan_dict(resolved.spec.name, hardware, result, wanted.margin), hardware, result


def draw_plans(path: str, data: dict) -> None:
    """Write the picture of the plans side by side."""
    from cli.plot import plans_figure, write_picture
    write_picture(path, lambda: plans_figure(data), f"{data['model']}: plans", data)
    click.echo(f"wrote {path}", err=True)
