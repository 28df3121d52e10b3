"""Predicted versus measured memory over the benchmark matrix (`fitplan bench`).

Each configuration of `benchmarks.matrix` is measured by `measure.harness.measure` (two real training
steps on fake tensors, exact live tensor bytes) in a worker process, and predicted by
`planner.memory.estimate`. Measurements are cached as JSON under `<out>/cache/<id>.json`, keyed by the
configuration, the model's catalog entry, the torch/transformers/peft/bitsandbytes versions and the harness
source, so a rerun measures only what changed; predictions are always recomputed (they are cheap).
Each measurement is written atomically as it completes: an interrupted run keeps what it finished.

Outputs in `<out>`: bench.csv (one row per configuration), REPORT.md and bench.png.
The parent process imports no torch: only the workers do.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import json
import multiprocessing
import re
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import wait
from pathlib import Path

from benchmarks.matrix import HALVES, BenchConfig, family
from common.files import write_figure, write_text
from common.units import GiB, gib

RESULTS = Path(__file__).resolve().parent / "results"
HARNESS_SOURCES = ("harness.py", "tracker.py", "fake4bit.py", "loss_kernels.py", "offload.py", "batching.py",
                   "liger_kernels.py", "flash.py")   # in measure/
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")
COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer_states", "master_weights",
              "activations", "logits", "temporary")
PHASES = ("forward", "backward", "optimizer_step")
STEPS = 2
UNDER_LIMIT = -2.0             # % error below which a prediction counts as under-predicted
TASKS_PER_WORKER = 25          # a fresh worker now and then keeps the memory of a long run bounded
WORKER_RSS_LIMIT = 6 * 2**30   # ... and so does retiring one that grew past this
DEFAULT_TIMEOUT_S = 900
CONFIG_FIELDS = [f.name for f in dataclasses.fields(BenchConfig)]


# -- cache ---------------------------------------------------------------------------------------------
def harness_version() -> str:
    digest = hashlib.sha1()
    for name in HARNESS_SOURCES:
        digest.update((Path(__file__).resolve().parent.parent / "measure" / name).read_bytes())
    return digest.hexdigest()[:12]


def versions() -> dict[str, str]:
    """Library versions (read from package metadata, without importing torch) and the harness version."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "missing"
    out["harness"] = harness_version()
    return out


