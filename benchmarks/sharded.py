"""The sharded-memory matrix: each rank's live bytes per phase of real DDP / ZeRO-1/2/3 / FSDP1 / FSDP2 training
steps, on CPU ranks (gloo), launched from the configs fitplan emits (launch/sharded_memory.py).

Three families shrunk to a few layers and a few thousand tokens, full / LoRA / QLoRA, bf16-true (and bf16-mixed
for Llama), 2 and 4 processes, with fitplan's engine settings shrunk as the model is (scaled_engine). Cells fitplan
refuses are recorded as skipped, with its reason; `EXPERIMENTS` runs some of them anyway with the rule lifted,
to say whether the libraries could. Writes benchmarks/results/sharded/measured.json after every cell.

Usage: python -m benchmarks.sharded [--only TEXT] [--resume] [--out FILE]
       python -m benchmarks.sharded --summary      (the results as a markdown table)
       python -m benchmarks.sharded --compare      (the planner's estimates beside them)
       python -m benchmarks.sharded --report       (SHARDED.md, sharded.csv, sharded.png: measured against
                                                    predicted per rank; also a section of `fitplan bench`)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import hashlib
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from common.errors import UnsupportedError
from common.files import write_figure, write_files
from launch import emit, sharded_memory
from planner.config import TrainConfig
from planner.rules import layout_problem
from profiles.models import from_name

OUT = Path(__file__).resolve().parent / "results" / "sharded" / "measured.json"
WORKDIR = Path(__file__).resolve().parent / "results" / "cache" / "sharded"   # git-ignored: models, run folders
ENGINES = ("ddp", "zero1", "zero2", "zero3", "fsdp1", "fsdp")
PROCESSES = (2, 4)
KEEP_LARGEST = 8   # storages listed per rank in the results (the run folders keep all)
FAMILIES = {
    # catalog model: (shrunk ModelSpec fields, TrainConfig settings of its cells)
    "meta-llama/Llama-3.1-8B": (dict(n_layer=4, hidden=256, intermediate=768, n_head=4, n_kv_head=2, head_dim=64,
                                     vocab=2048),
                                dict(micro_batch=2, seq_len=64)),
    "Qwen/Qwen3-8B": (dict(n_layer=2, hidden=512, intermediate=1536, n_head=8, n_kv_head=2, head_dim=64, vocab=4096),
                      dict(micro_batch=1, seq_len=128, grad_ckpt=True)),
    "google/gemma-2-2b": (dict(n_layer=4, hidden=256, intermediate=1024, n_head=4, n_kv_head=2, head_dim=64,
                               vocab=2048),
                          dict(micro_batch=1, seq_len=128, attn="eager")),   # Gemma-2's soft-capping: eager
}


@dataclass(frozen=True)
class Cell:
    """One measured configuration: a shrunk catalog model, a TrainConfig, a number of CPU ranks."""

    model: str
    processes: int
    settings: dict = field(default_factory=dict)   # TrainConfig fields beyond the family's
    experiment: bool = False                        # fitplan refuses it: run with its layout rule lifted

    @property
    def overrides(self) -> dict:
        return FAMILIES[self.model][0]

    def config(self) -> TrainConfig:
        tiny = from_name(self.model, **self.overrides)
        engine = sharded_memory.scaled_engine(from_name(self.model), tiny)
        return TrainConfig(**{**FAMILIES[self.model][1], **self.settings}, engine=engine, gpus=self.processes)

    @property
    def id(self) -> str:
        blob = json.dumps([self.model, self.processes, self.settings, self.experiment], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        s = self.settings
        extra = "".join(f" {k}={v}" for k, v in s.items() if k not in ("sharding", "method", "precision"))
        return (f"{self.model.split('/')[-1]} {s['sharding']} {s['method']} {s['precision']} x{self.processes}"
                f"{extra}{' (experiment)' if self.experiment else ''}")


def cells() -> list[Cell]:
    out = []
    for model in FAMILIES:
        precisions = ("bf16-true", "bf16-mixed") if model.startswith("meta-llama") else ("bf16-true",)
        for processes in PROCESSES:
            for precision in precisions:
                for sharding in ENGINES:
                    for method in ("full", "lora", "qlora"):
                        out.append(Cell(model, processes, dict(sharding=sharding, method=method, precision=precision)))
    llama = "meta-llama/Llama-3.1-8B"
    for sharding in ("zero1", "zero2"):   # accumulation: ZeRO-1 keeps whole gradients until the boundary
        out.append(Cell(llama, 2, dict(sharding=sharding, method="full", precision="bf16-true", grad_accum=2)))
    return out + EXPERIMENTS


EXPERIMENTS = [Cell("meta-llama/Llama-3.1-8B", 2, dict(sharding=s, method="qlora", precision="bf16-true"), True)
               for s in ("fsdp", "fsdp1", "zero3")]


@contextlib.contextmanager
def rules_lifted(experiment: bool):
    """Let fitplan write a run folder its layout rules refuse (planner/rules.py), for an experiment."""
    if not experiment:
        yield
        return
    with mock.patch.object(emit, "layout_problem", lambda cfg: None):
        yield


def measure(cell: Cell) -> dict:
    """The record of one cell: measured, skipped (fitplan refuses it) or failed (the run raised)."""
    cfg = cell.config()
    record = {"id": cell.id, "name": cell.name, "model": cell.model, "overrides": cell.overrides,
              "processes": cell.processes, "experiment": cell.experiment, "config": cfg.to_dict()}
    refused = layout_problem(cfg) and UnsupportedError(layout_problem(cfg)).render()   # options as --flags
    if refused and not cell.experiment:
        return {**record, "status": "skipped", "reason": f"fitplan refuses it: {refused}"}
    tiny = from_name(cell.model, **cell.overrides)
    try:
        with rules_lifted(cell.experiment):
            result = sharded_memory.measure_sharded(tiny, cfg, cell.processes, workdir=WORKDIR)
    except sharded_memory.ShardedRunError as err:
        return {**record, "status": "failed", "reason": last_error_line(str(err)), "output_tail": str(err)[-3000:]}
    ranks = [{**r, "largest_at_peak": r["largest_at_peak"][:KEEP_LARGEST]} for r in result.ranks]
    return {**record, "status": "measured", "ranks": ranks, "losses": result.losses, "seconds": result.seconds,
            **({"reason": f"fitplan refuses it ({refused}); measured with the rule lifted"} if refused else {})}


def last_error_line(output: str) -> str:
    """The most telling line of a failed run's output: its last exception message."""
    lines = [line.removeprefix("[rank0]: ").removeprefix("[rank1]: ") for line in output.splitlines()]
    errors = [line for line in lines if "Error:" in line and "ChildFailedError" not in line]
    return errors[-1].strip() if errors else output.strip().splitlines()[0]


