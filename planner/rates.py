"""What one GPU achieves, as the speed model needs it: `DeviceRates`.

A datasheet gives peaks; training reaches less, and how much less depends on the architecture and on what a
kernel does. This module holds the per-card facts (from the GPU catalog) and the achievable fractions, each
with its source. Fractions fitted on the tuning half of `benchmarks/data/throughput.csv` say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.hardware import NOMINAL_BANDWIDTH_GBS, NOMINAL_TFLOPS, Card
from profiles.gpus import CATALOG, GpuSpec

# Maximum achievable matmul FLOPS (best cuBLAS bf16 GEMM over a shape sweep) as a fraction of the dense peak:
# stas00/ml-engineering compute/accelerator/README.md, "Maximum Achievable Matmul FLOPS comparison table"
# (A100 SXM 271.2/312, A100 PCIe 252.9/312, H100 SXM 794.5/989 "H200 is the same", B200 1745/2250).
MAMF = {"a100-40gb": 0.869, "a100-80gb": 0.869, "a100-80gb-pcie": 0.811, "h100-sxm": 0.803, "h200": 0.803,
        "b200": 0.776}
# GeForce cards boost past their rated clock, so large GEMMs reach about the FP32-accumulate datasheet rate:
# RTX 4090 fp16 matmul n=8192 158.6 TFLOP/s against 165.2 (mli/transformers-benchmarks#4); RTX 5090 bf16
# n=8192 236 TFLOP/s against 209.5 (zzc0721/torch-performance-test-data#15). Other GeForce cards take their
# generation's measured sibling (Ampere and Turing: the 4090's fraction) - an assumption.
GEFORCE_MAMF = {"rtx-2080-ti": 0.96, "rtx-3060": 0.96, "rtx-3080": 0.96, "rtx-3090": 0.96, "rtx-3090-ti": 0.96,
                "rtx-4060-ti-16gb": 0.96, "rtx-4080": 0.96, "rtx-4080-super": 0.96, "rtx-4090": 0.96,
                "rtx-5080": 1.12, "rtx-5090": 1.12}
MAMF.update(GEFORCE_MAMF)
# Other cards take their architecture's measured sibling; datacenter PCIe and workstation cards the A100 PCIe's
# (the closest measured power-limited PCIe card) - an assumption, not a measurement.
MAMF_BY_ARCH = {"volta": 0.811, "turing": 0.811, "ampere": 0.811, "ada": 0.811, "hopper": 0.803,
                "blackwell": 0.776, "blackwell-consumer": 0.811}
# FlashAttention kernels as a fraction of the dense peak at long sequences. FlashAttention-2 on A100: forward up
# to 73%, backward up to 63% (Dao, arXiv:2307.08691, sec. 4.1). On H100 the same FA2 kernels (PyTorch SDPA's
# flash backend) reach ~35% (Shah et al., FlashAttention-3, arXiv:2407.08608, abstract); backward scaled by
# A100's backward/forward ratio. Ada/Ampere consumer cards run the same sm80 kernels as A100 (ratio kept,
# against their FP32-accumulate peak). Volta/Turing have no FA2: SDPA runs the memory-efficient kernel, taken
# at half of FA2 (PyTorch 2.0 SDPA blog reports it well behind flash) - an assumption.
ATTENTION_EFFICIENCY = {"volta": (0.36, 0.31), "turing": (0.36, 0.31), "ampere": (0.73, 0.63),
                        "ada": (0.73, 0.63), "hopper": (0.35, 0.30), "blackwell": (0.35, 0.30),
                        "blackwell-consumer": (0.73, 0.63)}
ARCH_BY_CC = {(7, 0): "volta", (7, 5): "turing", (8, 0): "ampere", (8, 6): "ampere", (8, 7): "ampere",
              (8, 9): "ada", (9, 0): "hopper", (10, 0): "blackwell", (12, 0): "blackwell-consumer"}

# Fitted on the tuning half (benchmarks/speed.py --fit; see benchmarks/results/SPEED.md): the share of the MAMF
# a training step's tensor-core kernels keep (clocks under sustained power draw, cuBLAS heuristics on training
# shapes), per generation the tuning data measures (A100: Ampere; H100: Hopper), and the share of the datasheet
# bandwidth streaming kernels (elementwise, optimizer, dequantization) reach. Cards of other generations take
# the nearest measured one: Volta, Turing, Ampere and Ada consumer cards Ampere's, Blackwell Hopper's.
MATMUL_IN_TRAINING = {"ampere": 0.85, "hopper": 0.80}
STREAM_EFFICIENCY = 0.70
FITTED_GENERATION = {"volta": "ampere", "turing": "ampere", "ampere": "ampere", "ada": "ampere",
                     "blackwell-consumer": "ampere", "hopper": "hopper", "blackwell": "hopper"}


# Part of that share is the power cap: the A100 sustains 1305 of its 1410 MHz boost at its power limit under
# dense math (the clock NVIDIA used for A100's HPL Rpeak; glennklockwood.com/garden/peak-FLOPS, "Rpeak").
# GeForce cards train below their cap (2 x RTX 4090 "peaked at 400 watts per card" of 450 W,
# AnswerDotAI/fsdp_qlora benchmarks_03_2024.md), so they keep the rest of the share only.
A100_SUSTAINED_CLOCK = 1305 / 1410


def in_training(arch: str, key: str | None = None) -> float:
    share = MATMUL_IN_TRAINING[FITTED_GENERATION.get(arch, "ampere")]
    return share / A100_SUSTAINED_CLOCK if key in GEFORCE_MAMF else share


@dataclass(frozen=True)
class DeviceRates:
    """One GPU's peaks and achievable fractions."""

    name: str
    tflops16: float              # dense tensor TFLOP/s, FP32 accumulate (bf16, else fp16)
    tflops32: float              # non-tensor FP32 TFLOP/s
    bandwidth_gbs: float         # memory bandwidth, GB/s
    sms: int
    arch: str
    mamf: float                  # best GEMM / dense peak
    attention: tuple[float, float]   # FlashAttention forward, backward: fraction of the dense peak
    pcie_gen: int = 4
    nvlink_gbs: float = 0.0
    nvlink_group: int = 0
    pcie_p2p: bool = True
    key: str | None = None

    def matmul_flops(self, fp32: bool = False) -> float:
        """FLOP/s a large training GEMM sustains: the MAMF fraction of the peak, kept in training."""
        peak = self.tflops32 if fp32 else self.tflops16
        return peak * 1e12 * self.mamf * in_training(self.arch, self.key)

    @property
    def stream_bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9 * STREAM_EFFICIENCY


