"""GPU-level constants a plan uses: calibrated ones when runs on this card were measured, else defaults.

Lookup order: the user's profile (written by `fitplan calibrate`), the calibration shipped in
profiles/calibration.json (real GPU measurements with their provenance), then the documented
per-architecture defaults below. `Overhead.total` is the one formula of what must fit on a card.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import read_json
from common.units import GiB, MiB
from profiles.gpus import find_gpu, match_nvml_name

SHIPPED = Path(__file__).resolve().parent.parent / "profiles" / "calibration.json"
# Beyond these a calibrated constant is garbled, not measured: contexts are 0.3-2 GiB, reserves 0-50 %
MAX_CONTEXT_BYTES = 16 * GiB
MAX_RESERVE_FRACTION = 1.0


# --- Memory outside the allocator, per GPU class -----------------------------------------------------
@dataclass(frozen=True)
class GpuClass:
    """Memory a process needs on one GPU beyond what PyTorch's allocator hands out, for one architecture.

    context_bytes: the CUDA context (driver state, the kernel images of CUDA, cuBLAS and PyTorch that
      are loaded) as nvidia-smi shows it for a process after `torch.cuda.init()` and a first matmul.
      With lazy module loading (CUDA >= 11.7, the default since 12.2 and in PyTorch's wheels) reported
      and measured values lie between 0.3 and 1 GiB; eager loading (CUDA_MODULE_LOADING=EAGER, old
      CUDA) can reach 1-2 GiB. The defaults below sit in the middle of that range. They are not
      measured on each card: `fitplan calibrate` measures them on a real GPU, and they should be
      replaced by those measurements (with the date and library versions) as they come in.
    cublas_workspace_bytes: PyTorch's cuBLAS workspace for one stream: 4 MiB * 2 + 16 KiB * 8
      (CUBLAS_WORKSPACE_CONFIG=":4096:2:16:8") before Hopper, 32 MiB (":4096:8") from Hopper on.
      PyTorch takes it from the caching allocator, but a CPU measurement cannot see it, so it is added here.
    allocator_reserve_fraction: reserved / allocated - 1 at the peak of a training step. The caching
      allocator rounds blocks up (512 B, 2 MiB, 20 MiB segments) and keeps freed blocks cached; the
      gap seen in training runs is commonly 5-15 % (less with expandable_segments:True). 0.10 is the
      middle of that range, to be calibrated like the context.
    """

    name: str
    context_bytes: int
    cublas_workspace_bytes: int
    allocator_reserve_fraction: float = 0.10


# NCCL's buffers for one communicator, allocated by NCCL itself (cudaMalloc, outside torch's allocator) once a
# run has more than one process: 544 MiB for 2 ranks, 688 MiB for 3 or more, measured on 4 x A100 with NVLink
# (NVIDIA/nccl#964). It grows with the channels NCCL opens (more on Hopper's NVLink, NVIDIA/nccl#986) and stops
# growing beyond 2 nodes; a data-parallel run has one communicator. Uncalibrated defaults, like the context.
NCCL_TWO_RANKS_BYTES = 544 * MiB
NCCL_BYTES = 688 * MiB

_PRE_HOPPER_WORKSPACE = 4 * MiB * 2 + 16 * 1024 * 8
_HOPPER_WORKSPACE = 32 * MiB

# Compute capability major -> class. Uncalibrated defaults; see GpuClass.
GPU_CLASSES: dict[int, GpuClass] = {
    7: GpuClass("Volta / Turing", context_bytes=400 * MiB, cublas_workspace_bytes=_PRE_HOPPER_WORKSPACE),
    8: GpuClass("Ampere / Ada", context_bytes=500 * MiB, cublas_workspace_bytes=_PRE_HOPPER_WORKSPACE),
    9: GpuClass("Hopper", context_bytes=500 * MiB, cublas_workspace_bytes=_HOPPER_WORKSPACE),
    # Blackwell: more and larger kernel images; a guess until measured
    10: GpuClass("Blackwell (datacenter)", context_bytes=600 * MiB, cublas_workspace_bytes=_HOPPER_WORKSPACE),
    12: GpuClass("Blackwell (GeForce)", context_bytes=600 * MiB, cublas_workspace_bytes=_HOPPER_WORKSPACE),
}
DEFAULT_GPU_CLASS = GpuClass("unknown", context_bytes=512 * MiB, cublas_workspace_bytes=_HOPPER_WORKSPACE)
ALLOCATOR_RESERVE_FRACTION = DEFAULT_GPU_CLASS.allocator_reserve_fraction


def gpu_class(gpu: str | tuple[int, int] | None) -> GpuClass:
    """The class of a GPU given by compute capability ((8, 9) or "8.9") or by name ("RTX 4090")."""
    capability = _capability(gpu)
    if capability is None:
        return DEFAULT_GPU_CLASS
    return GPU_CLASSES.get(capability[0], DEFAULT_GPU_CLASS)


def cuda_context_bytes(gpu: str | tuple[int, int] | None = None) -> int:
    """CUDA context + cuBLAS workspace on one GPU: memory the allocator's peak does not include."""
    cls = gpu_class(gpu)
    return cls.context_bytes + cls.cublas_workspace_bytes


def allocator_reserve_fraction(gpu: str | tuple[int, int] | None = None) -> float:
    """How much the caching allocator reserves on top of the allocated peak (0.10 = 10 %)."""
    return gpu_class(gpu).allocator_reserve_fraction


def _capability(gpu: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if gpu is None:
        return None
    if isinstance(gpu, tuple):
        return gpu
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", gpu)
    if match:
        return int(match.group(1)), int(match.group(2))
    spec = match_nvml_name(gpu)
    if spec is None:
        try:
            spec = find_gpu(gpu)[0]
        except InputError:
            return None
    return spec.compute_capability




@dataclass(frozen=True)
class Overhead:
    context_bytes: int        # CUDA context and cuBLAS workspace, outside torch's allocated peak
    reserve_fraction: float   # caching allocator: reserved = allocated * (1 + fraction)
    source: str               # where these numbers come from
    nccl_bytes: int | None = None   # NCCL's buffers when calibrated; else the documented defaults

    def reserved(self, allocated: int) -> int:
        return int(allocated * (1 + self.reserve_fraction))

    def total(self, allocated: int, paged: int = 0, processes: int = 1) -> int:
        """What must fit on the card: the allocator's reserve, the CUDA context, managed (paged) memory and,
        with more than one process, NCCL's buffers."""
        return self.reserved(allocated) + self.context_bytes + paged + self.communicator(processes)

    def communicator(self, processes: int) -> int:
        """NCCL's own buffers on each GPU of a run of `processes` ranks (none for one process)."""
        if processes < 2:
            return 0
        if self.nccl_bytes is not None:
            return self.nccl_bytes
        return NCCL_TWO_RANKS_BYTES if processes == 2 else NCCL_BYTES


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
        data = read_json(path, "calibration profile")
    except InputError:
        return {}
    gpus = data.get("gpus") if isinstance(data, dict) else None
    return {key: entry for key, entry in gpus.items() if _usable(entry)} if isinstance(gpus, dict) else {}


def _usable(entry) -> bool:
    """A hand-edited entry that lacks or garbles a constant is skipped, not trusted: a context between 0 and
    MAX_CONTEXT_BYTES, a reserve fraction between 0 and MAX_RESERVE_FRACTION, both plain numbers."""
    try:
        context, fraction = entry["context_bytes"], entry["reserve_fraction"]
    except (KeyError, TypeError):
        return False
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (context, fraction))
    return numbers and 0 <= context <= MAX_CONTEXT_BYTES and 0 <= fraction <= MAX_RESERVE_FRACTION


def _nccl(entry: dict) -> int | None:
    """A calibrated NCCL figure, when the entry has a plausible one (a garbled one is not trusted)."""
    value = entry.get("communicator_bytes")
    plausible = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CONTEXT_BYTES
    return value if plausible else None


def overhead_for(gpu_name: str | None, compute_capability: tuple[int, int] | None = None) -> Overhead:
    key = gpu_key(gpu_name) if gpu_name else None
    for path, label in ((user_profile_path(), "calibrated"), (SHIPPED, "shipped calibration")):
        entry = load_profile(path).get(key) if key else None
        if entry:
            return Overhead(context_bytes=int(entry["context_bytes"]),
                            reserve_fraction=float(entry["reserve_fraction"]),
                            source=f"{label}: {entry.get('provenance', path)}", nccl_bytes=_nccl(entry))
    gpu = compute_capability or gpu_name
    return Overhead(context_bytes=cuda_context_bytes(gpu), reserve_fraction=allocator_reserve_fraction(gpu),
                    source="shipped defaults (uncalibrated)")
