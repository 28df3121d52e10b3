"""`fitplan calibrate`: learn a GPU's CUDA context and allocator reserve from real runs' reports."""
from __future__ import annotations

import json

import click

from cli.options import PathText
from common.errors import InputError


@click.command("calibrate")
@click.argument("reports", nargs=-1, metavar="RUN_REPORTS...", type=PathText())
@click.option("--dry-run", is_flag=True, help="Print what would be stored; write nothing.")
@click.option("--show", is_flag=True, help="Print the calibration in use (profile path and entries) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(reports: tuple[str, ...], dry_run: bool, show: bool, as_json: bool) -> None:
    """Calibrate plans for a GPU from the run_report.json files of real runs on it.

    Each RUN_REPORT is a run_report.json written by `fitplan launch` (or the run folder holding it), from
    runs on ONE GPU model that ended with status "ok". From every rank it takes the allocated and
    reserved peaks and NVML's used memory, and stores per GPU model the median CUDA context
    (NVML used - reserved peak) and allocator reserve (reserved / allocated - 1), with the library
    versions and dates, in the user profile ($FITPLAN_CALIBRATION, else
    ~/.config/fitplan/calibration.json). Plans for that GPU then say "calibration": "calibrated: ...".
    A malformed or mismatched report is refused and the profile is left as it was.

    \b
    Examples:
      fitplan calibrate runs/*/run_report.json
      fitplan calibrate runs/a runs/b --dry-run
      fitplan calibrate --show
    """
    from measure import calibrate as calib

    if show:
        info = calib.show()
        click.echo(json.dumps(info, indent=2) if as_json else calib.show_text(info))
        return
    if not reports:
        raise InputError("Give the run_report.json files (or run folders) of runs on one GPU model, "
                        "e.g. `fitplan calibrate runs/*/run_report.json`, or --show for the calibration in use.")
    result = calib.calibrate(list(reports), dry_run=dry_run)
    click.echo(json.dumps(result, indent=2) if as_json else calib.result_text(result))
