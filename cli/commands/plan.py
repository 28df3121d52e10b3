"""`fitplan plan`: what can I train on this machine (or a named card), and how?"""
from __future__ import annotations

import json
import sys

import click

from common.errors import InputError
from cli.options import (FROM_OPTION, NO_MODEL, PLOT_OPTION, Count, Finite, given_options, read_from,
                         request_from_options, train_options, whole)


NOTHING_FITS_EXIT = 1   # docs/cli.md: 0 a plan, 1 nothing fits (or nothing the libraries run), 2 a mistake


@click.command("plan")
@click.argument("model", required=False)
@train_options
@FROM_OPTION
@click.option("--global-batch", type=whole(1, 100_000_000), default=None,
              help="Sequences per optimizer step over all GPUs; gradient accumulation fills the gap.")
@click.option("--prefer", type=click.Choice(["balanced", "speed", "quality", "memory"]), default="balanced",
              show_default=True, help="How to choose among plans that fit.")
@click.option("--tokens", type=Count(), default=None,
              help="Training tokens per epoch (dataset size: 20000000, 2e7 or 20M), for wall time and cost.")
@click.option("--epochs", type=Finite(0, 1e6, low_open=True), default=1.0, show_default=True,
              help="Passes over --tokens.")
@click.option("--interconnect", default=None, metavar="LINKS",
              help="Links for the speed model: nvlink or pcie within a node, ib or ethernet between nodes "
                   "(e.g. \"pcie,ethernet\"). [default: nvlink and ib for SXM/NVL cards, pcie and ethernet else]")
@click.option("--trace", is_flag=True,
              help="Confirm the recommended plan by running its real training step on fake tensors "
                   "(adds \"trace\" to the output).")
@PLOT_OPTION
def command(model: str | None, gpu: str | None, as_json: bool, global_batch: int | None, margin: float, prefer: str,
            tokens: int | None, epochs: float, interconnect: str | None, trace: bool, plot: str | None,
            from_files: tuple[str, ...], **options) -> None:
    """Rank the fine-tuning plans of MODEL that fit, and recommend one.

    Probes this machine's GPUs through NVML, or plans for --gpu NAME. Searches method (full, LoRA,
    QLoRA) x precision x checkpointing x sharding x offload x GPU count, each with the largest
    micro-batch that fits in the card less --margin. Options you set are kept fixed.

    --from FILE reads a training config you already have (axolotl, LLaMA-Factory, TRL / Trainer arguments)
    and its Accelerate YAML or DeepSpeed JSON: what they set is kept fixed like an option, the rest is
    searched; MODEL may then be left out, and options given here override the files.

    Exit status: 0 with a recommended plan; 1 when nothing fits (the output says what would), 2 for a
    mistake in the input. --plot FILE draws the plans side by side (.png, .svg or .html): memory per GPU
    by component against the card and the usable line, with their predicted tokens/s.

    \b
    Examples:
      fitplan plan meta-llama/Llama-2-7b-hf --gpu "RTX 4090"
      fitplan plan Llama-3.1-8B --gpu rtx3060 --seq-len 4096 --global-batch 32
      fitplan plan Llama-2-70b-hf --gpu h100x8 --method full --tokens 50000000
      fitplan plan --from axolotl.yaml --gpu "RTX 4090"
      fitplan plan Llama-3.1-8B --gpu "RTX 4090" --plot plans.svg
    """
    from cli.render import plan_table

    files, fallback, per_gpu_batch = None, None, None
    if from_files:
        files = read_from(model, {**options, "global_batch": global_batch}, from_files,
                          given_options({**options, "global_batch": global_batch}), gpu)
        model, fallback = files.model, files.fallback
        options = {k: v for k, v in files.options.items() if k != "global_batch"}
        global_batch = global_batch or files.global_batch
        per_gpu_batch = None if global_batch else files.per_gpu_batch
    elif not model:
        raise InputError(NO_MODEL)
    if plot:
        from cli.commands.estimate import check_plot
        check_plot(plot)
    data, hardware, result = plan_json(model, options, gpu=gpu, global_batch=global_batch, margin=margin,
                                       prefer=prefer, tokens=tokens, epochs=epochs, interconnect=interconnect,
                                       fallback=fallback, per_gpu_batch=per_gpu_batch)
    if files is not None:
        data["from"] = files.section
    if trace:
        from cli.render import plan_trace_lines
        from measure.trace import trace_plan
        chosen = result.plans[result.recommended] if result.recommended is not None else None
        data["trace"] = trace_plan(model, chosen, hardware, margin=margin)
    if plot:
        draw_plans(plot, data)
    text = None if as_json else "\n".join([*(files.lines if files else []), plan_table(data),
                                           *(plan_trace_lines(data["trace"]) if trace else [])])
    click.echo(json.dumps(data, indent=2) if as_json else text)
    if data["recommended"] is None:
        sys.exit(NOTHING_FITS_EXIT)


def plan_json(model, options: dict, *, gpu: str | None = None, nvml=None, fallback: dict | None = None,
              per_gpu_batch: int | None = None, **request) -> tuple:
    """(`plan --json`, the hardware, the search result) for MODEL (a name or a `ResolvedModel`) and the parsed
    options; `nvml`: a fake; `fallback`: what --from files set that no option carries; `per_gpu_batch`: their
    micro-batch x accumulation, made a global batch over all the hardware's GPUs when the files leave the GPU
    count open."""
    from planner.api import search
    from planner.hardware import resolve_hardware
    from planner.interconnect import parse
    from planner.model_input import ResolvedModel, resolve_model
    from planner.serialize import plan_dict

    parse(request.get("interconnect"))   # a mistake in --interconnect is reported before any work
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    hardware = resolve_hardware(gpu, options.get("gpus"), options.get("nodes") or 1, nvml=nvml)
    if per_gpu_batch and not request.get("global_batch"):
        request["global_batch"] = per_gpu_batch * hardware.world_size
    wanted = request_from_options(resolved, options, fallback=fallback, **request)
    result = search(wanted, hardware)
    return plan_dict(resolved.spec.name, hardware, result, wanted.margin), hardware, result


def draw_plans(path: str, data: dict) -> None:
    """Write the picture of the plans side by side."""
    from cli.plot import plans_figure, write_picture
    write_picture(path, lambda: plans_figure(data), f"{data['model']}: plans", data)
    click.echo(f"wrote {path}", err=True)
