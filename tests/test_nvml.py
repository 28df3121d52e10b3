"""NVML probing against a fake pynvml: healthy, small, mixed, failing, busy, MIG and NVLink machines, and
machines without a driver. Every case checks the exact dataclasses and sentences `probe()` returns."""
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from common.errors import InputError
from planner.hardware import Card, hardware_from_probe, resolve_hardware
from planner.nvml import MigSlice, Probe, ProbedGpu, probe

MiB, GiB = 2**20, 2**30


# --- A fake pynvml ------------------------------------------------------------------------------------
class NVMLError(Exception):
    """Like pynvml's: a code, and the driver's text for it."""
    TEXT = {2: "Invalid Argument", 3: "Not Supported", 6: "Not Found", 9: "Driver Not Loaded",
            12: "NVML Shared Library Not Found", 15: "GPU is lost", 999: "Unknown Error"}
    code = 999

    def __init__(self, value=None):
        super().__init__()
        self.value = self.code if value is None else value

    def __str__(self):
        return self.TEXT[self.value]


def _error(name, code):
    return type(f"NVMLError_{name}", (NVMLError,), {"code": code})


NotSupported, NotFound, InvalidArgument = _error("NotSupported", 3), _error("NotFound", 6), _error("InvalidArgument", 2)
DriverNotLoaded, LibraryNotFound, GpuIsLost = _error("DriverNotLoaded", 9), _error("LibraryNotFound", 12), _error("GpuIsLost", 15)


@dataclass
class FakeCard:
    name: str
    total: int
    used: int
    cc: tuple = (8, 9)
    uuid: str = "GPU-0"
    bus: str = "00000000:01:00.0"
    pids: list | None = field(default_factory=list)   # None: process queries not supported
    mig: list | None = None                           # None: no MIG; [current, pending]
    slices: list = field(default_factory=list)        # FakeCards standing for MIG devices
    links: list | None = None                         # None: no NVLink; remote bus ids or "switch"
    broken: dict = field(default_factory=dict)        # query -> error it raises


class FakeNvml:
    """The part of pynvml that `probe()` calls, answering from FakeCards."""
    NVML_NVLINK_MAX_LINKS = 18
    NVML_NVLINK_DEVICE_TYPE_SWITCH = 2

    def __init__(self, cards, driver="550.54.15", cuda=12040, init_error=None):
        self.cards, self.driver, self.cuda, self.init_error = cards, driver, cuda, init_error
        self.shut_down = False
        for error in (NVMLError, NotSupported, NotFound, InvalidArgument, DriverNotLoaded, LibraryNotFound, GpuIsLost):
            setattr(self, error.__name__, error)

    def _answer(self, card, query, value):
        if query in card.broken:
            raise card.broken[query]
        return value

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self._answer(self.cards[index], "handle", self.cards[index])

    def nvmlDeviceGetName(self, card):
        return self._answer(card, "name", card.name.encode())   # old pynvml gives bytes

    def nvmlDeviceGetMemoryInfo(self, card):
        return self._answer(card, "memory", SimpleNamespace(total=card.total, free=card.total - card.used,
                                                            used=card.used))

    def nvmlDeviceGetCudaComputeCapability(self, card):
        return self._answer(card, "cc", card.cc)

    def nvmlDeviceGetUUID(self, card):
        return self._answer(card, "uuid", card.uuid)

    def nvmlDeviceGetPciInfo(self, card):
        return self._answer(card, "pci", SimpleNamespace(busId=card.bus.encode()))

    def nvmlDeviceGetMigMode(self, card):
        if card.mig is None:
            raise NotSupported()
        return card.mig

    def nvmlDeviceGetMaxMigDeviceCount(self, card):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, card, index):
        if index >= len(card.slices):
            raise NotFound()
        return card.slices[index]

    def nvmlDeviceGetComputeRunningProcesses(self, card):
        if card.pids is None:
            raise NotSupported()
        return [SimpleNamespace(pid=pid, usedGpuMemory=GiB) for pid in card.pids]

    def nvmlDeviceGetGraphicsRunningProcesses(self, card):
        if card.pids is None:
            raise NotSupported()
        return [SimpleNamespace(pid=pid, usedGpuMemory=GiB) for pid in card.pids[:1]]  # one shows in both lists

    def nvmlDeviceGetNvLinkState(self, card, link):
        if card.links is None:
            raise NotSupported()
        if link >= len(card.links):
            raise InvalidArgument()
        return 1

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, card, link):
        return 2 if card.links[link] == "switch" else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, card, link):
        return SimpleNamespace(busId=card.links[link].encode())


