"""Step time, throughput and where the time goes, from mechanisms: `step_speed`.

One optimizer step on one GPU is `grad_accum` micro-batches and a step:
- each micro-batch's GPU time by mechanism (`planner.layer_costs`): matmuls by shape, attention by kernel and
  sequence, elementwise traffic, the LoRA branch, QLoRA's dequantization, and checkpointing's recomputed
  forward; never less than the host's time to launch its kernels (eager PyTorch runs ahead of the GPU only
  as fast as Python dispatches);
- communication (`planner.comm`) over the plan's links (`planner.interconnect`), hidden behind the pass it
  overlaps with where the engine overlaps it, exposed where it does not or is longer than that pass;
- the optimizer step, bandwidth-bound over the states it touches (`planner.optimizers` step_bytes_per_param),
  on the CPU with offload; gradient clipping; the training loop's fixed costs.
The breakdown sums to the step time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from planner.comm import Traffic, traffic
from planner.config import TrainConfig
from planner.enums import Method, Offload, Precision
from planner.hardware import Card
from planner.interconnect import Links, links_for
from planner.layer_costs import MicroBatchCosts, micro_batch_costs
from planner.optimizers import record
from planner.params import ParamCounts, trainable_tensors
from planner.rates import DeviceRates, rates_for
from planner.stack import HF, Stack, adapters_fp32, compute_bytes
from profiles.spec import ModelSpec

PARTS = ("matmul", "attention", "elementwise", "lora", "dequant", "recompute", "communication", "offload",
         "optimizer", "fixed")
# Fitted on the tuning half (benchmarks/speed.py): the share of communication time that still slows compute
# when hidden behind it (NCCL's kernels take SMs and memory bandwidth while they run).
OVERLAP_TAX = 0.20
# The training loop outside the GPU's work, estimates: per micro-batch the DataLoader's next batch (collated in
# the main process: transformers' dataloader_num_workers=0), its host-to-device copy and Accelerate's
# accumulation bookkeeping; per step the scheduler, zero_grad and the loss's .item() sync for logging.
LOOP_MICRO_S, LOOP_STEP_S = 1e-3, 3e-3
# Optimizer launches: torch's foreach AdamW/SGD issue ~10 multi-tensor kernels per step (~20 us each) plus
# ~2 us of list handling per tensor; per-tensor optimizers (bitsandbytes, Adafactor) ~30 us per tensor
# (a Python call and a kernel each). Clipping: foreach norms (~2 us per tensor) and the scale. Estimates.
FOREACH_KERNELS, FOREACH_KERNEL_S, FOREACH_TENSOR_S, PER_TENSOR_S = 10, 20e-6, 2e-6, 30e-6
CLIP_PASSES = 3            # clip_grad_norm_ reads every gradient for the norm, then reads and writes it to scale
# CPU Adam (DeepSpeed CPUAdam, FSDP's CPU optimizer) is bound by host memory: fp32 parameter, gradient and two
# states read, three written (28 bytes per parameter), at ~100 GB/s per node (8-channel DDR4-3200 peaks at
# 204.8 GB/s per socket; about half for a read-modify-write stream), shared by the node's GPUs. Estimate.
CPU_ADAM_BYTES, HOST_MEMORY_GBS = 28, 100.0


@dataclass(frozen=True)
class Speed:
    step_time_s: float                           # one optimizer step: micro-batch x grad_accum on every GPU
    tokens_per_s: float                          # over all GPUs
    breakdown: tuple[tuple[str, float], ...] = ()   # seconds of the step by mechanism (PARTS), summing to it

    @property
    def seconds(self) -> dict[str, float]:
        return dict(self.breakdown)

    def shares(self) -> dict[str, float]:
        """Each mechanism's share of the step, largest first."""
        total = sum(t for _, t in self.breakdown) or 1.0
        return dict(sorted(((k, t / total) for k, t in self.breakdown), key=lambda kv: -kv[1]))


def step_speed(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, card: Card,
               interconnect: str | None = None, stack: Stack = HF) -> Speed:
    """The speed of `cfg` on `card` (cfg.gpus per node, cfg.nodes), over `interconnect` (None: the card's
    defaults: NVLink boards and InfiniBand, else PCIe and Ethernet)."""
    rates = rates_for(card)
    return predict(spec, cfg, counts, rates, links_for(rates, cfg.gpus, cfg.nodes, interconnect), stack)


