"""`fitplan bench`: predicted-versus-measured memory over the benchmark matrix (CSV, Markdown, plot)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.options import PathText
from common.errors import InputError


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command("bench")
@click.option("--family", "families", multiple=True, metavar="NAME",
              help="Only these model families (repeat or comma list): llama-3, qwen2.5, mixtral, ...")
@click.option("--method", "methods", multiple=True, type=click.Choice(["full", "lora", "qlora"]),
              help="Only these methods (repeatable).")
@click.option("--ids", "ids", multiple=True, metavar="IDS", help="Only these config ids or id prefixes (comma list).")
@click.option("--half", type=click.Choice(["tune", "holdout"]), default=None, help="Only one half of the matrix.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many configurations.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes measuring at once.")
@click.option("--no-cache", is_flag=True, help="Measure again even where a cached measurement matches.")
@click.option("--out", "out", type=PathText(file_okay=False, path_type=Path), default=None,
              help="Results folder (bench.csv, REPORT.md, bench.png, cache/). [default: benchmarks/results]")
@click.option("--timeout", "timeout_s", type=click.IntRange(min=1), default=900, show_default=True,
              help="Seconds one configuration may take before it is recorded as failed.")
@click.option("--list", "list_only", is_flag=True, help="Print the selected configurations and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one row per configuration as JSON, not the summary.")
@click.option("--speed-only", is_flag=True,
              help="Only the speed section: published throughput against the speed model (seconds, no harness).")
@click.option("--repredict", is_flag=True,
              help="Only predict the measurements in bench.csv again with the planner as it is now and print their "
                   "summary line (seconds; measures and writes nothing).")
@click.option("--sharded-only", is_flag=True,
              help="Only the sharded section: the committed per-rank measurements of DDP, ZeRO and FSDP runs "
                   "against the planner (seconds; `python -m benchmarks.sharded` measures them again, ~60 min).")
def command(families, methods, ids, half, limit, jobs, no_cache, out, timeout_s, list_only, as_json,
            speed_only, repredict, sharded_only) -> None:
    """Measure each configuration of the benchmark matrix with the harness (fake tensors, exact live bytes),
    predict it with the planner and report the error; then the speed section (published training throughput
    against the speed model, per half of the table and for the independent fine-tuning check) and the sharded
    section (each rank of real multi-process DDP, ZeRO and FSDP runs against the planner).

    A rerun measures only what changed (cache keyed by config, model, library versions and harness source).
    A filtered run writes its own bench.csv / REPORT.md / bench.png: use --out for a scratch folder.
    The exit status is 0 however large the errors: this is a report.

    \b
    Examples:
      fitplan bench                                  # the full matrix, ~45-60 min on 2 cores
      fitplan bench --family llama-3 --method lora --out /tmp/bench
      fitplan bench --half holdout --jobs 2
    """
    from benchmarks import bench
    from benchmarks.matrix import matrix, select

    if repredict:
        line = bench.repredicted_line(out or bench.RESULTS)
        click.echo(json.dumps({"summary": line}) if as_json else line)
        return
    if speed_only or sharded_only:
        section, name = (bench.speed_section, "speed") if speed_only else (bench.sharded_section, "sharded")
        lines = section(out or bench.RESULTS)
        click.echo(json.dumps({name: lines}) if as_json else "\n".join(lines))
        return
    chosen = select(matrix(), families=_split(families), methods=methods, ids=_split(ids), half=half, limit=limit)
    if not chosen:
        raise InputError("no configuration of the benchmark matrix matches these filters "
                        "(see `fitplan bench --list` for families and ids)")
    if list_only:
        for c in chosen:
            click.echo(f"{c.id}  {c.half:8s} {c.label()}")
        return
    filters = [f"{name}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
               for name, v in (("family", _split(families)), ("method", methods), ("ids", _split(ids)),
                               ("half", half), ("limit", limit)) if v]
    result = bench.run(chosen, out=out or bench.RESULTS, jobs=jobs, use_cache=not no_cache, timeout_s=timeout_s,
                       selection="filtered: " + " ".join(filters) if filters else "full matrix")
    speed = bench.speed_section(out or bench.RESULTS)
    sharded = bench.sharded_section(out or bench.RESULTS)
    click.echo(json.dumps({"summary": bench.summary_line(result.rows), "rows": result.rows, "speed": speed,
                           "sharded": sharded}, default=str) if as_json
               else _summary(result, speed + sharded, out or bench.RESULTS))
    if result.interrupted:
        raise KeyboardInterrupt


def _summary(result, speed: list[str], out: Path) -> str:
    """The run in a few lines: the memory summary, failures, a changed harness, the speed and sharded lines, the
    files."""
    from benchmarks.bench import summary_line

    rows = result.rows
    lines = [summary_line(rows)]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines.append(f"{len(failed)} configurations failed to measure or predict (see REPORT.md)")
    if len(result.meta["harness_versions"]) > 1:
        lines.append("warning: the harness source changed during the run; rerun to remeasure the stale results")
    lines.append("\n".join(speed))
    lines.append(f"wrote {out / 'bench.csv'}, REPORT.md and bench.png (speed: SPEED.md, speed.png; sharded: "
                 "SHARDED.md, sharded.png)")
    return "\n".join(lines)
