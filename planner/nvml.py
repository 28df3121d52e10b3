"""What the NVIDIA driver says about this machine's GPUs, read through NVML (nvidia-ml-py).

`probe()` returns plain dataclasses and never raises: no package, no driver, no GPU or a broken GPU
become `Probe.error` or a sentence in `Probe.warnings`. Optional queries that the card or the driver
does not support (MIG, NVLink, process lists) become None. pynvml is imported inside `probe()` only,
so planning without a GPU never loads it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

from common.units import GiB
from profiles.gpus import match_nvml_name

# Used memory above this, with no process to explain it, is worth a warning: an idle card shows a few
# hundred MiB the driver keeps for itself.
BUSY_BYTES = GiB


@dataclass(frozen=True)
class MigSlice:
    """One MIG device (a slice of a GPU in MIG mode): what a CUDA process sees instead of the GPU."""

    index: int
    name: str               # e.g. "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    memory_bytes: int
    free_bytes: int
    uuid: str | None


@dataclass(frozen=True)
class ProbedGpu:
    index: int                              # NVML's index (PCI bus order)
    name: str                               # NVML's name, e.g. "NVIDIA GeForce RTX 4090"
    memory_bytes: int
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int] | None
    bf16: bool
    mig_mode: bool | None = None            # None: the card has no MIG
    mig_slices: list[MigSlice] = field(default_factory=list)
    processes: int | None = None            # other processes on it; None: NVML would not say
    nvlink_peers: list[int] | None = None   # indices reached over NVLink; None: no NVLink
    uuid: str | None = None


@dataclass
class Probe:
    gpus: list[ProbedGpu]
    driver_version: str | None = None
    cuda_version: str | None = None          # the newest CUDA the driver supports, e.g. "12.4"
    error: str | None = None                 # why no GPU was read, a clause: "the NVIDIA driver is not loaded"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Skip(Exception):
    """A required query failed: the GPU is left out, and the reason becomes a warning."""


def probe(nvml=None) -> Probe:
    """Query every GPU the driver sees. `nvml`: a pynvml-like module (tests pass a fake)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return Probe([], error="nvidia-ml-py, which reads the driver, is not installed: "
                                   "pip install nvidia-ml-py")
    try:
        nvml.nvmlInit()
    except Exception as err:  # NVMLError, or OSError from a broken library
        return Probe([], error=_init_failure(nvml, err))
    try:
        return _probe_all(nvml)
    except Exception as err:  # a driver misbehaving in a new way must not take planning down
        return Probe([], error=f"NVML failed while reading the GPUs: {_describe(err)}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _init_failure(nvml, err: Exception) -> str:
    reasons = {
        "LibraryNotFound": "no NVIDIA driver is installed: libnvidia-ml.so.1 was not found",
        "DriverNotLoaded": "the NVIDIA driver is not loaded",
        "NoPermission": "this user may not query the NVIDIA driver",
        "LibRmVersionMismatch": "the NVIDIA driver library and kernel module differ in version, "
                                "as after an update without a reboot",
    }
    for kind, reason in reasons.items():
        if _is(nvml, err, kind):
            return reason
    return f"NVML could not start: {_describe(err)}"


def _probe_all(nvml) -> Probe:
    driver = _optional(nvml, "nvmlSystemGetDriverVersion")
    cuda = _optional(nvml, "nvmlSystemGetCudaDriverVersion")
    result = Probe([], driver_version=_text(driver) if driver else None,
                   cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None)
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        result.error = "the NVIDIA driver reports no GPUs"
        return result
    links: dict[int, list | None] = {}
    bus_ids: dict[tuple, int] = {}
    for index in range(count):
        try:
            gpu, bus_id, links[index] = _probe_gpu(nvml, index)
        except _Skip as skipped:
            result.warnings.append(f"GPU {index} was left out: {skipped}.")
            continue
        result.gpus.append(gpu)
        if bus_id is not None:
            bus_ids[bus_id] = index
    result.gpus = [_with_peers(gpu, links, bus_ids) for gpu in result.gpus]
    result.warnings += [line for gpu in result.gpus for line in _gpu_warnings(gpu)]
    if not result.gpus:
        result.error = f"none of the {count} GPUs could be read"
    return result


def _probe_gpu(nvml, index: int) -> tuple[ProbedGpu, tuple | None, list | None]:
    handle = _required(nvml, "it could not be opened", "nvmlDeviceGetHandleByIndex", index)
    name = _text(_required(nvml, "its name could not be read", "nvmlDeviceGetName", handle))
    memory = _required(nvml, "its memory could not be read", "nvmlDeviceGetMemoryInfo", handle)
    capability = _optional(nvml, "nvmlDeviceGetCudaComputeCapability", handle)
    capability = tuple(capability) if capability else None
    mig = _optional(nvml, "nvmlDeviceGetMigMode", handle)
    mig_mode = bool(mig[0]) if mig is not None else None
    uuid = _optional(nvml, "nvmlDeviceGetUUID", handle)
    pci = _optional(nvml, "nvmlDeviceGetPciInfo", handle)
    gpu = ProbedGpu(
        index=index, name=name, memory_bytes=int(memory.total), free_bytes=int(memory.free),
        used_bytes=int(memory.used), compute_capability=capability, bf16=_bf16(name, capability),
        mig_mode=mig_mode, mig_slices=_mig_slices(nvml, handle) if mig_mode else [],
        processes=_other_processes(nvml, handle), uuid=_text(uuid) if uuid else None)
    return gpu, _bus_id(pci.busId) if pci is not None else None, _nvlinks(nvml, handle)


def _bf16(name: str, capability: tuple[int, int] | None) -> bool:
    if capability is not None:
        return capability >= (8, 0)
    spec = match_nvml_name(name)
    return spec.bf16 if spec else False


def _mig_slices(nvml, handle) -> list[MigSlice]:
    slices = []
    for slot in range(_optional(nvml, "nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
        device = _optional(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        memory = _optional(nvml, "nvmlDeviceGetMemoryInfo", device) if device is not None else None
        if memory is None:  # an empty slot
            continue
        uuid = _optional(nvml, "nvmlDeviceGetUUID", device)
        name = _optional(nvml, "nvmlDeviceGetName", device)
        slices.append(MigSlice(index=slot, name=_text(name) if name else f"MIG slice {slot}",
                               memory_bytes=int(memory.total), free_bytes=int(memory.free),
                               uuid=_text(uuid) if uuid else None))
    return slices


def _other_processes(nvml, handle) -> int | None:
    """How many processes other than this one hold memory on the GPU; None when NVML will not say."""
    pids, answered = set(), False
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        processes = _optional(nvml, query, handle)
        if processes is not None:
            answered = True
            pids |= {process.pid for process in processes}
    pids.discard(os.getpid())
    return len(pids) if answered else None


def _nvlinks(nvml, handle) -> list | None:
    """Active links as ('gpu', bus id) or ('switch', None); None when the card has no NVLink."""
    links = []
    switch = getattr(nvml, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2)
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            active = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except Exception:
            if link == 0:
                return None  # not supported: no NVLink on this card
            break            # past the card's last link
        if not active:
            continue
        remote_type = _optional(nvml, "nvmlDeviceGetNvLinkRemoteDeviceType", handle, link)
        if remote_type == switch:
            links.append(("switch", None))
            continue
        remote = _optional(nvml, "nvmlDeviceGetNvLinkRemotePciInfo", handle, link)
        if remote is not None:
            links.append(("gpu", _bus_id(remote.busId)))
    return links


def _with_peers(gpu: ProbedGpu, links: dict[int, list | None], bus_ids: dict[tuple, int]) -> ProbedGpu:
    """Resolve NVLink bus ids to GPU indices; GPUs on an NVSwitch all reach each other."""
    own = links.get(gpu.index)
    if own is None:
        return gpu
    peers = {bus_ids[bus] for kind, bus in own if kind == "gpu" and bus in bus_ids}
    if any(kind == "switch" for kind, _ in own):
        peers |= {index for index, other in links.items()
                  if other and any(kind == "switch" for kind, _ in other)}
    peers.discard(gpu.index)
    return replace(gpu, nvlink_peers=sorted(peers))


def _gpu_warnings(gpu: ProbedGpu) -> list[str]:
    lines = []
    used = f"{gpu.used_bytes / GiB:.1f} GiB"
    if gpu.processes:
        others = "process" if gpu.processes == 1 else "processes"
        lines.append(f"GPU {gpu.index} has {used} in use by {gpu.processes} other {others}; "
                     "plans use its free memory.")
    elif gpu.used_bytes > BUSY_BYTES:
        lines.append(f"GPU {gpu.index} has {used} in use; plans use its free memory.")
    if gpu.mig_mode and gpu.mig_slices:
        names = ", ".join(_mig_profile(s.name) for s in gpu.mig_slices)
        lines.append(f"GPU {gpu.index} is in MIG mode with {len(gpu.mig_slices)} slices ({names}); "
                     "a training process sees one slice, and plans use one.")
    elif gpu.mig_mode:
        lines.append(f"GPU {gpu.index} is in MIG mode but has no MIG slices, so CUDA cannot use it.")
    return lines


def _mig_profile(name: str) -> str:
    """'NVIDIA A100-SXM4-80GB MIG 3g.40gb' -> '3g.40gb'."""
    return name.rsplit("MIG", 1)[-1].strip() or name


def _required(nvml, failure: str, query: str, *args):
    try:
        return getattr(nvml, query)(*args)
    except Exception as err:
        raise _Skip(f"{failure} ({_describe(err)})") from err


def _optional(nvml, query: str, *args):
    """The query's answer, or None when the card, the driver or this pynvml cannot give it."""
    try:
        return getattr(nvml, query)(*args)
    except Exception:
        return None


def _is(nvml, err: Exception, kind: str) -> bool:
    error_class = getattr(nvml, f"NVMLError_{kind}", None)
    return error_class is not None and isinstance(err, error_class)


def _describe(err: Exception) -> str:
    return str(err) or type(err).__name__


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bus_id(value) -> tuple:
    """'00000000:07:00.0' and '0000:07:00.0' name the same device: compare the numbers."""
    parts = _text(value).strip().lower().replace(".", ":").split(":")
    try:
        return tuple(int(part, 16) for part in parts)
    except ValueError:
        return tuple(parts)
