"""The hardware a plan is made for: the GPUs of this machine (NVML) or catalog cards named with --gpu,
and the memory a GPU needs outside PyTorch's allocator (CUDA context, cuBLAS workspace, allocator slack).
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from planner.errors import UserError
from planner.nvml import GiB, Probe, ProbedGpu, probe
from profiles.gpus import GpuSpec, find_gpu, match_nvml_name

MiB = 2**20


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
        except UserError:
            return None
    return spec.compute_capability


# --- The hardware a plan is for ---------------------------------------------------------------------
@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the planner sees it. Rates are None for a probed card fitplan's catalog lacks."""

    name: str
    memory_bytes: int
    free_bytes: int                       # what a plan may use: the whole card for a catalog card
    bf16: bool
    tflops: float | None                  # dense 16-bit tensor TFLOP/s (bf16, else fp16)
    bandwidth: float | None               # memory bandwidth, GB/s
    price: float | None                   # USD per GPU-hour
    compute_capability: tuple[int, int] | None = None
    key: str | None = None                # catalog key, when known
    index: int | None = None              # NVML index of a probed card

    @classmethod
    def from_spec(cls, spec: GpuSpec) -> "GpuInfo":
        return cls(name=spec.name, memory_bytes=spec.memory_bytes, free_bytes=spec.memory_bytes,
                   bf16=spec.bf16, tflops=spec.tflops, bandwidth=spec.mem_bandwidth_gbs,
                   price=spec.price_usd_per_hour, compute_capability=spec.compute_capability, key=spec.key)

    @classmethod
    def from_probe(cls, gpu: ProbedGpu, memory_bytes: int | None = None, free_bytes: int | None = None,
                   name: str | None = None, compute_share: float = 1.0,
                   memory_share: float = 1.0) -> "GpuInfo":
        """The shares: the fractions of the card's compute and memory bandwidth a MIG slice gets."""
        spec = match_nvml_name(gpu.name, gpu.memory_bytes)
        return cls(name=name or gpu.name, memory_bytes=memory_bytes or gpu.memory_bytes,
                   free_bytes=gpu.free_bytes if free_bytes is None else free_bytes, bf16=gpu.bf16,
                   tflops=round(spec.tflops * compute_share, 1) if spec else None,
                   bandwidth=round(spec.mem_bandwidth_gbs * memory_share, 1) if spec else None,
                   price=spec.price_usd_per_hour if spec else None,
                   compute_capability=gpu.compute_capability or (spec.compute_capability if spec else None),
                   key=spec.key if spec else None, index=gpu.index)


@dataclass
class Hardware:
    source: str                          # "nvml" | "catalog"
    gpus: list[GpuInfo]                  # the GPUs of one node
    nodes: int = 1
    warnings: list[str] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None

    @property
    def gpus_per_node(self) -> int:
        return len(self.gpus)

    @property
    def world_size(self) -> int:
        return len(self.gpus) * self.nodes

    @property
    def gpu(self) -> GpuInfo:
        """The GPU plans are made against: the one with the least free memory."""
        return min(self.gpus, key=lambda gpu: (gpu.free_bytes, gpu.memory_bytes))

    def to_dict(self) -> dict:
        return asdict(self)


def hardware_from_catalog(text: str, nodes: int = 1, gpus: int | None = None) -> Hardware:
    """Hardware for a named card: 'RTX 4090', 'h100x8' (8 per node); `gpus` overrides the count."""
    spec, count = find_gpu(text)
    if gpus is not None and count != 1 and gpus != count:
        raise UserError(f'--gpu "{text}" says {count} GPUs but --gpus says {gpus}; give the count once.')
    return Hardware(source="catalog", gpus=[GpuInfo.from_spec(spec)] * (gpus or count), nodes=_nodes(nodes))


def hardware_from_probe(result: Probe, nodes: int = 1, visible: str | None = None) -> Hardware:
    """Hardware from what NVML found; `visible` is CUDA_VISIBLE_DEVICES, if set."""
    probed, warnings = _visible(result.gpus, visible)
    gpus = []
    for gpu in probed:
        if gpu.mig_mode:
            gpus += _mig_gpu(gpu, visible)
        else:
            gpus.append(GpuInfo.from_probe(gpu))
    hardware = Hardware(source="nvml", gpus=gpus, nodes=_nodes(nodes), warnings=result.warnings + warnings,
                        driver_version=result.driver_version, cuda_version=result.cuda_version)
    hardware.warnings += _hardware_warnings(hardware)
    return hardware


