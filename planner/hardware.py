"""The hardware a plan is made for: the GPUs of this machine (NVML) or catalog cards named with --gpu.

Two shapes: `Card`, one GPU as a plan sees it (its memory, free memory, rates, link and the constants of
memory outside PyTorch's allocator), and `Hardware`, the card plans are made against, how many per node and
how many nodes. A catalog entry (`profiles.gpus.GpuSpec`) and an NVML reading (`planner.nvml.ProbedGpu`)
both become a `Card`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from functools import cached_property

from common.errors import InputError, opt
from common.units import GiB
from planner.calibration import Overhead, overhead_for
from planner.nvml import Probe, ProbedGpu, probe
from profiles.gpus import GpuSpec, find_gpu, match_nvml_name

# Rates used to rank plans on a card missing from the catalog; its plans then report no speed or cost.
NOMINAL_TFLOPS, NOMINAL_BANDWIDTH_GBS = 100.0, 1000.0


@dataclass(frozen=True)
class Card:
    """One GPU as a plan sees it. Rates are None for a probed card fitplan's catalog lacks."""

    name: str
    memory_bytes: int
    free_bytes: int                       # what a plan may use: the whole card for a catalog card
    bf16: bool
    compute_capability: tuple[int, int] | None = None
    tflops: float | None = None           # dense 16-bit tensor TFLOP/s (bf16, else fp16)
    bandwidth_gbs: float | None = None    # memory bandwidth, GB/s
    price_usd_per_hour: float | None = None
    link: str = "pcie"                    # between the GPUs of a node: "nvlink" or "pcie"
    key: str | None = None                # catalog key, when known
    index: int | None = None              # NVML index of a probed card

    @classmethod
    def from_spec(cls, spec: GpuSpec) -> "Card":
        return cls(name=spec.name, memory_bytes=spec.memory_bytes, free_bytes=spec.memory_bytes, bf16=spec.bf16,
                   compute_capability=spec.compute_capability, tflops=spec.tflops,
                   bandwidth_gbs=spec.mem_bandwidth_gbs, price_usd_per_hour=spec.price_usd_per_hour,
                   link="nvlink" if spec.nvlink else "pcie", key=spec.key)

    @classmethod
    def from_probe(cls, gpu: ProbedGpu, memory_bytes: int | None = None, free_bytes: int | None = None,
                   name: str | None = None, compute_share: float = 1.0, memory_share: float = 1.0) -> "Card":
        """The shares: the fractions of the card's compute and memory bandwidth a MIG slice gets."""
        spec = match_nvml_name(gpu.name, gpu.memory_bytes)
        return cls(name=name or gpu.name, memory_bytes=memory_bytes or gpu.memory_bytes,
                   free_bytes=gpu.free_bytes if free_bytes is None else free_bytes, bf16=gpu.bf16,
                   compute_capability=gpu.compute_capability or (spec.compute_capability if spec else None),
                   tflops=round(spec.tflops * compute_share, 1) if spec else None,
                   bandwidth_gbs=round(spec.mem_bandwidth_gbs * memory_share, 1) if spec else None,
                   price_usd_per_hour=spec.price_usd_per_hour if spec else None,
                   link="nvlink" if spec and spec.nvlink else "pcie", key=spec.key if spec else None,
                   index=gpu.index)

    @property
    def rates_known(self) -> bool:
        return self.tflops is not None and self.bandwidth_gbs is not None

    @property
    def ranking_tflops(self) -> float:
        return self.tflops if self.tflops is not None else NOMINAL_TFLOPS

    @property
    def ranking_bandwidth_gbs(self) -> float:
        return self.bandwidth_gbs if self.bandwidth_gbs is not None else NOMINAL_BANDWIDTH_GBS

    @property
    def flash_attention(self) -> bool:
        """FlashAttention-2 kernels need Ampere (compute capability 8.0) or newer."""
        return self.compute_capability is None or self.compute_capability >= (8, 0)

    @cached_property
    def overhead(self) -> Overhead:
        return overhead_for(self.name, self.compute_capability)