def predict(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, rates: DeviceRates, links: Links,
            stack: Stack = HF) -> Speed:
    mb = micro_batch_costs(spec, cfg, rates, stack)
    share, matmul_share = stack.recompute(cfg)
    recompute = mb.recompute(share, matmul_share)
    forward, backward = mb.forward, _backward(mb, cfg) + recompute
    accum = cfg.grad_accum
    parts = {
        "matmul": accum * (mb.matmul_forward + mb.matmul_backward),
        "attention": accum * (mb.attention_forward + mb.attention_backward),
        "elementwise": accum * (mb.elementwise_forward + mb.elementwise_backward),
        "lora": accum * (mb.lora_forward + mb.lora_backward),
        "dequant": accum * mb.dequant_pass * (2 if cfg.method is Method.QLORA else 0),
        "recompute": accum * recompute,
        "communication": _communication(traffic(spec, cfg, counts, stack), links, forward, backward, accum),
        "offload": _offload(spec, cfg, counts, links, stack, forward, backward),
        "optimizer": _optimizer(spec, cfg, counts, rates, stack),
        "fixed": accum * (max(0.0, mb.host - forward - backward) + LOOP_MICRO_S) + LOOP_STEP_S,
    }
    step = sum(parts.values())
    tokens = cfg.micro_batch * cfg.seq_len * accum * cfg.world_size
    return Speed(step_time_s=step, tokens_per_s=tokens / step, breakdown=tuple(parts.items()))


def _backward(mb: MicroBatchCosts, cfg: TrainConfig) -> float:
    dequant = mb.dequant_pass if cfg.method is Method.QLORA else 0.0    # bitsandbytes dequantizes again
    return mb.matmul_backward + mb.attention_backward + mb.elementwise_backward + mb.lora_backward + dequant


def _communication(t: Traffic, links: Links, forward: float, backward: float, accum: int) -> float:
    """Exposed communication of one step, plus the tax of what hides behind compute."""
    def secs(nbytes: float, collectives: float = 0) -> float:
        return links.seconds(nbytes, collectives, t.within_node)

    def micro_batch(extra: float, extra_tail: float, extra_collectives: int) -> float:
        fwd, bwd = secs(t.forward), secs(t.backward + extra)
        hidden = min(fwd, forward) + min(bwd, backward)
        exposed = max(0.0, fwd - forward) + max(0.0, bwd - backward)
        fixed = secs(t.tail + extra_tail, t.collectives + extra_collectives)
        return exposed + fixed + OVERLAP_TAX * hidden

    across = links.seconds(t.across, 1 if t.across else 0) if t.across else 0.0
    sync = micro_batch(t.sync, t.sync_tail, t.sync_collectives) + across
    normal = micro_batch(0.0, 0.0, 0) if accum > 1 else 0.0
    return sync + (accum - 1) * normal + secs(t.step, t.step_collectives)


def _offload(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, links: Links, stack: Stack,
             forward: float, backward: float) -> float:
    """Host-device copies and the CPU optimizer step. Parameter offload copies each micro-batch's shard in
    for the forward and again for the backward, prefetched behind compute like the gathers."""
    if cfg.offload is Offload.NONE:
        return 0.0
    shards = _state_shards(cfg, stack)
    local = counts.trainable / shards
    grad_bytes = 4 if adapters_fp32(cfg) or cfg.precision is not Precision.BF16_TRUE else 2
    per_gpu_host = HOST_MEMORY_GBS * 1e9 / cfg.gpus
    step = local * CPU_ADAM_BYTES / per_gpu_host + local * (grad_bytes + 2) / links.host_bytes_per_s
    if cfg.offload is not Offload.PARAMS:
        return step
    params = (counts.quantized * 0.51 + (counts.total - counts.quantized) * compute_bytes(cfg)) / shards
    copy = params / links.host_bytes_per_s
    exposed = max(0.0, copy - forward) + max(0.0, copy - backward) + OVERLAP_TAX * (min(copy, forward)
                                                                                    + min(copy, backward))
    return step + cfg.grad_accum * exposed


def _state_shards(cfg: TrainConfig, stack: Stack) -> int:
    if not cfg.sharding.shards_states:
        return 1
    return min(stack.shard_group or cfg.world_size, cfg.world_size)


@lru_cache(maxsize=1024)
def _tensor_count(spec: ModelSpec, cfg: TrainConfig) -> int:
    return sum(n for _, n in trainable_tensors(spec, cfg))


def _optimizer(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, rates: DeviceRates, stack: Stack) -> float:
    """The GPU optimizer step over this rank's states, and gradient clipping; 0 on the GPU when offloaded."""
    rec = record(cfg.optimizer)
    local = counts.trainable / _state_shards(cfg, stack)
    tensors = _tensor_count(spec, cfg.with_(gpus=1, nodes=1, grad_accum=1, micro_batch=1))
    grad_bytes = 4 if adapters_fp32(cfg) or cfg.precision is not Precision.BF16_TRUE else 2
    clip = CLIP_PASSES * local * grad_bytes / rates.stream_bytes_per_s + tensors * FOREACH_TENSOR_S
    if cfg.offload is not Offload.NONE:
        return clip
    foreach = rec.step_temporary == "foreach"
    host = FOREACH_KERNELS * FOREACH_KERNEL_S + tensors * FOREACH_TENSOR_S if foreach else tensors * PER_TENSOR_S
    return local * rec.step_bytes_per_param / rates.stream_bytes_per_s + host + clip