def h100(index=0, **changes):
    card = dict(name="NVIDIA H100 80GB HBM3", total=81559 * MiB, used=527 * MiB, cc=(9, 0), uuid=f"GPU-h100-{index}",
                bus=f"00000000:{0x18 + index:02X}:00.0", mig=[0, 0], links=["switch"] * 18)
    return FakeCard(**{**card, **changes})


def rtx3060(**changes):
    return FakeCard(**{**dict(name="NVIDIA GeForce RTX 3060", total=12288 * MiB, used=301 * MiB, cc=(8, 6),
                              uuid="GPU-3060", bus="00000000:2B:00.0"), **changes})


def rtx4090(**changes):
    return FakeCard(**{**dict(name="NVIDIA GeForce RTX 4090", total=25757220864, used=418 * MiB, cc=(8, 9),
                              uuid="GPU-4090", bus="00000000:01:00.0"), **changes})


def a100_mig():
    slices = [FakeCard(name="NVIDIA A100-SXM4-80GB MIG 3g.40gb", total=40192 * MiB, used=13 * MiB, uuid=f"MIG-{i}")
              for i in ("aaaa", "bbbb")]
    return FakeCard(name="NVIDIA A100-SXM4-80GB", total=81920 * MiB, used=80384 * MiB, cc=(8, 0), uuid="GPU-a100",
                    mig=[1, 1], slices=slices, pids=None)


# --- probe() --------------------------------------------------------------------------------------
def test_healthy_h100():
    fake = FakeNvml([h100()])
    assert probe(fake) == Probe(
        gpus=[ProbedGpu(index=0, name="NVIDIA H100 80GB HBM3", memory_bytes=81559 * MiB,
                        free_bytes=(81559 - 527) * MiB, used_bytes=527 * MiB, compute_capability=(9, 0), bf16=True,
                        mig_mode=False, mig_slices=[], processes=0, nvlink_peers=[], uuid="GPU-h100-0")],
        driver_version="550.54.15", cuda_version="12.4", error=None, warnings=[])
    assert fake.shut_down


def test_small_consumer_card():
    assert probe(FakeNvml([rtx3060()], driver="535.183.01", cuda=12020)) == Probe(
        gpus=[ProbedGpu(index=0, name="NVIDIA GeForce RTX 3060", memory_bytes=12 * GiB, free_bytes=(12288 - 301) * MiB,
                        used_bytes=301 * MiB, compute_capability=(8, 6), bf16=True, mig_mode=None, mig_slices=[],
                        processes=0, nvlink_peers=None, uuid="GPU-3060")],
        driver_version="535.183.01", cuda_version="12.2", error=None, warnings=[])


def test_old_card_without_bf16_and_unanswered_queries():
    t4 = FakeCard(name="Tesla T4", total=15360 * MiB, used=0, cc=None, uuid="GPU-t4", pids=None,
                  broken={"cc": NotSupported(), "uuid": NotSupported(), "pci": NotSupported()})
    result = probe(FakeNvml([t4], driver=None, cuda=None))
    assert result.gpus == [ProbedGpu(index=0, name="Tesla T4", memory_bytes=15360 * MiB, free_bytes=15360 * MiB,
                                     used_bytes=0, compute_capability=None, bf16=False, mig_mode=None,
                                     mig_slices=[], processes=None, nvlink_peers=None, uuid=None)]
    assert (result.driver_version, result.cuda_version, result.warnings) == (None, None, [])


def test_mixed_pair():
    result = probe(FakeNvml([rtx4090(), rtx3060()]))
    assert [(gpu.index, gpu.name, gpu.memory_bytes, gpu.compute_capability) for gpu in result.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 25757220864, (8, 9)), (1, "NVIDIA GeForce RTX 3060", 12 * GiB, (8, 6))]
    assert result.warnings == [] and result.error is None


def test_failing_card_is_left_out_with_a_warning():
    result = probe(FakeNvml([h100(0, links=None), h100(1, links=None, broken={"memory": GpuIsLost()})]))
    assert [gpu.index for gpu in result.gpus] == [0]
    assert result.warnings == ["GPU 1 was left out: its memory could not be read (GPU is lost)."]
    assert result.error is None