@dataclass(frozen=True)
class Hardware:
    """The card plans are made against (the one with the least free memory), per node, over nodes."""

    card: Card
    gpus_per_node: int = 1
    nodes: int = 1
    source: str = "catalog"               # "nvml" | "catalog"
    cards: tuple[Card, ...] = ()          # every GPU of a probed node
    warnings: tuple[str, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    def with_counts(self, gpus_per_node: int | None = None, nodes: int | None = None) -> "Hardware":
        return replace(self, gpus_per_node=gpus_per_node or self.gpus_per_node, nodes=nodes or self.nodes)


def catalog_hardware(spec: GpuSpec, gpus_per_node: int = 1, nodes: int = 1) -> Hardware:
    return Hardware(card=Card.from_spec(spec), gpus_per_node=gpus_per_node, nodes=nodes)


def hardware_from_catalog(text: str, nodes: int = 1, gpus: int | None = None) -> Hardware:
    """Hardware for a named card: 'RTX 4090', 'h100x8' (8 per node); `gpus` overrides the count."""
    spec, count = find_gpu(text)
    if gpus is not None and count != 1 and gpus != count:
        raise InputError(f'{opt("gpu")} "{text}" says {count} GPUs but {opt("gpus")} says {gpus}; '
                         "give the count once.")
    return catalog_hardware(spec, gpus or count, _nodes(nodes))


def hardware_from_probe(result: Probe, nodes: int = 1, visible: str | None = None,
                        count: int | None = None) -> Hardware:
    """Hardware from what NVML found; `visible` is CUDA_VISIBLE_DEVICES, if set; `count` keeps the first GPUs.
    Raises when no GPU is left."""
    probed, warnings = _visible(result.gpus, visible)
    cards: list[Card] = []
    for gpu in probed:
        cards += _mig_cards(gpu, visible) if gpu.mig_mode else [Card.from_probe(gpu)]
    if not cards:
        reason = result.error or "CUDA_VISIBLE_DEVICES hides every GPU"
        raise InputError(f"No NVIDIA GPU was found ({reason}); name a card to plan for with {opt('gpu')}, "
                         f'e.g. {opt("gpu")} "RTX 4090".')
    if count is not None and count > len(cards):
        raise InputError(f"{opt('gpus')} {count} asks for more GPUs than this machine has ({len(cards)}); to plan "
                         f"for another machine name its card, e.g. {opt('gpu')} \"{cards[0].name}\" "
                         f"{opt('gpus')} {count}.")
    cards = cards[:count]
    planned = min(cards, key=lambda card: (card.free_bytes, card.memory_bytes))
    notes = tuple(dict.fromkeys([*result.warnings, *warnings, *_hardware_warnings(cards, planned)]))
    return Hardware(card=planned, gpus_per_node=len(cards), nodes=_nodes(nodes), source="nvml", cards=tuple(cards),
                    warnings=notes, driver_version=result.driver_version, cuda_version=result.cuda_version)


def resolve_hardware(gpu: str | None, gpus: int | None = None, nodes: int = 1, *, nvml=None) -> Hardware:
    """A named catalog card, else this machine's GPUs (NVML). `nvml`: a fake, for tests."""
    if gpus is not None and gpus < 1:
        raise InputError(f"{opt('gpus')} must be at least 1, got {gpus}.")
    if gpu:
        return hardware_from_catalog(gpu, nodes, gpus)
    return hardware_from_probe(probe(nvml), nodes, os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)


def _nodes(nodes: int) -> int:
    if nodes < 1:
        raise InputError(f"{opt('nodes')} must be at least 1, got {nodes}.")
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


def _mig_cards(gpu: ProbedGpu, visible: str | None) -> list[Card]:
    """A GPU in MIG mode offers a process one slice: the one CUDA_VISIBLE_DEVICES names, else the first."""
    wanted = [s for s in gpu.mig_slices if visible and s.uuid and s.uuid in visible] or gpu.mig_slices[:1]
    slices = []
    for mig in wanted:
        memory_share = mig.memory_bytes / gpu.memory_bytes
        compute = re.search(r"(\d+)g\.", mig.name)   # '3g.40gb': 3 of the card's 7 compute slices
        compute_share = int(compute.group(1)) / 7 if compute else memory_share
        slices.append(Card.from_probe(gpu, memory_bytes=mig.memory_bytes, free_bytes=mig.free_bytes,
                                         name=mig.name, memory_share=memory_share, compute_share=compute_share))
    return slices


def _hardware_warnings(cards: list[Card], planned: Card) -> list[str]:
    lines = []
    names = list(dict.fromkeys(card.name for card in cards))
    if len(names) > 1:
        lines.append(f"This machine has different GPUs ({', '.join(names)}); plans use the one with the "
                     f"least free memory, {planned.name} ({planned.free_bytes / GiB:.1f} GiB free), for every GPU.")
    for card in cards:
        if not card.rates_known:
            lines.append(f"{card.name} is not in fitplan's catalog, so plans carry no speed or cost for it.")
    return lines
