"""Learn the GPU constants a CPU cannot measure from real runs: `fitplan calibrate RUN_REPORTS...`.

Input: the run_report.json files `fitplan launch` writes (launch/recipe.py, `write_report`). Each holds, per
rank, what torch and NVML saw on a real GPU over the first training steps:

    status                      "ok" (or "interrupted" after a measurement); "oom" / "failed" are refused
    date                        ISO 8601, when the report was written
    versions                    {"torch": ..., "transformers": ..., "peft": ..., "bitsandbytes": ..., ...}
    measured.device             "cuda" (CPU runs cannot calibrate a GPU)
    measured.after_steps        >= 1: the peaks cover at least one training step
    measured.per_rank[i]        {"device": "cuda", "gpu": torch.cuda.get_device_name(),
                                 "allocated_peak_bytes": max_memory_allocated, "reserved_peak_bytes":
                                 max_memory_reserved, "nvml_used_bytes": NVML used memory of the card}
                                (a report without per_rank is read from `measured` itself, which then needs "gpu")
    driver_version              optional (the recipe does not record it yet; provenance then says so)

`fitplan bench` measures on fake tensors only (its cache JSON has no GPU readings), so run reports are the
one input format. Paged-optimizer residency is not in run reports, so it is not calibrated.

Per GPU model, from every rank of every report:
    context_bytes    = median(nvml_used_bytes - reserved_peak_bytes)   CUDA context, cuBLAS, driver (of the
                       one-process runs when there are any)
    reserve_fraction = median(reserved_peak_bytes / allocated_peak_bytes - 1)   caching-allocator slack
    communicator_bytes = the multi-process runs' median of the first, less context_bytes: NCCL's buffers
                       (only when both one-process and multi-process runs are given)
These are what `planner.calibration.Overhead` adds to an allocated peak. The user profile
(`planner.calibration.user_profile_path()`, FITPLAN_CALIBRATION overrides) gets {"version": 1, "gpus":
{gpu_key: entry}}, written atomically and merged with the entries of other GPUs. When fitplan's GPU catalog
knows the card under another name ("NVIDIA GeForce RTX 4090" is catalog "RTX 4090"), the entry is also
stored under that name's key, so `--gpu "RTX 4090"` plans use it too.

Pure logic here (no click, no torch); the command and its sentences are in cli/commands/calibrate.py.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from planner.calibration import SHIPPED, gpu_key, load_profile, user_profile_path
from common.errors import InputError
from common.files import parse_json, read_text, write_text

PROFILE_VERSION = 1
REPORT_NAME = "run_report.json"
GOOD_STATUSES = ("ok", "interrupted")
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")
FRACTION_DIGITS = 6
MAX_BYTES = 2**44    # 16 TiB: no GPU holds more; a larger byte count is a corrupt report
MAX_RANK = 1_000_000


@dataclass(frozen=True)
class Sample:
    """One rank of one run on a real GPU."""

    path: str
    rank: int
    gpu: str
    allocated: int
    reserved: int
    nvml_used: int
    processes: int = 1   # of the run: with more than one, NVML's used memory holds NCCL's buffers too

    @property
    def context(self) -> int:
        return self.nvml_used - self.reserved

    @property
    def reserve_fraction(self) -> float:
        return self.reserved / self.allocated - 1


@dataclass
class Run:
    """One validated run report."""

    path: str
    gpu: str
    date: dt.datetime
    versions: dict
    driver: str | None
    samples: list[Sample] = field(default_factory=list)


# -- reading and validating ------------------------------------------------------------------------------
def report_paths(args: list[str]) -> list[Path]:
    """The report files: each argument a run_report.json, or a run folder holding one."""
    out = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            path = path / REPORT_NAME
        if not path.is_file():
            raise InputError(f"{arg} is neither a run report file nor a run folder with a {REPORT_NAME}; "
                            f"give the run_report.json files that `fitplan launch` wrote.")
        out.append(path)
    return out


def read_runs(paths: list[Path]) -> list[Run]:
    """Every report validated; the first problem raises a InputError naming the file (nothing is kept)."""
    runs, seen = [], {}
    for path in paths:
        text = read_text(path, "run report")
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            raise InputError(f"{seen[digest]} and {path} are the same run report; give each run once.")
        seen[digest] = path
        runs.append(parse_run(parse_json(text, f"The run report {path}"), str(path)))
    check_one_gpu(runs)
    return runs


def parse_run(data, path: str) -> Run:
    """One run report, validated (see the module docstring for the fields)."""
    if not isinstance(data, dict) or not isinstance(data.get("measured"), dict):
        raise InputError(f"{path} is not a fitplan run report (it has no \"measured\" object); give the "
                        f"run_report.json that `fitplan launch` wrote.")
    status = data.get("status")
    if status not in GOOD_STATUSES:
        raise InputError(f"{path} is from a run that ended with status {status!r}, whose peaks are not those of "
                        f"completed training steps; calibrate only from runs with status \"ok\".")
    measured = data["measured"]
    if measured.get("device") != "cuda":
        raise InputError(f"{path} was measured on {measured.get('device')!r}, not on a CUDA GPU; only runs on a "
                        f"real GPU can calibrate its memory constants.")
    steps = measured.get("after_steps")
    if not _positive_int(steps):
        raise InputError(f"{path} has no training step measured (measured.after_steps is {steps!r}); calibrate "
                        f"from runs that completed their first steps.")
    versions = data.get("versions")
    if not isinstance(versions, dict) or not isinstance(versions.get("torch"), str) or not versions["torch"]:
        raise InputError(f"{path} does not record the torch version (versions.torch); a calibration is only "
                        f"meaningful with its library versions.")
    date = _date(data.get("date"), path)
    ranks = measured.get("per_rank")
    if ranks is None:
        ranks, where = [measured], "measured"
    elif not isinstance(ranks, list) or not ranks:
        raise InputError(f"{path} has an empty or malformed measured.per_rank; the report is incomplete.")
    else:
        where = "measured.per_rank"
    processes = max(len(ranks), _processes(data.get("config")))
    samples = [replace(_sample(rank, path, f"{where}[{i}]" if where != "measured" else where, i), processes=processes)
               for i, rank in enumerate(ranks)]
    gpus = sorted({s.gpu for s in samples})
    if len(gpus) > 1:
        raise InputError(f"{path} has ranks on different GPUs ({', '.join(gpus)}); calibrate from runs on one "
                        f"GPU model.")
    driver = data.get("driver_version") or measured.get("driver_version")
    return Run(path=path, gpu=gpus[0], date=date, versions=versions,
               driver=str(driver) if driver else None, samples=samples)


def _sample(rank, path: str, where: str, index: int) -> Sample:
    if not isinstance(rank, dict):
        raise InputError(f"{path}: {where} is not an object; the report is malformed.")
    if rank.get("device", "cuda") != "cuda":
        raise InputError(f"{path}: {where} was measured on {rank.get('device')!r}, not on a CUDA GPU; only runs "
                        f"on a real GPU can calibrate it.")
    gpu = rank.get("gpu")
    if not isinstance(gpu, str) or not gpu.strip():
        raise InputError(f"{path}: {where} does not name its GPU (\"gpu\"); the report is incomplete.")
    values = {}
    for key in ("allocated_peak_bytes", "reserved_peak_bytes", "nvml_used_bytes"):
        value = rank.get(key)
        if not _positive_int(value):
            hint = (" (NVML did not answer on the run's machine: install nvidia-ml-py there)"
                    if key == "nvml_used_bytes" and value is None else "")
            raise InputError(f"{path}: {where}.{key} is {repr(value)[:40]}, not a number of bytes a GPU can hold{hint}; "
                            f"the report cannot calibrate.")
        values[key] = value
    allocated, reserved, used = (values[k] for k in ("allocated_peak_bytes", "reserved_peak_bytes",
                                                     "nvml_used_bytes"))
    if reserved < allocated:
        raise InputError(f"{path}: {where} has a reserved peak ({reserved} B) below its allocated peak "
                        f"({allocated} B), which torch's caching allocator never reports; the report is corrupt.")
    if used <= reserved:
        raise InputError(f"{path}: {where} has NVML used memory ({used} B) not above the reserved peak "
                        f"({reserved} B), so it was not read on the card that trained; the report cannot calibrate.")
    number = rank.get("rank", index)
    if not (_positive_int(number) or number == 0) or number > MAX_RANK:
        raise InputError(f"{path}: {where}.rank is {str(number)[:40]!r}, not a rank number; the report is malformed.")
    return Sample(path=path, rank=number, gpu=gpu.strip(), allocated=allocated, reserved=reserved, nvml_used=used)


def _processes(config) -> int:
    """GPUs x nodes of the run's config (1 when the report lacks them or garbles them)."""
    if not isinstance(config, dict):
        return 1
    gpus, nodes = config.get("gpus", 1), config.get("nodes", 1)
    return gpus * nodes if _positive_int(gpus, MAX_RANK) and _positive_int(nodes, MAX_RANK) else 1


