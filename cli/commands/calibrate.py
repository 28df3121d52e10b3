"""`fitplan calibrate`: learn a GPU's CUDA context and allocator reserve from real runs' reports."""
from __future__ import annotations

import json
import math

import click

from cli.options import PathText
from common.errors import InputError
from common.units import gib


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
        click.echo(json.dumps(info, indent=2) if as_json else show_text(info))
        return
    if not reports:
        raise InputError("Give the run_report.json files (or run folders) of runs on one GPU model, "
                        "e.g. `fitplan calibrate runs/*/run_report.json`, or --show for the calibration in use.")
    result = calib.calibrate(list(reports), dry_run=dry_run)
    click.echo(json.dumps(result, indent=2) if as_json else result_text(result))


def result_text(result: dict) -> str:
    entry, defaults = result["entry"], result["defaults"]
    verb = "Would store" if result["dry_run"] else "Stored"
    lines = [f"Calibration of {entry['gpu']} from {entry['runs']} run(s), {entry['samples']} GPU sample(s):",
             f"  CUDA context      {gib(entry['context_bytes']):>10}   (shipped default {gib(defaults['context_bytes'])}; "
             f"runs {gib(entry['context_bytes_range'][0])} to {gib(entry['context_bytes_range'][1])})",
             f"  allocator reserve {100 * entry['reserve_fraction']:>+9.2f} %   (shipped default "
             f"{100 * defaults['reserve_fraction']:+.2f} %; runs {100 * entry['reserve_fraction_range'][0]:+.2f} % to "
             f"{100 * entry['reserve_fraction_range'][1]:+.2f} %)",
             f"  provenance: {entry['provenance']}",
             f"{verb} in {result['profile']} under {', '.join(repr(k) for k in result['keys'])}."]
    if result["replaced"]:
        lines.append("  (replaces the previous entry: " + "; ".join(
            f"{k}: {v.get('provenance', '?')}" for k, v in result["replaced"].items() if "alias_of" not in v) + ")")
    if result["catalog_card"] is None:
        lines.append(f"  {entry['gpu']} is not in fitplan's GPU catalog: the entry applies to plans on this probed "
                     f"card; --gpu names of other cards keep the shipped defaults.")
    else:
        lines.append(f"  Plans for {entry['gpu']} (probed, or --gpu \"{result['catalog_card']}\") now use it; "
                     f"other GPUs keep their calibration or the shipped defaults.")
    if result["dry_run"]:
        lines += ["", json.dumps({result["keys"][0]: entry}, indent=2)]
    return "\n".join(lines)


def show_text(info: dict) -> str:
    state = "" if info["profile_exists"] else " (none yet)"
    if info.get("profile_problem"):
        state = f" (ignored, plans use the defaults: {info['profile_problem']})"
    lines = [f"calibration profile: {info['profile']}{state}"]
    lines += _entry_lines(info["gpus"])
    lines.append(f"shipped calibration: {info['shipped']}")
    lines += _entry_lines(info["shipped_gpus"])
    lines.append(info["fallback"] + ".")
    return "\n".join(lines)


def _entry_lines(gpus: dict) -> list[str]:
    if not gpus:
        return ["  no entries"]
    out = []
    for key, entry in gpus.items():
        if entry.get("alias_of"):
            out.append(f"  {key}: same entry as {entry['alias_of']}")
            continue
        fraction = entry.get("reserve_fraction")
        context = entry.get("context_bytes")
        numbers = (f"context {gib(context)}, reserve {100 * fraction:+.2f} %"
                   if isinstance(context, (int, float)) and isinstance(fraction, (int, float))
                   and math.isfinite(fraction) else "malformed entry")
        out.append(f"  {key}: {numbers}; {entry.get('provenance', 'no provenance')}")
    return out
