"""The GPU catalog: every entry complete and reachable by its names, the spellings users type, and the
GPU-class memory constants."""

import pytest

from common.errors import InputError
from planner.calibration import ALLOCATOR_RESERVE_FRACTION, GPU_CLASSES, allocator_reserve_fraction, cuda_context_bytes
from planner.hardware import Hardware, hardware_from_catalog, resolve_hardware
from profiles.gpus import CATALOG, GiB, MiB, find_gpu, match_nvml_name, split_count

REQUIRED = ["RTX 3060 12GB", "RTX 4060 Ti 16GB", "RTX 3090", "RTX 3090 Ti", "RTX 4080", "RTX 4090", "RTX 5090",
            "T4", "A10G", "A10", "L4", "L40S", "RTX A6000", "RTX 6000 Ada", "V100 16GB", "V100 32GB",
            "A100 40GB", "A100 80GB", "H100 SXM", "H100 PCIe", "H200", "B200"]


def test_catalog_size_and_required_cards():
    assert len(CATALOG) >= 28
    names = [spec.name for spec in CATALOG]
    assert [name for name in REQUIRED if name not in names] == []


def test_names_and_keys_are_unique():
    keys = [spec.key for spec in CATALOG]
    names = [spec.name.lower() for spec in CATALOG]
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names)


@pytest.mark.parametrize("spec", CATALOG, ids=lambda spec: spec.key)
def test_entry_is_complete(spec):
    assert spec.source.startswith("https://")
    assert spec.memory_bytes % MiB == 0 and 8 * GiB <= spec.memory_bytes <= 200 * GiB
    assert spec.bf16 == (spec.compute_capability >= (8, 0))
    assert spec.bf16_tflops == (spec.fp16_tflops if spec.bf16 else 0.0)
    assert spec.tflops == (spec.bf16_tflops or spec.fp16_tflops) > 0
    assert 200 <= spec.mem_bandwidth_gbs <= 10_000
    assert 0 < spec.price_usd_per_hour < 10 and spec.price_basis in ("on-demand cloud", "community cloud")
    assert spec.key == spec.key.lower() and " " not in spec.key


@pytest.mark.parametrize("spec", CATALOG, ids=lambda spec: spec.key)
def test_every_spelling_finds_its_entry(spec):
    for name in (spec.name, spec.key, spec.name.upper(), spec.name.replace(" ", "-"), *spec.aliases):
        assert find_gpu(name) == (spec, 1), name
    for alias in (a for a in spec.aliases if a.startswith(("NVIDIA", "Tesla"))):
        assert match_nvml_name(alias, spec.memory_bytes) is spec, alias


@pytest.mark.parametrize("text, key, count", [
    ("RTX 4090", "rtx-4090", 1),
    ("rtx4090", "rtx-4090", 1),
    ("4090", "rtx-4090", 1),
    ("a100-80gb", "a100-80gb", 1),
    ("A100 80GB", "a100-80gb", 1),
    ("h100x8", "h100-sxm", 8),
    ("8xH100", "h100-sxm", 8),
    ("8 x H100", "h100-sxm", 8),
    ("H100 x 8", "h100-sxm", 8),
    ("2x rtx 3090", "rtx-3090", 2),
    ("4090*4", "rtx-4090", 4),
    ("NVIDIA GeForce RTX 4090", "rtx-4090", 1),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb", 1),
    ("NVIDIA H100 80GB HBM3", "h100-sxm", 1),
    ("Tesla T4", "t4", 1),
    ("3090", "rtx-3090", 1),            # not the 3090 Ti
    ("3090 ti", "rtx-3090-ti", 1),
    ("4080", "rtx-4080", 1),            # not the 4080 SUPER
    ("3060", "rtx-3060", 1),
    ("4060ti", "rtx-4060-ti-16gb", 1),
    ("a6000", "rtx-a6000", 1),
    ("6000 ada", "rtx-6000-ada", 1),
    ("L40S", "l40s", 1),
    ("l40", "l40", 1),
    ("L4", "l4", 1),
    ("a10", "a10", 1),
    ("A10G", "a10g", 1),
    ("h100 pcie", "h100-pcie", 1),
    ("H200", "h200", 1),
    ("b200x8", "b200", 8),
    ("v100 32gb", "v100-32gb", 1),
    ("NVIDIA GeForce RTX 4090 D", "rtx-4090", 1),   # a longer name holds the catalog's words
])
def test_find_gpu_spellings(text, key, count):
    spec, found = find_gpu(text)
    assert (spec.key, found) == (key, count)


def test_split_count():
    assert split_count("RTX 4090") == ("RTX 4090", 1)   # the X of RTX is no count
    assert split_count("h100x8") == ("h100", 8)
    assert split_count(" 8 × A100 80GB ") == ("A100 80GB", 8)
    with pytest.raises(InputError, match="give a count from 1 to 4096"):
        split_count("0xh100")


@pytest.mark.parametrize("text, message", [
    ("rtx 9090", 'Unknown GPU "rtx 9090" (did you mean RTX 5090, RTX 4090 or RTX 3090?); '
                 "`fitplan gpus --catalog` lists the cards fitplan knows."),
    ("rtx 4060", 'Unknown GPU "rtx 4060" (did you mean RTX 4060 Ti 16GB, RTX 4090 or RTX 4080?); '
                 "`fitplan gpus --catalog` lists the cards fitplan knows."),
    ("banana", 'Unknown GPU "banana"; `fitplan gpus --catalog` lists the cards fitplan knows.'),
    ("a100", 'GPU "a100" could be A100 40GB or A100 80GB; name one, e.g. --gpu "A100 80GB".'),
    ("v100x2", 'GPU "v100x2" could be V100 16GB or V100 32GB; name one, e.g. --gpu "V100 32GB".'),
    ("--", '"--" names no GPU; try e.g. --gpu "RTX 4090" (`fitplan gpus --catalog` lists them).'),
])
def test_unknown_or_ambiguous_names_say_what_to_do(text, message):
    with pytest.raises(InputError) as raised:
        find_gpu(text)
    assert str(raised.value) == message


