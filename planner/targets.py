"""Search targets from the GPU catalog or from what NVML found."""
from __future__ import annotations

from planner.calibration import overhead_for
from planner.search import Target
from profiles.gpus import CATALOG as GPU_CATALOG, GpuSpec

def link_of(spec: GpuSpec) -> str:
    return "nvlink" if spec.nvlink else "pcie"


def target_from_spec(spec: GpuSpec, gpus_per_node: int = 1, nodes: int = 1, free_bytes: int | None = None,
                     name: str | None = None) -> Target:
    return Target(name=name or spec.name, memory_bytes=spec.memory_bytes,
                  free_bytes=spec.memory_bytes if free_bytes is None else free_bytes,
                  gpus_per_node=gpus_per_node, nodes=nodes, bf16=spec.bf16, tflops=spec.tflops,
                  bandwidth_gbs=spec.mem_bandwidth_gbs, price_usd_per_hour=spec.price_usd_per_hour,
                  link=link_of(spec), overhead=overhead_for(spec.name, spec.compute_capability))


def catalog_targets(gpus_per_node: int = 1, nodes: int = 1) -> list[Target]:
    """Every catalog card, smallest memory first (to suggest the nearest bigger card)."""
    cards = sorted(GPU_CATALOG, key=lambda g: (g.memory_bytes, g.price_usd_per_hour))
    return [target_from_spec(card, gpus_per_node, nodes) for card in cards]


# Used to rank plans on a card missing from the catalog; its plans then report no speed or cost.
NOMINAL_TFLOPS, NOMINAL_BANDWIDTH_GBS = 100.0, 1000.0


def target_from_hardware(hw) -> Target:
    """The search target for a `planner.hardware.Hardware`: its GPU with the least free memory."""
    gpu = hw.gpu
    known = gpu.tflops is not None and gpu.bandwidth is not None
    link = "pcie"
    if gpu.key:
        link = next((link_of(card) for card in GPU_CATALOG if card.key == gpu.key), "pcie")
    return Target(name=gpu.name, memory_bytes=gpu.memory_bytes, free_bytes=gpu.free_bytes,
                  gpus_per_node=hw.gpus_per_node, nodes=hw.nodes, bf16=gpu.bf16,
                  tflops=gpu.tflops if known else NOMINAL_TFLOPS,
                  bandwidth_gbs=gpu.bandwidth if known else NOMINAL_BANDWIDTH_GBS,
                  price_usd_per_hour=gpu.price, link=link, rates_known=known,
                  overhead=overhead_for(gpu.name, gpu.compute_capability))
