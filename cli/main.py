"""`fitplan`: the command group. Each subcommand lives in `cli/commands/<name>.py` and is imported only
when it runs, so `fitplan plan` never pays for the heavy libraries of `launch`. Every `FitplanError` becomes
one sentence on stderr (options spelled as flags), `{"error": ...}` on stdout with --json, and exit 2."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from typing import NoReturn

import click

from common.errors import FitplanError, full_stop, one_line

# command name -> module that defines `command` (a click.Command)
COMMANDS = {
    "plan": "cli.commands.plan",
    "estimate": "cli.commands.estimate",
    "fits": "cli.commands.fits",
    "gpus": "cli.commands.gpus",
    "models": "cli.commands.models",
    "config": "cli.commands.config",
    "launch": "cli.commands.launch",
    "bench": "cli.commands.bench",
    "env": "cli.commands.env",
    "calibrate": "cli.commands.calibrate",
    "serve": "cli.commands.serve",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _module_exists(COMMANDS[name])]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name]):
            return None
        return importlib.import_module(COMMANDS[name]).command


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is not there either
        return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fitplan")
def cli() -> None:
    """fitplan: what can I fine-tune on this GPU, and how?

    \b
    Start with:
      fitplan plan meta-llama/Llama-2-7b-hf --gpu "RTX 4090"
      fitplan estimate Llama-3.1-8B --method qlora --micro-batch 4 --seq-len 2048
      fitplan fits --gpu a100-80gb
      fitplan serve                      # the same answers on a local page
    """


def fail(message: str, as_json: bool) -> NoReturn:
    """Report a user mistake: one sentence on stderr (and JSON on stdout with --json), exit 2."""
    message = one_line(message)
    if as_json:
        click.echo(json.dumps({"error": message}))
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def main() -> None:
    as_json = "--json" in sys.argv
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        fail("interrupted.", as_json)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        fail(full_stop(err.format_message()), as_json)
    except FitplanError as err:
        fail(str(err), as_json)
    except KeyboardInterrupt:
        fail("interrupted.", as_json)