def test_known_nvml_totals():
    assert find_gpu("RTX 4090")[0].memory_bytes == 25757220864
    assert find_gpu("H100 SXM")[0].memory_bytes == 81559 * MiB
    assert find_gpu("A100 80GB")[0].memory_bytes == 80 * GiB
    assert find_gpu("T4")[0].memory_bytes == 15360 * MiB
    assert find_gpu("RTX 5090")[0].memory_exact is False


@pytest.mark.parametrize("name, memory, key", [
    ("NVIDIA GeForce RTX 4090", 25757220864, "rtx-4090"),
    ("NVIDIA GeForce RTX 3060", 12 * GiB, "rtx-3060"),
    ("NVIDIA GeForce RTX 4060 Ti", 8 * GiB, "rtx-4060-ti-16gb"),   # same chip; the probe keeps its 8 GB
    ("NVIDIA A100-PCIE-40GB", 40536 * MiB, "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", 80 * GiB, "a100-80gb-pcie"),
    ("NVIDIA H100 PCIe", 81559 * MiB, "h100-pcie"),
    ("NVIDIA H100 NVL", 95830 * MiB, "h100-nvl"),
    ("NVIDIA H200 NVL", 143771 * MiB, "h200-nvl"),
    ("NVIDIA RTX 6000 Ada Generation", 48 * GiB, "rtx-6000-ada"),
    ("NVIDIA RTX A6000", 48 * GiB, "rtx-a6000"),
    ("NVIDIA L40S", 46068 * MiB, "l40s"),
    ("Tesla V100-SXM2-32GB", 32 * GiB, "v100-32gb"),
    ("Tesla V100S-PCIE-32GB", 32 * GiB, "v100-32gb"),
    (b"NVIDIA L4".decode(), 23034 * MiB, "l4"),
])
def test_match_nvml_name(name, memory, key):
    assert match_nvml_name(name, memory).key == key


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4060", "Quadro RTX 6000", "NVIDIA GH200 480GB",
                                  "NVIDIA GeForce GTX 1080 Ti", "", "NVIDIA"])
def test_match_nvml_name_unknown(name):
    assert match_nvml_name(name, 8 * GiB) is None


def test_to_dict_is_json_ready():
    record = find_gpu("RTX 4090")[0].to_dict()
    assert record["compute_capability"] == [8, 9] and record["memory_bytes"] == 25757220864
    assert record["aliases"] == ["NVIDIA GeForce RTX 4090"]


# --- Hardware from the catalog ---------------------------------------------------------------------
def test_hardware_from_catalog_counts():
    hardware = hardware_from_catalog("h100x8", nodes=2)
    assert (hardware.source, hardware.gpus_per_node, hardware.nodes, hardware.world_size) == ("catalog", 8, 2, 16)
    card = hardware.card
    assert (card.name, card.memory_bytes, card.free_bytes, card.bf16, card.tflops, card.bandwidth_gbs,
            card.price_usd_per_hour, card.compute_capability, card.link) == \
        ("H100 SXM", 81559 * MiB, 81559 * MiB, True, 989.5, 3350.0, 2.99, (9, 0), "nvlink")


def test_resolve_hardware_named_card_and_count():
    assert resolve_hardware("RTX 4090", 4, 1).gpus_per_node == 4
    assert resolve_hardware("rtx 4090 x4", 4, 1).gpus_per_node == 4
    with pytest.raises(InputError, match="says 8 GPUs but --gpus says 4"):
        resolve_hardware("h100x8", 4, 1)
    with pytest.raises(InputError, match="--nodes must be at least 1"):
        resolve_hardware("T4", None, 0)
    with pytest.raises(InputError, match="--gpus must be at least 1"):
        resolve_hardware("T4", 0, 1)
    assert isinstance(resolve_hardware("t4", None, 1), Hardware)


# --- GPU-class memory constants ---------------------------------------------------------------------
def test_cuda_context_bytes_per_class():
    ampere = 500 * MiB + 4 * MiB * 2 + 16 * 1024 * 8
    hopper = 500 * MiB + 32 * MiB
    assert cuda_context_bytes((8, 0)) == cuda_context_bytes("8.6") == cuda_context_bytes("RTX 4090") == ampere
    assert cuda_context_bytes("NVIDIA H100 80GB HBM3") == cuda_context_bytes("h100x8") == hopper
    assert cuda_context_bytes("T4") == 400 * MiB + 4 * MiB * 2 + 16 * 1024 * 8
    assert cuda_context_bytes(None) == cuda_context_bytes("unknown card") == 512 * MiB + 32 * MiB
    assert all(0.3 * GiB <= cuda_context_bytes((major, 0)) <= GiB for major in GPU_CLASSES)


def test_allocator_reserve_fraction_default():
    assert ALLOCATOR_RESERVE_FRACTION == allocator_reserve_fraction() == allocator_reserve_fraction("A100 80GB") == 0.10


@pytest.mark.parametrize("text, key, count", [("a100-40gbx4", "A100 40GB", 4), ("l40sx4", "L40S", 4),
                                              ("a100-80gbx8", "A100 80GB", 8), ("l40s", "L40S", 1)])
def test_count_after_a_name_ending_in_a_letter(text, key, count):
    spec, n = find_gpu(text)
    assert (spec.name, n) == (key, count)
