"""GPU-level constants a plan uses: calibrated ones when runs on this card were measured, else defaults.

Lookup order: the user's profile (written by `fitplan calibrate`), the calibration shipped in
profiles/calibration.json (real GPU measurements with their provenance), then the documented
per-architecture defaults of planner/hardware.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from planner.hardware import allocator_reserve_fraction, cuda_context_bytes

SHIPPED = Path(__file__).resolve().parent.parent / "profiles" / "calibration.json"


@dataclass(frozen=True)
class Overhead:
    context_bytes: int        # CUDA context and cuBLAS workspace, outside torch's allocated peak
    reserve_fraction: float   # caching allocator: reserved = allocated * (1 + fraction)
    source: str               # where these numbers come from

    def reserved(self, allocated: int) -> int:
        return int(allocated * (1 + self.reserve_fraction))


def user_profile_path() -> Path:
    override = os.environ.get("FITPLAN_CALIBRATION")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fitplan" / "calibration.json"


def gpu_key(name: str) -> str:
    return " ".join(name.lower().replace("nvidia", "").split())


def load_profile(path: Path) -> dict:
    """{gpu key: entry}; a missing or unreadable profile is empty (plans fall back to defaults)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    gpus = data.get("gpus") if isinstance(data, dict) else None
    return {key: entry for key, entry in gpus.items() if _usable(entry)} if isinstance(gpus, dict) else {}


def _usable(entry) -> bool:
    """A hand-edited entry that lacks or garbles a constant is skipped, not trusted."""
    try:
        return int(entry["context_bytes"]) >= 0 and float(entry["reserve_fraction"]) >= 0
    except (KeyError, TypeError, ValueError):
        return False


def overhead_for(gpu_name: str | None, compute_capability: tuple[int, int] | None = None) -> Overhead:
    key = gpu_key(gpu_name) if gpu_name else None
    for path, label in ((user_profile_path(), "calibrated"), (SHIPPED, "shipped calibration")):
        entry = load_profile(path).get(key) if key else None
        if entry:
            return Overhead(context_bytes=int(entry["context_bytes"]), reserve_fraction=float(entry["reserve_fraction"]),
                            source=f"{label}: {entry.get('provenance', path)}")
    gpu = compute_capability or gpu_name
    return Overhead(context_bytes=cuda_context_bytes(gpu), reserve_fraction=allocator_reserve_fraction(gpu),
                    source="shipped defaults (uncalibrated)")