def test_every_card_failing():
    result = probe(FakeNvml([rtx3060(broken={"handle": NVMLError()})]))
    assert result == Probe(gpus=[], driver_version="550.54.15", cuda_version="12.4",
                           error="none of the 1 GPUs could be read",
                           warnings=["GPU 0 was left out: it could not be opened (Unknown Error)."])


def test_busy_card():
    result = probe(FakeNvml([rtx4090(used=int(10.2 * GiB), pids=[4242, 4243])]))
    assert result.gpus[0].processes == 2
    assert result.warnings == ["GPU 0 has 10.2 GiB in use by 2 other processes; plans use its free memory."]


def test_busy_card_whose_processes_are_hidden():
    result = probe(FakeNvml([rtx4090(used=3 * GiB, pids=None), rtx3060(pids=[77])]))
    assert [gpu.processes for gpu in result.gpus] == [None, 1]
    assert result.warnings == ["GPU 0 has 3.0 GiB in use; plans use its free memory.",
                               "GPU 1 has 0.3 GiB in use by 1 other process; plans use its free memory."]


def test_own_process_is_not_counted(monkeypatch):
    monkeypatch.setattr("os.getpid", lambda: 4242)
    assert probe(FakeNvml([rtx4090(pids=[4242])])).gpus[0].processes == 0


def test_mig_enabled_a100():
    result = probe(FakeNvml([a100_mig()]))
    gpu = result.gpus[0]
    assert (gpu.mig_mode, gpu.processes, gpu.nvlink_peers) == (True, None, None)
    assert gpu.mig_slices == [
        MigSlice(index=0, name="NVIDIA A100-SXM4-80GB MIG 3g.40gb", memory_bytes=40192 * MiB,
                 free_bytes=(40192 - 13) * MiB, uuid="MIG-aaaa"),
        MigSlice(index=1, name="NVIDIA A100-SXM4-80GB MIG 3g.40gb", memory_bytes=40192 * MiB,
                 free_bytes=(40192 - 13) * MiB, uuid="MIG-bbbb")]
    assert result.warnings == [
        "GPU 0 has 78.5 GiB in use; plans use its free memory.",
        "GPU 0 is in MIG mode with 2 slices (3g.40gb, 3g.40gb); a training process sees one slice, and plans use one."]


def test_mig_mode_without_slices():
    card = a100_mig()
    card.slices, card.used = [], 0
    assert probe(FakeNvml([card])).warnings == [
        "GPU 0 is in MIG mode but has no MIG slices, so CUDA cannot use it."]


def test_nvlink_bridge_and_nvswitch():
    bridged = probe(FakeNvml([FakeCard(name="NVIDIA GeForce RTX 3090", total=24 * GiB, used=0, uuid="GPU-a",
                                       bus="00000000:01:00.0", links=["0000:02:00.0"] * 4),
                              FakeCard(name="NVIDIA GeForce RTX 3090", total=24 * GiB, used=0, uuid="GPU-b",
                                       bus="00000000:02:00.0", links=["00000000:01:00.0"] * 4)]))
    assert [gpu.nvlink_peers for gpu in bridged.gpus] == [[1], [0]]
    hgx = probe(FakeNvml([h100(i) for i in range(4)]))
    assert [gpu.nvlink_peers for gpu in hgx.gpus] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_zero_gpus():
    assert probe(FakeNvml([])) == Probe(gpus=[], driver_version="550.54.15", cuda_version="12.4",
                                        error="the NVIDIA driver reports no GPUs", warnings=[])


@pytest.mark.parametrize("error, reason", [
    (LibraryNotFound(), "no NVIDIA driver is installed: libnvidia-ml.so.1 was not found"),
    (DriverNotLoaded(), "the NVIDIA driver is not loaded"),
    (NVMLError(), "NVML could not start: Unknown Error"),
    (OSError("libnvidia-ml.so.1: cannot open shared object file"),
     "NVML could not start: libnvidia-ml.so.1: cannot open shared object file"),
])
def test_no_driver(error, reason):
    assert probe(FakeNvml([], init_error=error)) == Probe(gpus=[], error=reason)


def test_no_pynvml_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)   # makes `import pynvml` fail
    assert probe() == Probe(gpus=[], error="nvidia-ml-py, which reads the driver, is not installed: "
                                           "pip install nvidia-ml-py")