def planner_version() -> str:
    """Hash of the planner and catalog sources the predictions came from."""
    root, digest = Path(__file__).resolve().parent.parent, hashlib.sha1()
    for path in sorted([*root.glob("planner/*.py"), *root.glob("profiles/*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    """HEAD, and whether the planner, catalog or harness sources differ from it."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              timeout=10, cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "planner", "profiles",
                                *(f"measure/{name}" for name in HARNESS_SOURCES)], cwd=root, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" with uncommitted planner/harness changes" if dirty.returncode else "")


def spec_fields(config: BenchConfig) -> dict:
    from profiles.models import from_name
    data = dataclasses.asdict(from_name(config.model))
    data.pop("source", None)   # a comment, not an input
    return data


def cache_key(config: BenchConfig, vers: dict[str, str], spec: dict | None = None) -> str:
    """What a measurement depends on: the config, the model's numbers, library and harness versions."""
    blob = {"config": config.to_dict(), "spec": spec if spec is not None else spec_fields(config),
            "versions": vers, "steps": STEPS, "device": "fake"}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def load_cached(cache_dir: Path, config: BenchConfig, key: str) -> dict | None:
    path = cache_dir / f"{config.id}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data["measurement"] if data.get("key") == key and data.get("measurement") else None


def save_cached(cache_dir: Path, config: BenchConfig, key: str, vers: dict, measurement: dict) -> None:
    data = {"key": key, "id": config.id, "config": config.to_dict(), "versions": vers,
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "measurement": measurement}
    write_text(cache_dir / f"{config.id}.json", json.dumps(data, indent=1), force=True)


# -- measuring (in worker processes) -------------------------------------------------------------------
def measure_config(config: dict) -> dict:
    """Measure one configuration (a `BenchConfig` as a dict); never raises."""
    try:
        from measure.harness import measure
        from profiles.models import from_name
        bench = BenchConfig(**config)
        m = measure(from_name(bench.model), bench.train_config(), steps=STEPS, device="fake")
        return {"measurement": m.to_dict(), "error": None}
    except Exception as err:   # recorded and counted, the run goes on
        return {"measurement": None, "error": f"{type(err).__name__}: {err}"[:500]}
    finally:
        gc.collect()


def _worker_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and ends us
    import resource

    import measure.harness  # noqa: F401  (loaded now, so the source hashed below is the code that runs)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()   # config warnings of shrunk or stand-in models would flood the progress bar
    harness = harness_version()   # the harness may be edited during a long run: key by what this worker loaded
    while True:
        task = conn.recv()
        if task is None:
            return
        result = measure_config(task)
        result["worker_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["harness"] = harness
        conn.send(result)


@dataclass
class _Worker:
    process: multiprocessing.Process
    conn: object
    tasks: int = 0
    key: str | None = None
    started: float = 0.0


class Workers:
    """`jobs` spawned worker processes, one config each at a time, with a per-config timeout; a worker
    that dies or times out is replaced and its config recorded as failed."""

    def __init__(self, jobs: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.jobs, self.timeout_s = max(1, jobs), timeout_s
        self.ctx = multiprocessing.get_context("spawn")
        self.idle: list[_Worker] = []
        self.busy: dict[object, _Worker] = {}

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(child,), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _retire(self, worker: _Worker, kill: bool = False) -> None:
        try:
            if not kill:
                worker.conn.send(None)
                worker.process.join(10)
        except (OSError, ValueError):
            pass
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def run(self, tasks: list[tuple[str, dict]]):
        """Yield (key, result) as each task completes."""
        pending = list(reversed(tasks))
        try:
            while pending or self.busy:
                while pending and len(self.busy) < self.jobs:
                    worker = self.idle.pop() if self.idle else self._start()
                    worker.key, payload = pending.pop()
                    worker.started = time.monotonic()
                    worker.conn.send(payload)
                    self.busy[worker.conn] = worker
                for conn in wait(list(self.busy), timeout=1.0):
                    yield self._collect(self.busy.pop(conn))
                yield from self._expire()
        finally:
            for worker in list(self.busy.values()) + self.idle:
                self._retire(worker, kill=True)
            self.busy.clear()
            self.idle.clear()

    def _collect(self, worker: _Worker):
        try:
            result = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(5)
            self._retire(worker, kill=True)
            code = worker.process.exitcode
            return worker.key, {"measurement": None, "error": f"worker process died (exit code {code}); "
                                                              "out of memory?"}
        worker.tasks += 1
        if worker.tasks >= TASKS_PER_WORKER or result.get("worker_rss", 0) > WORKER_RSS_LIMIT:
            self._retire(worker)
        else:
            self.idle.append(worker)
        return worker.key, result

    def _expire(self):
        now = time.monotonic()
        for conn, worker in list(self.busy.items()):
            if now - worker.started > self.timeout_s:
                del self.busy[conn]
                self._retire(worker, kill=True)
                yield worker.key, {"measurement": None, "error": f"timed out after {self.timeout_s:.0f} s"}


# -- predicting ----------------------------------------------------------------------------------------
def predict(config: BenchConfig) -> dict:
    """The planner's estimate: peak, phase, components at the peak and every phase's components."""
    from planner.memory import estimate
    from profiles.models import from_name
    e = estimate(from_name(config.model), config.train_config())
    phases = {p.value: dict(components) for p, components in e.phases.items()}
    return {"allocated_peak_bytes": e.allocated_peak_bytes, "peak_phase": e.peak_phase.value,
            "components": dict(e.components), "phases": phases,
            "params_total": e.counts.total, "params_trainable": e.counts.trainable}


# -- results -------------------------------------------------------------------------------------------
@dataclass
class Result:
    config: BenchConfig
    measurement: dict | None = None
    prediction: dict | None = None
    error: str | None = None            # measuring failed
    predict_error: str | None = None    # the planner raised
    cached: bool = False
    harness: str | None = None          # source version of the harness that measured it

    def row(self) -> dict:
        return make_row(self.config, self.measurement, self.prediction, self.error, self.predict_error,
                        self.cached, self.harness)


def make_row(config: BenchConfig, m: dict | None, p: dict | None, error: str | None = None,
             predict_error: str | None = None, cached: bool = False, harness: str | None = None) -> dict:
    """One CSV row: config fields, half, measured and predicted peaks, phases, components and error."""
    row = {"id": config.id, "half": config.half, "family": family(config), "axis": config.axis, **config.to_dict()}
    row["status"] = "failed" if error else ("predict_failed" if predict_error else "ok")
    row["error_message"] = error or predict_error or ""
    row["measured_peak_bytes"] = m["allocated_peak_bytes"] if m else None
    row["measured_phase"] = m["peak_phase"] if m else None
    row["predicted_peak_bytes"] = p["allocated_peak_bytes"] if p else None
    row["predicted_phase"] = p["peak_phase"] if p else None
    ok = m and p and m["allocated_peak_bytes"]
    row["error_pct"] = round(100 * (p["allocated_peak_bytes"] / m["allocated_peak_bytes"] - 1), 4) if ok else None
    for phase in PHASES:
        row[f"measured_{phase}_bytes"] = m["phase_peaks"].get(phase) if m else None
        row[f"predicted_{phase}_bytes"] = sum(p["phases"][phase].values()) if p else None
    matched = p["phases"].get(m["peak_phase"]) if (m and p) else None   # predicted, at the measured peak phase
    for comp in COMPONENTS:
        row[f"measured_{comp}"] = m["components"].get(comp, 0) if m else None
        row[f"predicted_{comp}"] = p["components"].get(comp, 0) if p else None
        row[f"predicted_mphase_{comp}"] = matched.get(comp, 0) if matched else None
    row["measured_params_trainable"] = m["params_trainable"] if m else None
    row["predicted_params_trainable"] = p["params_trainable"] if p else None
    row["params_total"] = m["params_total"] if m else (p["params_total"] if p else None)
    row["seconds"] = m["seconds"] if m else None
    row["cached"] = cached
    row["harness_version"] = harness
    return row


def csv_columns() -> list[str]:
    cols = ["id", "half", "family", "axis", *CONFIG_FIELDS, "status", "error_message", "measured_peak_bytes",
            "measured_phase", "predicted_peak_bytes", "predicted_phase", "error_pct"]
    cols += [f"{side}_{phase}_bytes" for phase in PHASES for side in ("measured", "predicted")]
    cols += [f"{kind}_{comp}" for comp in COMPONENTS for kind in ("measured", "predicted", "predicted_mphase")]
    return cols + ["measured_params_trainable", "predicted_params_trainable", "params_total", "seconds", "cached",
                  "harness_version"]


def write_csv(rows: list[dict], path: Path) -> None:
    import csv
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text(path, buf.getvalue(), force=True)


def read_csv(path: Path) -> list[dict]:
    """Rows of a bench.csv, with numbers and booleans typed again (for rewriting the report)."""
    import csv
    ints = {"micro_batch", "seq_len", "lora_r", "seconds"} | {c for c in csv_columns() if c.endswith("bytes")
                                                              or c.startswith(("measured_", "predicted_"))}
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for k, v in raw.items():
                if v == "":
                    row[k] = None
                elif v in ("True", "False"):
                    row[k] = v == "True"
                elif k == "error_pct" or k == "seconds":
                    row[k] = float(v)
                elif k in ints and re.fullmatch(r"-?\d+", v):
                    row[k] = int(v)
                else:
                    row[k] = v
            rows.append(row)
    return rows


# -- statistics ----------------------------------------------------------------------------------------
def measured(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("error_pct") is not None]


@dataclass
class Stats:
    n: int
    median_abs: float = 0.0
    mean: float = 0.0
    p90_abs: float = 0.0
    max_abs: float = 0.0
    under: int = 0
    over: int = 0
    within_1: int = 0
    phase_agrees: int = 0

    @classmethod
    def of(cls, rows: list[dict]) -> "Stats":
        rows = measured(rows)
        if not rows:
            return cls(0)
        errs = [r["error_pct"] for r in rows]
        absolute = sorted(abs(e) for e in errs)
        return cls(n=len(rows), median_abs=statistics.median(absolute), mean=statistics.fmean(errs),
                   p90_abs=absolute[min(len(absolute) - 1, int(0.9 * len(absolute)))], max_abs=absolute[-1],
                   under=sum(e < UNDER_LIMIT for e in errs), over=sum(e > -UNDER_LIMIT for e in errs),
                   within_1=sum(abs(e) <= 1 for e in errs),
                   phase_agrees=sum(r["measured_phase"] == r["predicted_phase"] for r in rows))


def _stats_text(s: Stats) -> str:
    return (f"median |error| {s.median_abs:.2f}%, max |error| {s.max_abs:.2f}%, "
            f"under-predicted by >2%: {s.under}")


def summary_line(rows: list[dict]) -> str:
    """`N configurations: median |error| X%, max |error| Y%, under-predicted by >2%: K (tune: ..., holdout: ...)`"""
    halves = "; ".join(f"{h}: {Stats.of([r for r in rows if r['half'] == h]).n} configurations, "
                       f"{_stats_text(Stats.of([r for r in rows if r['half'] == h]))}" for h in HALVES)
    total = Stats.of(rows)
    return f"{total.n} configurations: {_stats_text(total)} ({halves})"


# -- report --------------------------------------------------------------------------------------------
def gib_cell(n) -> str:
    """A size in GiB for the report's tables (the unit is in the header); empty when not measured."""
    return "" if n is None else gib(n, 3, unit=False)


def _table(header: list[str], lines: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    return "\n".join(out)


def _group_table(rows: list[dict], key: str, title: str) -> str:
    groups: dict[str, list[dict]] = {}
    for r in measured(rows):
        groups.setdefault(str(r[key]), []).append(r)
    lines = []
    for name, members in sorted(groups.items()):
        s = Stats.of(members)
        lines.append([name, s.n, f"{s.median_abs:.2f}", f"{s.mean:+.2f}", f"{s.max_abs:.2f}", s.under, s.over])
    return _table([title, "n", "median abs %", "mean %", "max abs %", "under >2%", "over >2%"], lines)


def component_errors(rows: list[dict]) -> dict[str, list[float]]:
    """Per component: (predicted - measured) at the measured peak phase, in % of the measured peak."""
    out: dict[str, list[float]] = {c: [] for c in COMPONENTS}
    for r in measured(rows):
        if r.get(f"predicted_mphase_{COMPONENTS[0]}") is None:
            continue
        for c in COMPONENTS:
            out[c].append(100 * (r[f"predicted_mphase_{c}"] - r[f"measured_{c}"]) / r["measured_peak_bytes"])
    return out


def _component_table(rows: list[dict]) -> str:
    lines = []
    for comp, errs in component_errors(rows).items():
        if not errs:
            continue
        absolute = sorted(abs(e) for e in errs)
        worst = max(range(len(errs)), key=lambda i: abs(errs[i]))
        lines.append([comp, f"{statistics.fmean(errs):+.2f}", f"{statistics.median(absolute):.2f}",
                      f"{errs[worst]:+.2f}", sum(abs(e) > 1 for e in errs)])
    return _table(["component", "mean %", "median abs %", "worst %", "configs off by >1% of peak"], lines)


def _stats_table(rows: list[dict]) -> str:
    lines = []
    for name, members in [*((h, [r for r in rows if r["half"] == h]) for h in HALVES), ("all", rows)]:
        s = Stats.of(members)
        failed = sum(r["status"] == "failed" for r in members)
        lines.append([name, s.n, failed, f"{s.median_abs:.2f}", f"{s.mean:+.2f}", f"{s.p90_abs:.2f}",
                      f"{s.max_abs:.2f}", s.under, s.over, s.within_1, f"{s.phase_agrees}/{s.n}"])
    return _table(["half", "measured", "failed", "median abs %", "mean %", "p90 abs %", "max abs %",
                   "under >2%", "over >2%", "within 1%", "peak phase agrees"], lines)


def label(r: dict) -> str:
    return BenchConfig(**{k: r[k] for k in CONFIG_FIELDS}).label()


def _worst_table(rows: list[dict], n: int = 10) -> str:
    worst = sorted(measured(rows), key=lambda r: -abs(r["error_pct"]))[:n]
    lines = [[r["id"], r["half"], label(r), gib_cell(r["measured_peak_bytes"]), gib_cell(r["predicted_peak_bytes"]),
              f"{r['error_pct']:+.2f}", r["measured_phase"], r["predicted_phase"]] for r in worst]
    return _table(["id", "half", "configuration", "measured GiB", "predicted GiB", "error %", "measured phase",
                   "predicted phase"], lines)


def _short(message: str, limit: int = 160) -> str:
    message = " ".join(message.replace("|", "/").split())
    return message if len(message) <= limit else message[:limit - 3] + "..."


def normalise_notes(notes: list[str]) -> list[str]:
    """Distinct notes, with per-model counts replaced by N so that one kind of note appears once."""
    seen: dict[str, None] = {}
    for note in notes:
        seen.setdefault(re.sub(r"\b\d+\b", "N", note))
    return list(seen)


BENCH_NOTES = [
    "Measured on fake tensors (`device=\"fake\"`): exact live tensor bytes of the second training step, what "
    "`torch.cuda.max_memory_allocated()` would report; no CUDA context, allocator reserve or library workspaces "
    "(those need a GPU, see docs/measurement.md). The comparison is on `allocated_peak_bytes` only.",
    "QLoRA double quantization: the NF4 stand-in (measure/fake4bit.py) holds the double-quantized constants at "
    "their real shapes and dtypes (uint8 absmax, fp32 absmax2 per 256 blocks, the 256-entry code2 and the offset), "
    "checked byte for byte against bitsandbytes in tests/test_harness.py; no analytic correction is applied, and the "
    "matrix measures QLoRA both with and without double quantization.",
    "error % = predicted / measured - 1; negative means the planner under-predicts (the dangerous side).",
    "Components: the planner's components are compared at the MEASURED peak phase (columns predicted_mphase_*), "
    "in % of the measured peak, so a phase mismatch does not show up as a component error.",
    "Phase peaks (measured_<phase>_bytes): the tracker records a phase's peak only when something is allocated in "
    "it, so an optimizer step that allocates nothing (in-place SGD, the 8-bit stand-in update) shows 0 there; the "
    "overall measured peak is not affected.",
    "Matrix exceptions (benchmarks/matrix.py): Gemma-2 runs eager attention in every cell (transformers refuses SDPA "
    "with soft-capping); GPT-2 has no QLoRA cells (its Conv1D projections are not replaced by the NF4 stand-in); "
    "the MoE models' bf16-mixed and QLoRA cells fail to measure (transformers 5 runs the experts with "
    "torch._grouped_mm, which takes bf16 only, and those cells hold fp32 experts), so they also run two bf16-true "
    "cells.",
    "Halves: each configuration's half is a seeded draw from its id (benchmarks/matrix.py, SEED), fixed before any "
    "calibration; tune the planner on 'tune' only and judge it on 'holdout'.",
]


def report_markdown(rows: list[dict], meta: dict, notes: list[str]) -> str:
    mixed = len(meta.get("harness_versions") or []) > 1
    parts = [
        *_report_header(rows, meta),
        "```",
        summary_line(rows),
        "```",
        "",
        *(["**The harness source changed during this run: the measurements mix harness versions "
           f"{', '.join(meta['harness_versions'])} (column harness_version). Rerun to remeasure the stale ones.**",
           ""] if mixed else []),
        "## Statistics by half",
        "",
        _stats_table(rows),
        "",
        "## Worst 10 configurations",
        "",
        _worst_table(rows),
        "",
        *[line for key in ("family", "method", "precision", "optimizer", "axis")
          for line in (f"## Error by {key}", "", _group_table(rows, key, key), "")],
        "## Error by component (predicted minus measured at the measured peak phase, % of the measured peak)",
        "",
        _component_table(rows),
        "",
    ]
    return "\n".join(parts + _report_tail(rows, notes))


def _report_header(rows: list[dict], meta: dict) -> list[str]:
    """The title and what was measured with what: date, versions, sources, counts and time."""
    vers = meta.get("versions", {})
    return [
        "# fitplan bench: predicted versus measured memory",
        "",
        f"- Date: {meta.get('date', '')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "harness")
        + f"; Python {meta.get('python', '')}",
        f"- Sources: git HEAD {meta.get('commit', '?')}, harness source "
        f"{', '.join(meta.get('harness_versions') or [vers.get('harness', '?')])}, planner and catalog source "
        f"{meta.get('planner', '?')} (predictions recomputed at report time)",
        f"- Configurations: {len(rows)} ({meta.get('selection', 'full matrix')}); measured {len(measured(rows))}, "
        f"failed to measure {sum(r['status'] == 'failed' for r in rows)}, from cache {sum(bool(r.get('cached')) for r in rows)}",
        f"- Measurement time: {meta.get('measure_seconds', 0) / 60:.1f} min of harness time, "
        f"{meta.get('wall_seconds', 0) / 60:.1f} min wall for this run",
        "",
    ]


def _report_tail(rows: list[dict], notes: list[str]) -> list[str]:
    """The failures, fitplan's notes, the harness's notes and the picture."""
    parts = []
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        parts += ["## Failures", "",
                  _table(["id", "configuration", "status", "message"],
                         [[r["id"], label(r), r["status"], _short(r["error_message"])] for r in failures]),
                  ""]
    parts += ["## Notes", ""] + [f"- {n}" for n in BENCH_NOTES]
    parts += ["", "Notes from the harness (stand-ins and conventions; N: a per-model count):", ""]
    parts += [f"- {n}" for n in normalise_notes(notes)]
    parts += ["", "![predicted vs measured](bench.png)", ""]
    return parts


def write_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = measured(rows)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    ax = axes[0]
    colors = {"full": "tab:red", "lora": "tab:blue", "qlora": "tab:green"}
    for method, color in colors.items():
        pts = [(r["measured_peak_bytes"] / GiB, r["predicted_peak_bytes"] / GiB) for r in ok if r["method"] == method]
        if pts:
            ax.scatter(*zip(*pts), s=14, alpha=0.7, color=color, label=method)
    if ok:
        values = [r[k] / GiB for r in ok for k in ("measured_peak_bytes", "predicted_peak_bytes")]
        lo, hi = min(values) / 1.5, max(values) * 1.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlabel="measured allocated peak (GiB)", ylabel="predicted (GiB)",
           title=f"{len(ok)} configurations")
    ax.legend()
    methods = [m for m in colors if any(r["method"] == m for r in ok)]
    _boxes(axes[1], [[r["error_pct"] for r in ok if r["method"] == m] for m in methods], methods,
           "peak error % (pred/meas - 1) by method")
    comps = {c: e for c, e in component_errors(rows).items() if e and any(e)}
    _boxes(axes[2], list(comps.values()), list(comps), "component error, % of measured peak\n(at the measured phase)")
    axes[2].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    write_figure(path, fig)


def _boxes(ax, data: list[list[float]], names: list[str], title: str) -> None:
    if data:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(UNDER_LIMIT, color="tab:red", lw=0.8, ls=":")
    ax.set_title(title)
    ax.set_ylabel("%")


def write_outputs(rows: list[dict], out: Path, meta: dict, notes: list[str]) -> None:
    write_csv(rows, out / "bench.csv")
    write_text(out / "REPORT.md", report_markdown(rows, meta, notes), force=True)
    write_plot(rows, out / "bench.png")


# -- the run -------------------------------------------------------------------------------------------
@dataclass
class Run:
    results: list[Result]
    meta: dict
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        return [r.row() for r in self.results]


def run(configs: list[BenchConfig], out: Path = RESULTS, jobs: int = 1, use_cache: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S, selection: str = "full matrix", progress: bool = True) -> Run:
    """Measure (or load) and predict every config, then write bench.csv, REPORT.md and bench.png to `out`."""
    start, vers, cache_dir = time.monotonic(), versions(), out / "cache"
    results = {c.id: Result(c) for c in configs}
    todo = _load_cache(results, cache_dir, vers) if use_cache else list(configs)
    bar = _progress(len(configs), len(configs) - len(todo), progress)
    interrupted = _measure_into(results, todo, cache_dir, vers, Workers(jobs, timeout_s), bar)
    done = [r for r in results.values() if r.measurement or r.error]
    for result in done:
        _predict_into(result)
    meta = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "versions": vers,
            "harness_versions": sorted({r.harness for r in done if r.measurement and r.harness}),
            "planner": planner_version(), "commit": git_commit(),
            "python": sys.version.split()[0], "selection": selection + (" (interrupted)" if interrupted else ""),
            "wall_seconds": time.monotonic() - start,
            "measure_seconds": sum(r.measurement["seconds"] for r in done if r.measurement)}
    notes = [n for r in done if r.measurement for n in r.measurement.get("notes", [])]
    bench = Run(done, meta, interrupted, notes)
    if done:
        write_outputs(bench.rows, out, meta, notes)
    return bench


def _load_cache(results: dict[str, Result], cache_dir: Path, vers: dict) -> list[BenchConfig]:
    """Fill the results the cache holds (measured by these versions); the configs left to measure."""
    todo = []
    for result in results.values():
        cached = load_cached(cache_dir, result.config, cache_key(result.config, vers))
        if cached:
            result.measurement, result.cached, result.harness = cached, True, vers["harness"]
        else:
            todo.append(result.config)
    return todo


def _measure_into(results: dict[str, Result], todo: list[BenchConfig], cache_dir: Path, vers: dict,
                  workers: Workers, bar) -> bool:
    """Measure `todo` in the workers, caching each measurement; whether Ctrl-C cut the run short."""
    interrupted, outcomes = False, workers.run([(c.id, c.to_dict()) for c in todo])
    try:
        for cid, outcome in outcomes:
            result = results[cid]
            result.measurement, result.error = outcome["measurement"], outcome["error"]
            result.harness = outcome.get("harness", vers["harness"])
            if result.measurement:
                measured_with = {**vers, "harness": result.harness}
                save_cached(cache_dir, result.config, cache_key(result.config, measured_with), measured_with,
                            result.measurement)
            bar.set_postfix_str(("FAILED " if result.error else "") + result.config.label()[:60], refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        outcomes.close()   # ends the workers now, also on Ctrl-C
        bar.close()
    return interrupted


def speed_section(out: Path = RESULTS) -> list[str]:
    """The speed report (benchmarks/speed.py) next to the memory one: SPEED.md, speed.csv, speed.png; its
    summary lines, one per half and one for the independent check."""
    from benchmarks import speed
    return speed.report(speed.all_rows(), out)


def repredicted_line(out: Path = RESULTS) -> str:
    """The summary line of the measurements in `out`/bench.csv, predicted again by the planner as it is now
    (seconds; measures nothing, writes nothing)."""
    from benchmarks.matrix import matrix
    configs = {c.id: c for c in matrix()}
    rows = []
    for row in read_csv(out / "bench.csv"):
        config = configs.get(row["id"])
        if config is not None and row["status"] == "ok":
            predicted = predict(config)["allocated_peak_bytes"]
            row = {**row, "predicted_peak_bytes": predicted,
                   "error_pct": round(100 * (predicted / row["measured_peak_bytes"] - 1), 4)}
        rows.append(row)
    return summary_line(rows)


def sharded_section(out: Path = RESULTS) -> list[str]:
    """The sharded-memory report (benchmarks/sharded.py): the committed per-rank measurements of real DDP, ZeRO
    and FSDP runs against the planner, into SHARDED.md, sharded.csv, sharded.png; its summary line."""
    from benchmarks import sharded
    records = json.loads(sharded.OUT.read_text(encoding="utf-8"))["records"]
    return sharded.report(records, out)


def _predict_into(result: Result) -> None:
    try:
        result.prediction = predict(result.config)
    except Exception as err:   # the planner's failure is a finding, not a crash of the report
        result.predict_error = f"{type(err).__name__}: {err}"[:500]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, file=sys.stderr, unit="config", disable=not enabled,
                dynamic_ncols=True, desc="bench")