def spec_of(card: Card) -> GpuSpec | None:
    return next((spec for spec in CATALOG if spec.key == card.key), None) if card.key else None


@lru_cache(maxsize=256)
def rates_for(card: Card) -> DeviceRates:
    """The rates of a plan's card: catalog facts scaled to its share (a MIG slice), nominal when unknown."""
    spec = spec_of(card)
    arch = ARCH_BY_CC.get(tuple(card.compute_capability or (8, 0)), "ampere")
    if spec is None:
        return DeviceRates(card.name, card.tflops or NOMINAL_TFLOPS, (card.tflops or NOMINAL_TFLOPS) / 8,
                           card.bandwidth_gbs or NOMINAL_BANDWIDTH_GBS, 108, arch, MAMF_BY_ARCH[arch],
                           ATTENTION_EFFICIENCY[arch])
    share = (card.tflops or spec.tflops) / spec.tflops        # a MIG slice has a share of the SMs
    return DeviceRates(card.name, card.tflops or spec.tflops, spec.fp32_tflops * share,
                       card.bandwidth_gbs or spec.mem_bandwidth_gbs, max(1, round(spec.sms * share)), arch,
                       MAMF.get(spec.key, MAMF_BY_ARCH[arch]), ATTENTION_EFFICIENCY[arch], spec.pcie_gen,
                       spec.nvlink_gbs, spec.nvlink_group, spec.pcie_p2p, spec.key)
