"""`fitplan launch MODEL [opts]` or `--plan plan.json`: write the configs, then run `accelerate launch`
with the built-in recipe, or with the user's script given after `--`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from launch import emit, planfile, runner
from cli.commands.config import chosen_plan, describe
from cli.options import Finite, PathText, launch_options, train_options, whole
from common.errors import InputError, opt
from common.files import regular_file


class ScriptAfterDashes(click.Command):
    """Keeps everything after `--` for the user's script, so MODEL stays optional and unambiguous."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["script"], args = args[cut + 1:], args[:cut]
        return super().parse_args(ctx, args)


@click.command("launch", cls=ScriptAfterDashes, short_help="Write the configs and run the training.")
@click.argument("model", required=False)
@click.option("--plan", "plan_file", type=PathText(dir_okay=False), help="Launch this plan.json.")
@train_options
@launch_options
@click.option("--model-path", type=PathText(file_okay=False), help="Local folder with the model's weights.")
@click.option("--data", type=PathText(dir_okay=False), help="JSONL (field \"text\") or plain text; default: synthetic tokens.")
@click.option("--steps", type=whole(1, 10**9), help="Optimizer steps (default: one pass over --data, or 10).")
@click.option("--lr", type=Finite(0, 10, low_open=True), help="Learning rate (default 2e-4 with adapters, 1e-5 full).")
@click.option("--oom-retries", type=whole(0, 100), default=3, show_default=True,
              help="Relaunches with a smaller micro-batch after an out-of-memory in the first steps.")
@click.option("--dry-run", is_flag=True, help="Print the command(s) instead of running; writes nothing.")
@click.pass_context
def command(ctx: click.Context, model: str | None, plan_file: str | None, out_dir: str | None, force: bool,
            main_process_ip: str | None, main_process_port: int | None, machine_rank: int, model_path: str | None,
            data: str | None, steps: int | None, lr: float | None, oom_retries: int, dry_run: bool,
            as_json: bool, global_batch: int | None, gpu: str | None, margin: float, **options) -> None:
    """Train MODEL (or --plan) with the built-in recipe, or `-- script.py args` with your own.

    Options you set stay fixed; the others are chosen by the same search as `fitplan plan` (see `fitplan
    config`). --dry-run prints the command(s) and writes nothing. With your own script the plan assumes
    `--loop trainer` (the model's outputs dropped before backward, as Trainer does) unless you give
    `--loop plain` for a loop that keeps `outputs` through backward.

    \b
    Examples:
      fitplan launch Llama-3.2-1B --gpu "RTX 4090" --model-path ./Llama-3.2-1B --data train.jsonl
      fitplan launch --plan runs/llama1b/plan.json
      fitplan launch Llama-3.2-1B --gpu "RTX 4090" --dry-run -- train.py --epochs 1
    """
    if plan_file:
        reject_fixed_options(ctx, model)
    check_inputs(model_path, data, ctx.meta.get("script", []))
    saved = planfile.read_plan(plan_file) if plan_file else None
    if saved and saved["launcher"] != "accelerate":
        raise InputError(f"{plan_file} asks for the {saved['launcher']} launcher; fitplan launches through "
                         "accelerate only, so write the plan again with `fitplan config`.")
    nodes = runner.multi_node(saved, main_process_ip, main_process_port, machine_rank)
    plan, warnings = (saved, ()) if saved else chosen_plan(model, model_path, gpu, global_batch, force, options, margin)
    run_dir = Path(out_dir or (Path(plan_file).parent if plan_file else runner.default_run_dir(plan))).resolve()
    job = runner.Launch(run_dir, plan, nodes, list(ctx.meta.get("script", [])),
                        recipe_args(model_path, data, steps, lr), oom_retries)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if dry_run:
        return print_commands(job, as_json)
    write_run_folder(job, plan_file, force)
    if job.config.nodes > 1:
        click.echo("Run on each node (this one is rank %d):\n%s" % (machine_rank, "\n".join(runner.all_node_commands(job))), err=True)
    click.echo(f"{describe(plan)}\nrun folder: {run_dir}", err=True)
    result = runner.run_with_recovery(job, stdout=sys.stderr if as_json else None,
                                      log=lambda line: click.echo(line, err=True))
    finish(job, result, as_json)


def check_inputs(model_path: str | None, data: str | None, script: list[str]) -> None:
    """The weights folder, the data and the user's script must be there before anything starts."""
    if model_path and not (Path(model_path) / "config.json").is_file():
        raise InputError(f"{opt('model_path')} {model_path} is not a model folder (it has no config.json); "
                         "give the folder you downloaded the model into.")
    if data:
        regular_file(data, "data file")
    if script and not script[0].startswith("-"):   # `-- -m package.module` names a module, not a file
        regular_file(script[0], "training script")


def write_run_folder(job: runner.Launch, plan_file: str | None, force: bool) -> None:
    """plan.json and fresh launcher configs in the run folder (a plan's own folder is refreshed in place)."""
    if plan_file and job.run_dir == Path(plan_file).resolve().parent:
        emit.write_configs(job.run_dir, job.config, job.nodes, force=True)  # the configs derive from the plan
        return
    runner.write_run_folder(job.run_dir, job.plan, job.nodes, force, job.config)


def reject_fixed_options(ctx: click.Context, model: str | None) -> None:
    """A plan fixes the model and the training options; giving them too is a mistake, not an override."""
    fixed = {"model", "global_batch", *(p.name for p in train_options(lambda: None).__click_params__)} - {"as_json"}
    given = [p.opts[0] if p.opts[0].startswith("-") else p.name.upper() for p in ctx.command.params
             if p.name in fixed and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise InputError(f"--plan already fixes the model and training options; drop {', '.join(given)}.")


def recipe_args(model_path, data, steps, lr) -> list[str]:
    args = []
    for flag, value in (("--model-path", model_path), ("--data", data)):
        if value:
            args += [flag, str(Path(value).resolve())]
    for flag, value in (("--steps", steps), ("--lr", lr)):
        if value is not None:
            args += [flag, str(value)]
    return args


def print_commands(job: runner.Launch, as_json: bool) -> None:
    commands = runner.all_node_commands(job)
    if as_json:
        click.echo(json.dumps({"run_dir": str(job.run_dir), "commands": commands}, indent=2))
        return
    for rank, line in enumerate(commands):
        click.echo(f"# node {rank}\n{line}" if len(commands) > 1 else line)


def finish(job: runner.Launch, result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"run_dir": str(job.run_dir), **result}, indent=2))
    if result["status"] == "oom":
        click.echo(f"error: out of memory even at micro-batch {job.config.micro_batch}; try --grad-ckpt, a shorter "
                   "--seq-len, qlora or more sharding (see `fitplan plan`).", err=True)
        sys.exit(runner.OOM_EXIT)
    if result["status"] == "interrupted":
        click.echo(f"interrupted; what was trained is saved in {job.run_dir}.", err=True)
        sys.exit(130)
    sys.exit(result["exit_code"])
