"""`fitplan config MODEL [opts] --out DIR`: write plan.json, the Accelerate YAML and the DeepSpeed JSON."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import PathText, launch_options, request_from_options, train_options
from launch import planfile, runner
from planner.api import DEFAULT_MARGIN


@click.command("config", short_help="Write plan.json and the Accelerate / DeepSpeed configs of one plan.")
@click.argument("model")
@train_options
@launch_options
@click.option("--model-path", type=PathText(file_okay=False), help="Local folder with the model's weights.")
def command(model: str, model_path: str | None, out_dir: str | None, force: bool, main_process_ip: str | None,
            main_process_port: int | None, machine_rank: int, as_json: bool, global_batch: int | None,
            gpu: str | None, margin: float, **options) -> None:
    """Write the plan of MODEL and the launcher configs into --out (default: runs/<model>-<time>).

    Options you set stay fixed; the others are chosen by the same search as `fitplan plan`, on the card
    named with --gpu or this machine's GPUs. A plan that does not fit is refused, saying how far over it
    is and the nearest way out; --force writes it anyway.

    \b
    Examples:
      fitplan config Llama-3.2-1B --method lora --gpu "RTX 4090" --out runs/llama1b
      fitplan config Llama-2-70b-hf --gpu h100x8 --method full --sharding zero3 --out runs/70b
    """
    plan, warnings = chosen_plan(model, model_path, gpu, global_batch, force, options, margin)
    nodes = runner.multi_node(None, main_process_ip, main_process_port, machine_rank)
    paths = runner.write_run_folder(out_dir or runner.default_run_dir(plan), plan, nodes, force)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps({"out": str(paths["plan"].parent), "files": {k: str(v) for k, v in paths.items()},
                               "plan": plan, "warnings": list(warnings)}, indent=2))
        return
    click.echo(render_written(paths, plan))


def chosen_plan(model, model_path: str | None, gpu: str | None, global_batch: int | None, force: bool,
                options: dict, margin: float = DEFAULT_MARGIN) -> tuple[dict, tuple[str, ...]]:
    """The plan.json of MODEL (a name, a path or a `ResolvedModel`): the search's choice on the named or probed
    card (see `planner.api.choose`)."""
    from planner.api import choose
    from planner.model_input import ResolvedModel, resolve_model

    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model or model_path)
    named = resolved.spec.name if isinstance(model, ResolvedModel) else model or model_path
    request = request_from_options(resolved, options, global_batch=global_batch, margin=margin)
    choice = choose(resolved, request, launch_hardware(gpu, options), force)
    return runner.make_plan(resolved, named, choice, model_path), choice.warnings


def launch_hardware(gpu: str | None, options: dict):
    """The named card, else this machine's GPUs, else None (a run on the CPU, or a plan written elsewhere)."""
    from planner.hardware import resolve_hardware
    from planner.nvml import probe

    if not gpu and not probe().gpus:
        return None
    return resolve_hardware(gpu, options.get("gpus"), options.get("nodes") or 1)


def describe(plan: dict) -> str:
    """One line: method, precision, batch layout, sharding."""
    c = planfile.plan_config(plan)
    gpus = f"{c.gpus} GPU{'s' if c.gpus > 1 else ''}" + (f" x {c.nodes} nodes" if c.nodes > 1 else "")
    return (f"{plan['model']}: {c.method}, {c.precision}, micro-batch {c.micro_batch} x grad-accum {c.grad_accum} "
            f"x {gpus} = global batch {planfile.global_batch(c)}, seq-len {c.seq_len}, sharding {c.sharding}")


def render_written(paths: dict[str, Path], plan: dict) -> str:
    lines = [f"Wrote {paths['plan'].parent}/", f"  {describe(plan)}"]
    lines += [f"  {path.name}" for path in paths.values()]
    lines.append(f"Launch with: fitplan launch --plan {paths['plan']}")
    return "\n".join(lines)