def versions() -> dict:
    from importlib.metadata import version
    return {lib: version(lib) for lib in ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes")}


def write(out: Path, records: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
            "notes": list(sharded_memory.NOTES), "records": records}
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


SUMMARY_COLUMNS = ("weights", "adapters", "gradients", "optimizer_states", "master_weights", "gathered_weights",
                   "comm_buffers", "weight_copies", "activations", "logits")


def summary(records: list[dict]) -> str:
    """A markdown table: rank 0's step-2 peak, its phase, and its components then (KiB), per record."""
    kib = lambda n: f"{n / 1024:,.0f}"  # noqa: E731
    head = ["cell", "peak KiB", "phase", "load KiB", *SUMMARY_COLUMNS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if r["status"] != "measured":
            rows.append(f"| {r['name']} | {r['status']}: {r['reason']} |")
            continue
        rank = r["ranks"][0]
        cells_ = [r["name"], kib(rank["peak_bytes"]), rank["peak_phase"], kib(rank["load"]["peak_bytes"]),
                  *(kib(rank["components"][c]) for c in SUMMARY_COLUMNS)]
        rows.append("| " + " | ".join(cells_) + " |")
    return "\n".join(rows)


STATES = ("weights", "quant_constants", "adapters", "gradients", "optimizer_states", "master_weights")


def compare(records: list[dict]) -> str:
    """A markdown table of the planner's per-GPU estimate next to the measured ranks (the largest), in KiB: the
    step peak, and the model states (weights, adapters, gradients, optimizer states, masters) in the optimizer
    step, where all of them are alive."""
    from planner.memory import estimate
    kib = lambda n: f"{n / 1024:,.0f}"  # noqa: E731
    head = ["cell", "measured peak", "planner peak", "measured states", "planner states", "measured comm+gathered"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in (r for r in records if r["status"] == "measured"):
        planned = estimate(from_name(r["model"], **r["overrides"]), TrainConfig.from_dict(r["config"]))
        at_step = [rank["phase_components"]["optimizer_step"] for rank in r["ranks"]]
        measured_states = max(sum(c[k] for k in STATES) for c in at_step)
        engine = max(rank["components"]["comm_buffers"] + rank["components"]["gathered_weights"] for rank in r["ranks"])
        rows.append("| " + " | ".join([r["name"], kib(max(rank["peak_bytes"] for rank in r["ranks"])),
                                      kib(planned.allocated_peak_bytes), kib(measured_states),
                                      kib(sum(planned.states.as_components().values())), kib(engine)]) + " |")
    return "\n".join(rows)


# -- the report: measured against predicted, per rank -------------------------------------------------
WITHIN, UNDER = 3.0, 2.0   # the targets (%): every rank within 3%, none under-predicted by more than 2%
CSV_COLUMNS = ("id", "cell", "model", "engine", "method", "precision", "processes", "grad_accum", "rank",
               "measured_peak_bytes", "predicted_peak_bytes", "error_pct", "measured_phase", "predicted_phase")


def rank_rows(records: list[dict]) -> list[dict]:
    """One row per rank of every measured cell: its peak against the planner's allocated peak."""
    from planner.memory import estimate
    rows = []
    for r in (r for r in records if r["status"] == "measured"):
        cfg = TrainConfig.from_dict(r["config"])
        planned = estimate(from_name(r["model"], **r["overrides"]), cfg)
        for rank in r["ranks"]:
            rows.append({"id": r["id"], "cell": r["name"], "model": r["model"], "engine": cfg.sharding.value,
                         "method": cfg.method.value, "precision": cfg.precision.value, "processes": r["processes"],
                         "grad_accum": cfg.grad_accum, "rank": rank["rank"], "measured_peak_bytes": rank["peak_bytes"],
                         "predicted_peak_bytes": planned.allocated_peak_bytes,
                         "error_pct": round(100 * (planned.allocated_peak_bytes / rank["peak_bytes"] - 1), 2),
                         "measured_phase": rank["peak_phase"], "predicted_phase": planned.peak_phase.value})
    return rows


def summary_line(rows: list[dict]) -> str:
    errors = [r["error_pct"] for r in rows]
    if not errors:
        return "sharded: no measured cell"
    cells_ = len({r["id"] for r in rows})
    under = sum(e < -UNDER for e in errors)
    within = sum(abs(e) <= WITHIN for e in errors)
    return (f"sharded: {cells_} cells, {len(errors)} ranks: median |error| {statistics.median(map(abs, errors)):.2f}%, "
            f"max |error| {max(map(abs, errors)):.2f}%, within {WITHIN:.0f}%: {within}/{len(errors)}, "
            f"under-predicted by >{UNDER:.0f}%: {under}")


def report(records: list[dict], out: Path) -> list[str]:
    """Write SHARDED.md, sharded.csv and sharded.png to `out`; return the summary lines."""
    rows = rank_rows(records)
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_files({out / "sharded.csv": table.getvalue(), out / "SHARDED.md": markdown(rows, records)}, force=True)
    write_plot(rows, out / "sharded.png")
    return [summary_line(rows)]


def _group_stats(rows: list[dict]) -> list[str]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r["method"], r["processes"]), []).append(r["error_pct"])
    out = ["| engine | method | processes | ranks | median error | min | max |", "|---|---|---:|---:|---:|---:|---:|"]
    order = lambda kv: (ENGINES.index(kv[0][0]), kv[0][1:])  # noqa: E731 - engines in the matrix's order
    for (engine, method, processes), errors in sorted(groups.items(), key=order):
        out.append(f"| {engine} | {method} | {processes} | {len(errors)} | {statistics.median(errors):+.2f}% | "
                   f"{min(errors):+.2f}% | {max(errors):+.2f}% |")
    return out


def markdown(rows: list[dict], records: list[dict]) -> str:
    worst = sorted(rows, key=lambda r: -abs(r["error_pct"]))[:10]
    kib = lambda n: f"{n / 1024:,.0f}"  # noqa: E731
    lines = ["# fitplan bench: sharded memory per rank, predicted versus measured", "",
             "Real training steps of DDP, DeepSpeed ZeRO-1/2/3, FSDP1 and FSDP2 on CPU ranks (gloo), launched from "
             "the configs fitplan emits, with each rank's live bytes tracked (benchmarks/sharded.py, "
             "launch/sharded_memory.py); each rank's step-2 peak against the planner's allocated peak "
             "(`planner.memory.estimate`). CUDA-only memory (NCCL's buffers, the context, the allocator's cache) "
             "is outside both and planned separately (docs/sharded-memory.md).", "",
             "```", summary_line(rows), "```", "",
             "## By engine, method and processes", "", *_group_stats(rows), "",
             "## Largest errors", "",
             "| cell | rank | measured KiB | predicted KiB | error |", "|---|---:|---:|---:|---:|",
             *(f"| {r['cell']} | {r['rank']} | {kib(r['measured_peak_bytes'])} | {kib(r['predicted_peak_bytes'])} | "
               f"{r['error_pct']:+.2f}% |" for r in worst), "",
             "## Not measured", "", *(f"- {r['name']}: {r['status']}: {r['reason']}" for r in records
                                      if r["status"] != "measured"), "",
             "![predicted vs measured per rank](sharded.png)", ""]
    return "\n".join(lines)


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 5))
    names = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
    for offset, method in zip((-0.2, 0, 0.2), ("full", "lora", "qlora")):
        pts = [(names.index(r["engine"]) + offset, r["error_pct"]) for r in rows if r["method"] == method]
        if pts:
            ax.scatter(*zip(*pts), s=16, alpha=0.7, label=method)
    ax.set_xticks(range(len(names)), names)
    for y, style in ((0, "-"), (WITHIN, ":"), (-UNDER, ":")):
        ax.axhline(y, color="k" if y == 0 else "tab:red", lw=0.8, ls=style)
    ax.set(ylabel="error % per rank (predicted / measured - 1)", title=summary_line(rows))
    ax.legend()
    fig.tight_layout()
    write_figure(path, fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharded", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="measure only cells whose name contains this text")
    parser.add_argument("--resume", action="store_true", help="keep the records already in --out and skip their cells")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--summary", action="store_true", help="print --out as a markdown table and stop")
    parser.add_argument("--compare", action="store_true", help="print the planner's estimates beside --out and stop")
    parser.add_argument("--report", action="store_true",
                        help="write SHARDED.md, sharded.csv and sharded.png next to --out from its records and stop")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report:
        print("\n".join(report(json.loads(out.read_text())["records"], out.parent.parent)))
        return
    if args.summary or args.compare:
        print((summary if args.summary else compare)(json.loads(out.read_text())["records"]))
        return
    done = {r["id"]: r for r in json.loads(out.read_text())["records"]} if args.resume and out.exists() else {}
    todo = [c for c in cells() if not args.only or args.only in c.name]
    records = list(done.values())
    for i, cell in enumerate(c for c in todo if c.id not in done):
        start = time.perf_counter()
        records.append(measure(cell))
        write(out, records)
        print(f"[{i + 1}/{len(todo) - len(done)}] {cell.name}: {records[-1]['status']} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
