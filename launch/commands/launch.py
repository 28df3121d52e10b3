"""`fitplan launch MODEL [opts]` or `--plan plan.json`: write the configs, then run `accelerate launch`
with the built-in recipe, or with the user's script given after `--`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from launch import emit, planfile, runner
from launch.commands.config import describe
from launch.options import launch_options, train_options
from planner.errors import UserError


class ScriptAfterDashes(click.Command):
    """Keeps everything after `--` for the user's script, so MODEL stays optional and unambiguous."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["script"], args = args[cut + 1:], args[:cut]
        return super().parse_args(ctx, args)


@click.command("launch", cls=ScriptAfterDashes, short_help="Write the configs and run the training.")
@click.argument("model", required=False)
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), help="Launch this plan.json.")
@train_options
@launch_options
@click.option("--model-path", type=click.Path(file_okay=False), help="Local folder with the model's weights.")
@click.option("--data", type=click.Path(dir_okay=False), help="JSONL (field \"text\") or plain text; default: synthetic tokens.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (default: one pass over --data, or 10).")
@click.option("--lr", type=float, help="Learning rate (default 2e-4 with adapters, 1e-5 full).")
@click.option("--oom-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Relaunches with a smaller micro-batch after an out-of-memory in the first steps.")
@click.option("--dry-run", is_flag=True, help="Write the configs and print the command(s) instead of running.")
@click.pass_context
def command(ctx: click.Context, model: str | None, plan_file: str | None, out_dir: str | None, force: bool,
            main_process_ip: str | None, main_process_port: int | None, machine_rank: int, model_path: str | None,
            data: str | None, steps: int | None, lr: float | None, oom_retries: int, dry_run: bool,
            as_json: bool, **options) -> None:
    """Train MODEL (or --plan) with the built-in recipe, or `-- script.py args` with your own."""
    if plan_file:
        reject_fixed_options(ctx, model)
    saved = planfile.read_plan(plan_file) if plan_file else None
    if saved and saved["launcher"] != "accelerate":
        raise UserError(f"{plan_file} asks for the {saved['launcher']} launcher; fitplan launches through "
                        "accelerate only, so write the plan again with `fitplan config`.")
    nodes = runner.multi_node(saved, main_process_ip, main_process_port, machine_rank)
    plan, run_dir = prepare(model, saved, plan_file, model_path, out_dir, force, nodes, options)
    job = runner.Launch(run_dir, plan, nodes, list(ctx.meta.get("script", [])),
                        recipe_args(model_path, data, steps, lr), oom_retries)
    if dry_run:
        return print_commands(job, as_json)
    if job.config.nodes > 1:
        click.echo("Run on each node (this one is rank %d):\n%s" % (machine_rank, "\n".join(runner.all_node_commands(job))), err=True)
    click.echo(f"{describe(plan)}\nrun folder: {run_dir}", err=True)
    result = runner.run_with_recovery(job, stdout=sys.stderr if as_json else None,
                                      log=lambda line: click.echo(line, err=True))
    finish(job, result, as_json)


def prepare(model, plan, plan_file, model_path, out_dir, force, nodes, options) -> tuple[dict, Path]:
    """The plan and the run folder holding it with fresh launcher configs."""
    if plan_file:
        run_dir = Path(out_dir or Path(plan_file).parent).resolve()
        same = run_dir == Path(plan_file).resolve().parent
        if same:  # the launcher configs derive from the plan: refresh them
            emit.write_configs(run_dir, planfile.plan_config(plan), nodes, force=True)
            return plan, run_dir
        runner.write_run_folder(run_dir, plan, nodes, force)
        return plan, run_dir
    if not (model or model_path):
        raise UserError("name a MODEL (catalog name, HF id or local folder) or pass --plan plan.json.")
    plan = runner.make_plan(model or model_path, options, model_path)
    run_dir = Path(out_dir or runner.default_run_dir(plan)).resolve()
    runner.write_run_folder(run_dir, plan, nodes, force)
    return plan, run_dir


def reject_fixed_options(ctx: click.Context, model: str | None) -> None:
    """A plan fixes the model and the training options; giving them too is a mistake, not an override."""
    fixed = {"model", "global_batch", *(p.name for p in train_options(lambda: None).__click_params__)} - {"as_json"}
    given = [p.opts[0] if p.opts[0].startswith("-") else p.name.upper() for p in ctx.command.params
             if p.name in fixed and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise UserError(f"--plan already fixes the model and training options; drop {', '.join(given)}.")


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