def _positive_int(value, limit: int = MAX_BYTES) -> bool:
    """A whole number above 0 and at most `limit` (a byte count beyond any card is a corrupt report)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= limit


def _date(value, path: str) -> dt.datetime:
    try:
        date = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{path} has no valid date ({value!r}); give the run_report.json that "
                        f"`fitplan launch` wrote.") from None
    return date if date.tzinfo else date.replace(tzinfo=dt.timezone.utc)


def check_one_gpu(runs: list[Run]) -> None:
    """All reports must come from one GPU model: a calibration is per card."""
    first = runs[0] if runs else None
    for run in runs[1:]:
        if gpu_key(run.gpu) != gpu_key(first.gpu):
            raise InputError(f"{first.path} is from {first.gpu} but {run.path} is from {run.gpu}; calibrate one "
                            f"GPU model at a time.")


# -- fitting ---------------------------------------------------------------------------------------------
def fit(runs: list[Run], now: dt.datetime | None = None) -> dict:
    """The profile entry of the runs' GPU model (see the module docstring)."""
    if not runs:
        raise InputError("No run reports given; pass the run_report.json files of runs on one GPU model.")
    samples = [s for run in runs for s in run.samples]
    single = [s.context for s in samples if s.processes == 1]
    contexts = single or [s.context for s in samples]   # beside NCCL's buffers when no single-GPU run was given
    fractions = [s.reserve_fraction for s in samples]
    several = [s.context for s in samples if s.processes > 1]
    gpu = runs[0].gpu
    versions = {lib: _distinct(run.versions.get(lib) for run in runs) for lib in LIBRARIES}
    drivers = _distinct(run.driver for run in runs)
    dates = sorted(run.date for run in runs)
    first, last = dates[0].date().isoformat(), dates[-1].date().isoformat()
    span = first if first == last else f"{first} to {last}"
    libs = ", ".join(f"{lib} {'/'.join(v) if v else 'not recorded'}" for lib, v in versions.items())
    driver = f"driver {'/'.join(drivers)}" if drivers else "driver not recorded"
    runs_text = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    return {
        "gpu": gpu,
        "context_bytes": int(statistics.median(contexts)),
        "reserve_fraction": round(statistics.median(fractions), FRACTION_DIGITS),
        **({"communicator_bytes": max(0, int(statistics.median(several) - statistics.median(single)))}
           if single and several else {}),
        "runs": len(runs),
        "samples": len(samples),
        "context_bytes_range": [min(contexts), max(contexts)],
        "reserve_fraction_range": [round(min(fractions), FRACTION_DIGITS), round(max(fractions), FRACTION_DIGITS)],
        "versions": versions,
        "driver": drivers or None,
        "dates": [dates[0].isoformat(), dates[-1].isoformat()],
        "provenance": f"{runs_text} on {gpu}, {driver}, {libs}, {span}",
        "reports": [run.path for run in runs],
        "calibrated_at": (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
    }


def _distinct(values) -> list[str]:
    return sorted({str(v) for v in values if v})


def profile_keys(gpu: str) -> list[str]:
    """The profile keys an entry for `gpu` is stored under: its own, and its catalog card's when it differs."""
    from profiles.gpus import match_nvml_name

    keys = [gpu_key(gpu)]
    card = match_nvml_name(gpu)
    if card is not None and gpu_key(card.name) not in keys:
        keys.append(gpu_key(card.name))
    return keys


def catalog_card(gpu: str) -> str | None:
    from profiles.gpus import match_nvml_name

    card = match_nvml_name(gpu)
    return card.name if card else None


# -- the profile -----------------------------------------------------------------------------------------
def read_profile_document(path: Path) -> dict:
    """The whole profile file (empty when absent); an unreadable one is refused rather than overwritten."""
    if not path.exists():
        return {"version": PROFILE_VERSION, "gpus": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"The calibration profile {path} is not readable JSON ({err}); fix or remove it, "
                        f"then calibrate again.") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus", {}), dict):
        raise InputError(f"The calibration profile {path} is not a fitplan profile ({{\"version\": 1, \"gpus\": "
                        f"{{...}}}}); fix or remove it, then calibrate again.")
    return data


def merged(document: dict, entry: dict) -> tuple[dict, dict]:
    """(the new document, the entries it replaces): `entry` under each of its keys, other GPUs kept."""
    keys = profile_keys(entry["gpu"])
    gpus = dict(document.get("gpus", {}))
    replaced = {key: gpus[key] for key in keys if key in gpus}
    gpus[keys[0]] = entry
    for alias in keys[1:]:
        gpus[alias] = {**entry, "alias_of": keys[0]}
    return {**document, "version": PROFILE_VERSION, "gpus": gpus}, replaced


def calibrate(args: list[str], dry_run: bool = False, profile: Path | None = None) -> dict:
    """Validate the reports, fit, and (unless dry_run) write the user profile. Returns what was done."""
    from planner.calibration import allocator_reserve_fraction, cuda_context_bytes

    path = profile or user_profile_path()
    runs = read_runs(report_paths(args))
    entry = fit(runs)
    document = read_profile_document(path)   # before writing anything: a bad profile stops here too
    new_document, replaced = merged(document, entry)
    card = catalog_card(entry["gpu"])
    if not dry_run:
        write_text(path, json.dumps(new_document, indent=2) + "\n", force=True)
    return {
        "profile": str(path),
        "written": not dry_run,
        "dry_run": dry_run,
        "gpu": entry["gpu"],
        "catalog_card": card,
        "keys": profile_keys(entry["gpu"]),
        "entry": entry,
        "replaced": replaced,
        "defaults": {"context_bytes": cuda_context_bytes(entry["gpu"]),
                     "reserve_fraction": allocator_reserve_fraction(entry["gpu"])},
    }


def show(profile: Path | None = None) -> dict:
    """The calibration in use: the user profile and the shipped one, with their entries."""
    path = profile or user_profile_path()
    return {
        "profile": str(path),
        "profile_exists": path.exists(),
        "profile_problem": _problem(path),
        "gpus": _entries(load_profile(path)),
        "shipped": str(SHIPPED),
        "shipped_gpus": _entries(load_profile(SHIPPED)),
        "fallback": "GPUs without an entry use the shipped defaults (uncalibrated) of planner/hardware.py",
    }


def _entries(gpus: dict) -> dict:
    return {key: {k: entry.get(k) for k in ("gpu", "context_bytes", "reserve_fraction", "runs", "provenance",
                                            "alias_of") if k in entry}
            for key, entry in gpus.items() if isinstance(entry, dict)}


def _problem(path: Path) -> str | None:
    """Why an existing profile cannot be used (plans then fall back to the defaults), or None."""
    from common.files import read_json
    if not path.exists():
        return None
    try:
        read_json(path, "calibration profile")
    except InputError as err:
        return str(err)
    return None


# -- text ------------------------------------------------------------------------------------------------
