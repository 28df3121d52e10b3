"""`fitplan config MODEL [opts] --out DIR`: write plan.json, the Accelerate YAML and the DeepSpeed JSON."""
from __future__ import annotations

import json
from pathlib import Path

import click

from launch import planfile, runner
from launch.options import launch_options, train_options


@click.command("config", short_help="Write plan.json and the Accelerate / DeepSpeed configs of one plan.")
@click.argument("model")
@train_options
@launch_options
@click.option("--model-path", type=click.Path(file_okay=False), help="Local folder with the model's weights.")
def command(model: str, model_path: str | None, out_dir: str | None, force: bool, main_process_ip: str | None,
            main_process_port: int | None, machine_rank: int, as_json: bool, **options) -> None:
    """Write the plan of MODEL and the launcher configs into --out (default: runs/<model>-<time>)."""
    plan = runner.make_plan(model, options, model_path)
    nodes = runner.multi_node(None, main_process_ip, main_process_port, machine_rank)
    paths = runner.write_run_folder(out_dir or runner.default_run_dir(plan), plan, nodes, force)
    if as_json:
        click.echo(json.dumps({"out": str(paths["plan"].parent), "files": {k: str(v) for k, v in paths.items()},
                               "plan": plan}, indent=2))
        return
    click.echo(render_written(paths, plan))


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
