"""Step time and throughput from FLOPs, memory traffic and communication.

A roofline-style model, not a measurement: matmul FLOPs at an achievable fraction of the card's dense
16-bit peak, QLoRA's dequantisation and the optimizer step at memory bandwidth, gradient and parameter
collectives at the link's bandwidth. It ranks plans; it does not promise seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.config import TrainConfig
from planner.enums import Method, Offload, Sharding
from planner.optimizers import record
from planner.params import ParamCounts
from planner.states import trainable_bytes
from profiles.spec import ModelSpec

# Model FLOPs utilisation a well-tuned Hugging Face fine-tune reaches (large matmuls, fused attention);
# published LoRA/QLoRA throughput on A100/H100 sits at 35-50% of dense peak.
MFU = 0.40
# Effective all-reduce / all-gather bandwidth, GB/s per GPU: NVLink boards, PCIe peer-to-peer, and
# between nodes (200-400 Gb/s InfiniBand / RoCE per GPU).
LINK_GBS = {"nvlink": 150.0, "pcie": 12.0, "network": 20.0}
# Host <-> device for offload (PCIe 4.0 x16 in practice) and CPU Adam throughput (DeepSpeed CPUAdam).
PCIE_GBS = 20.0
CPU_ADAM_PARAMS_PER_S = 1.5e9


@dataclass(frozen=True)
class Speed:
    step_time_s: float       # one optimizer step: micro-batch x grad_accum on every GPU
    tokens_per_s: float      # over all GPUs


def train_flops_per_token(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Forward 2P per token; backward 2P for input gradients, +2P for weight gradients (full only);
    checkpointing recomputes the forward; causal attention adds 2*s*d per layer and pass."""
    active = _active_matmul_params(spec)
    attention = 2 * spec.n_layer * cfg.seq_len * spec.q_dim  # QK^T and PV, causal half of 4*s*d
    forward = 2 * active + attention
    # adapters' own matmuls are r/d of the base ones: below this model's resolution
    backward = 2 * forward if cfg.method is Method.FULL else forward
    return forward + backward + (forward if cfg.grad_ckpt else 0)


def _active_matmul_params(spec: ModelSpec) -> int:
    per_layer = 0
    for lin in spec.linears():
        routed = spec.experts_per_token if lin.experts > 1 else 1
        per_layer += routed * lin.d_in * lin.d_out
    return spec.n_layer * per_layer + spec.vocab * spec.hidden  # + the lm_head


def step_speed(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, tflops: float, bandwidth_gbs: float,
               link: str) -> Speed:
    tokens_per_gpu = cfg.micro_batch * cfg.seq_len * cfg.grad_accum
    compute = tokens_per_gpu * train_flops_per_token(spec, cfg) / (tflops * 1e12 * MFU)
    dequant = cfg.grad_accum * _dequant_seconds(cfg, counts, bandwidth_gbs)
    step = compute + dequant + _optimizer_seconds(cfg, counts, bandwidth_gbs) + _comm_seconds(cfg, counts, link)
    return Speed(step_time_s=step, tokens_per_s=tokens_per_gpu * cfg.world_size / step)


def _dequant_seconds(cfg: TrainConfig, counts: ParamCounts, bandwidth_gbs: float) -> float:
    """QLoRA dequantises every NF4 weight to bf16 in forward and again in backward (and recompute)."""
    if cfg.method is not Method.QLORA:
        return 0.0
    passes = 3 if cfg.grad_ckpt else 2
    return passes * counts.quantized * (0.5 + 2 + 2) / (bandwidth_gbs * 1e9)  # read NF4, write + read bf16


def _optimizer_seconds(cfg: TrainConfig, counts: ParamCounts, bandwidth_gbs: float) -> float:
    shards = cfg.world_size if cfg.sharding not in (Sharding.NONE, Sharding.DDP) else 1
    params = counts.trainable / shards
    if cfg.offload is not Offload.NONE:
        return params / CPU_ADAM_PARAMS_PER_S + 2 * params * trainable_bytes(cfg) / (PCIE_GBS * 1e9)
    return params * record(cfg.optimizer).step_bytes_per_param / (bandwidth_gbs * 1e9)


def _comm_seconds(cfg: TrainConfig, counts: ParamCounts, link: str) -> float:
    world = cfg.world_size
    if world == 1:
        return 0.0
    link = "network" if cfg.nodes > 1 else link
    ring = 2 * (world - 1) / world
    grads = counts.trainable * trainable_bytes(cfg) * ring
    gathered = 0.0
    if cfg.sharding.shards_params:
        passes = 2 * cfg.grad_accum  # all-gather for forward and for backward, every micro-batch
        gathered = passes * counts.total * 2 * (world - 1) / world
    offload = 0.0
    if cfg.offload is Offload.PARAMS:
        offload = 2 * cfg.grad_accum * counts.total * 2 / world / (PCIE_GBS * 1e9)
    return (grads + gathered) / (LINK_GBS[link] * 1e9) + offload
