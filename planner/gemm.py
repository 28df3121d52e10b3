"""The time of one GEMM on one GPU, from its shape: `gemm_seconds(m, n, k, rates)`.

Three mechanisms, each from the GPU's own numbers:
- Tile and wave quantization. cuBLAS splits the M x N output into thread-block tiles and runs them in waves of
  one tile per SM; a partial last wave costs a whole one (stas00/ml-engineering training/performance/README.md,
  "Tile and wave quantization"; NVIDIA, "Matrix Multiplication Background User's Guide", "Wave
  Quantization"). cuBLAS picks among tile shapes, so the model takes the best of `TILES`; with fewer tiles than
  SMs it splits K across SMs (CUTLASS "split-K", whose partial sums cost one extra pass over the output).
- The best large GEMM reaches the card's MAMF fraction of the peak (`planner.rates.MAMF`).
- Skinny GEMMs (LoRA's rank-r matmuls, tiny batches) are bound by reading their operands: the time is at
  least their bytes over the achievable memory bandwidth (the roofline).
"""
from __future__ import annotations

import math
from functools import lru_cache

from planner.rates import DeviceRates

# Output tiles cuBLAS chooses among on Ampere/Hopper for 16-bit GEMMs (CUTLASS's default threadblock shapes:
# 256x128, 128x128, 128x64 - cutlass/media/docs/efficient_gemm.md); ml-engineering's worked example uses 128x256.
TILES = ((256, 128), (128, 128), (128, 64))
SPLIT_K_MIN = 1024          # split-K leaves each split at least this much of K (CUTLASS split-K examples)
KERNEL_GPU_SECONDS = 3e-6   # a kernel's fixed start/drain on the GPU, ~3 us (NVIDIA Nsight timelines of tiny
                            # kernels; the host's launch cost is counted separately, in planner.layer_costs)


def gemm_seconds(m: int, n: int, k: int, rates: DeviceRates, dtype_bytes: int = 2, fp32: bool = False,
                 batch: int = 1) -> float:
    """Seconds for `batch` independent (m x k) @ (k x n) products in one kernel."""
    return _gemm_seconds(int(m), int(n), int(k), rates, dtype_bytes, fp32, int(batch))


def clear_cache() -> None:
    """Forget the timed GEMMs (after the fitted rate constants change)."""
    _gemm_seconds.cache_clear()


@lru_cache(maxsize=65536)
def _gemm_seconds(m: int, n: int, k: int, rates: DeviceRates, dtype_bytes: int, fp32: bool, batch: int) -> float:
    if min(m, n, k, batch) <= 0:
        return 0.0
    compute = _compute_seconds(m, n, k, rates, fp32, batch)
    memory = batch * (m * k + k * n + m * n) * dtype_bytes / rates.stream_bytes_per_s
    return max(compute, memory) + KERNEL_GPU_SECONDS


def _compute_seconds(m: int, n: int, k: int, rates: DeviceRates, fp32: bool, batch: int) -> float:
    per_sm = rates.matmul_flops(fp32) / rates.sms
    return min(_tiled_seconds(m, n, k, tile, rates.sms, per_sm, batch) for tile in TILES)


def _tiled_seconds(m: int, n: int, k: int, tile: tuple[int, int], sms: int, per_sm: float, batch: int) -> float:
    """Waves of tiles, each tile's full area computed (tile quantization), K split when tiles are few."""
    tiles = batch * math.ceil(m / tile[0]) * math.ceil(n / tile[1])
    splits = max(1, min(sms // tiles, k // SPLIT_K_MIN)) if tiles < sms else 1
    waves = math.ceil(tiles * splits / sms)
    seconds = waves * 2 * tile[0] * tile[1] * math.ceil(k / splits) / per_sm
    return seconds * (1 + (0.05 if splits > 1 else 0))   # split-K's reduction pass over the output


def efficiency(m: int, n: int, k: int, rates: DeviceRates, fp32: bool = False) -> float:
    """Achieved FLOP/s over the dense peak, for reports and tests."""
    peak = (rates.tflops32 if fp32 else rates.tflops16) * 1e12
    return 2 * m * n * k / gemm_seconds(m, n, k, rates, fp32=fp32) / peak