def test_unexpected_failure_never_raises():
    fake = FakeNvml([rtx3060()])
    fake.nvmlDeviceGetCount = lambda: 1 / 0
    assert probe(fake).error == "NVML failed while reading the GPUs: division by zero"
    assert fake.shut_down


def test_real_pynvml_without_driver():
    pytest.importorskip("pynvml")
    result = probe()
    if result.gpus:
        pytest.skip("this machine has a GPU")
    assert result.error and result.gpus == []


# --- Hardware from a probe ------------------------------------------------------------------------
def test_hardware_from_healthy_probe():
    hardware = hardware_from_probe(probe(FakeNvml([h100(i) for i in range(2)])))
    assert (hardware.source, hardware.world_size, hardware.driver_version, hardware.warnings) == \
        ("nvml", 2, "550.54.15", ())
    assert hardware.cards[0] == Card(name="NVIDIA H100 80GB HBM3", memory_bytes=81559 * MiB,
                                     free_bytes=(81559 - 527) * MiB, bf16=True, tflops=989.5, bandwidth_gbs=3350.0,
                                     price_usd_per_hour=2.99, compute_capability=(9, 0), link="nvlink",
                                     key="h100-sxm", index=0)


def test_mixed_pair_plans_against_the_smallest():
    hardware = hardware_from_probe(probe(FakeNvml([rtx4090(), rtx3060()])))
    assert hardware.card.name == "NVIDIA GeForce RTX 3060" and hardware.gpus_per_node == 2
    assert hardware.warnings == (
        "This machine has different GPUs (NVIDIA GeForce RTX 4090, NVIDIA GeForce RTX 3060); plans use the one "
        "with the least free memory, NVIDIA GeForce RTX 3060 (11.7 GiB free), for every GPU.",)


def test_unknown_card_has_no_rates():
    hardware = hardware_from_probe(probe(FakeNvml([FakeCard(name="NVIDIA GeForce GTX 1080 Ti", total=11 * GiB,
                                                            used=0, cc=(6, 1))])))
    card = hardware.card
    assert (card.tflops, card.bandwidth_gbs, card.price_usd_per_hour, card.bf16) == (None, None, None, False)
    assert hardware.warnings == (
        "NVIDIA GeForce GTX 1080 Ti is not in fitplan's catalog, so plans carry no speed or cost for it.",)


def test_mig_slice_is_the_gpu():
    hardware = hardware_from_probe(probe(FakeNvml([a100_mig()])), visible="MIG-bbbb")
    assert hardware.cards == (Card(name="NVIDIA A100-SXM4-80GB MIG 3g.40gb", memory_bytes=40192 * MiB,
                                   free_bytes=(40192 - 13) * MiB, bf16=True, tflops=133.7, bandwidth_gbs=1000.4,
                                   price_usd_per_hour=1.79, compute_capability=(8, 0), link="nvlink",
                                   key="a100-80gb", index=0),)


def test_cuda_visible_devices(monkeypatch):
    fake = FakeNvml([h100(i) for i in range(4)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-h100-3")
    hardware = resolve_hardware(None, None, 1, nvml=fake)
    assert [card.index for card in hardware.cards] == [2, 3]
    assert hardware.warnings == ("CUDA_VISIBLE_DEVICES=2,GPU-h100-3 leaves 2 of the 4 GPUs visible.",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(InputError, match=r"\(CUDA_VISIBLE_DEVICES hides every GPU\)"):
        resolve_hardware(None, None, 1, nvml=fake)


def test_resolve_hardware_probes_and_counts(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml([h100(i) for i in range(4)])
    assert resolve_hardware(None, None, 2, nvml=fake).world_size == 8
    assert resolve_hardware(None, 2, 1, nvml=fake).gpus_per_node == 2
    with pytest.raises(InputError) as raised:
        resolve_hardware(None, 8, 1, nvml=fake)
    assert str(raised.value) == ('--gpus 8 asks for more GPUs than this machine has (4); to plan for another '
                                 'machine name its card, e.g. --gpu "NVIDIA H100 80GB HBM3" --gpus 8.')


def test_resolve_hardware_without_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(InputError) as raised:
        resolve_hardware(None, None, 1, nvml=FakeNvml([], init_error=LibraryNotFound()))
    assert str(raised.value) == ('No NVIDIA GPU was found (no NVIDIA driver is installed: libnvidia-ml.so.1 was '
                                 'not found); name a card to plan for with --gpu, e.g. --gpu "RTX 4090".')