def resolve_hardware(gpu: str | None, gpus: int | None, nodes: int = 1, *, nvml=None) -> Hardware:
    """--gpu names a catalog card; without it, this machine's GPUs (NVML). `nvml`: a fake, for tests."""
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}.")
    if gpu:
        return hardware_from_catalog(gpu, nodes, gpus)
    result = probe(nvml)
    hardware = hardware_from_probe(result, nodes, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not hardware.gpus:
        reason = result.error or "CUDA_VISIBLE_DEVICES hides every GPU"
        raise UserError(f"No NVIDIA GPU was found ({reason}); name a card to plan for with --gpu, "
                        f'e.g. --gpu "RTX 4090".')
    if gpus is not None:
        if gpus > len(hardware.gpus):
            raise UserError(f"--gpus {gpus} asks for more GPUs than this machine has ({len(hardware.gpus)}); "
                            f'to plan for another machine name its card, e.g. --gpu "{hardware.gpu.name}" '
                            f"--gpus {gpus}.")
        hardware.gpus = hardware.gpus[:gpus]
    return hardware


def _nodes(nodes: int) -> int:
    if nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {nodes}.")
    return nodes


def _visible(gpus: list[ProbedGpu], visible: str | None) -> tuple[list[ProbedGpu], list[str]]:
    """The GPUs CUDA_VISIBLE_DEVICES lets CUDA use: indices or UUID prefixes (MIG UUIDs pick a slice)."""
    if visible is None:
        return gpus, []
    chosen = []
    for entry in filter(None, (part.strip() for part in visible.split(","))):
        if entry.isdigit():
            match = [gpu for gpu in gpus if gpu.index == int(entry)]
        elif entry.startswith("MIG-"):
            match = [gpu for gpu in gpus if any((s.uuid or "").startswith(entry) for s in gpu.mig_slices)]
        else:
            match = [gpu for gpu in gpus if gpu.uuid and gpu.uuid.startswith(entry)]
        if not match:  # CUDA stops at the first entry it cannot find
            break
        chosen += [gpu for gpu in match if gpu not in chosen]
    note = [f"CUDA_VISIBLE_DEVICES={visible} leaves {len(chosen)} of the {len(gpus)} GPUs visible."]
    return chosen, note if len(chosen) != len(gpus) else []


def _mig_gpu(gpu: ProbedGpu, visible: str | None) -> list[GpuInfo]:
    """A GPU in MIG mode offers a process one slice: the one CUDA_VISIBLE_DEVICES names, else the first."""
    wanted = [s for s in gpu.mig_slices if visible and s.uuid and s.uuid in visible] or gpu.mig_slices[:1]
    slices = []
    for mig in wanted:
        memory_share = mig.memory_bytes / gpu.memory_bytes
        compute = re.search(r"(\d+)g\.", mig.name)   # '3g.40gb': 3 of the card's 7 compute slices
        compute_share = int(compute.group(1)) / 7 if compute else memory_share
        slices.append(GpuInfo.from_probe(gpu, memory_bytes=mig.memory_bytes, free_bytes=mig.free_bytes,
                                         name=mig.name, memory_share=memory_share, compute_share=compute_share))
    return slices


def _hardware_warnings(hardware: Hardware) -> list[str]:
    lines = []
    names = list(dict.fromkeys(gpu.name for gpu in hardware.gpus))
    if len(names) > 1:
        smallest = hardware.gpu
        lines.append(f"This machine has different GPUs ({', '.join(names)}); plans use the one with the "
                     f"least free memory, {smallest.name} ({smallest.free_bytes / GiB:.1f} GiB free), "
                     "for every GPU.")
    for gpu in hardware.gpus:
        if gpu.tflops is None:
            lines.append(f"{gpu.name} is not in fitplan's catalog, so plans carry no speed or cost for it.")
    return list(dict.fromkeys(lines))
