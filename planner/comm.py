"""What each data-parallel engine communicates, and when it can hide behind compute: `traffic`.

Bytes are per rank, already multiplied by the ring factor ((N-1)/N for an all-gather or reduce-scatter, 2(N-1)/N
for an all-reduce). What each engine sends is read from the engines' code (torch 2.13 torch/distributed/fsdp, DeepSpeed 0.19
deepspeed/runtime/zero):
- DDP: one all-reduce of the gradients per optimizer step (Accelerate skips it on accumulation micro-batches),
  in 25 MB buckets launched while the backward runs; the last bucket cannot hide.
- ZeRO-1: the gradient reduction at the step boundary, then an all-gather of the updated 16-bit parameters.
- ZeRO-2: an all-reduce of every micro-batch's gradients in buckets overlapped with the backward (overlap_comm),
  then the parameter all-gather after the step.
- ZeRO-3: every micro-batch all-gathers each layer's parameters for the forward and again for the backward
  (prefetched: overlapped) and reduce-scatters its gradients.
- FSDP (FSDP2) / FSDP1: the same gathers (frozen parameters too: they are sharded), the backward gather skipped
  when parameters stay unsharded after the forward; gradients reduce-scattered on the micro-batch that syncs.
  FSDP2 reduces trainable gradients only; FSDP1 with LoRA reduces whole flat parameters (frozen included).
QLoRA's gathered weights are its 4-bit storage.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.config import TrainConfig
from planner.enums import Method, Precision, Sharding
from planner.layer_costs import NF4_BYTES, base_weights_train
from planner.params import ParamCounts
from planner.stack import HF, Stack, adapters_fp32, compute_bytes
from profiles.spec import ModelSpec

DDP_BUCKET_BYTES = 25 * 2**20     # DDP's bucket_cap_mb default (torch DistributedDataParallel)


@dataclass(frozen=True)
class Traffic:
    forward: float = 0.0       # per micro-batch, can hide behind the forward (prefetched gathers)
    backward: float = 0.0      # per micro-batch, can hide behind the backward
    sync: float = 0.0          # on the gradient-synchronising micro-batch only, can hide behind its backward
    step: float = 0.0          # per optimizer step, after the backward: nothing to hide behind
    tail: float = 0.0          # per micro-batch, never hidden: the first layer's gather, the last bucket
    sync_tail: float = 0.0     # on the synchronising micro-batch, never hidden
    across: float = 0.0        # HSDP: the shard's all-reduce between replicas (over the network), never hidden
    within_node: bool = False  # the sharded collectives stay inside one node (HSDP)
    collectives: int = 0       # per micro-batch, for latency
    sync_collectives: int = 0
    step_collectives: int = 0


def traffic(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, stack: Stack = HF) -> Traffic:
    world = cfg.world_size
    if world == 1 or cfg.sharding is Sharding.NONE:
        return Traffic()
    shard = min(stack.shard_group or world, world)
    grads = _reduced_grad_bytes(spec, cfg, counts)
    if cfg.sharding is Sharding.DDP:
        return _ddp(cfg, grads, world)
    if cfg.sharding in (Sharding.ZERO1, Sharding.ZERO2):
        return _zero12(cfg, counts, grads, world)
    return _sharded(spec, cfg, counts, grads, shard, world)


def _ring(n: int) -> float:
    return (n - 1) / n


def _reduced_grad_bytes(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts) -> float:
    """Bytes of the gradients the engine reduces (before the ring factor)."""
    if cfg.sharding.is_zero:
        dtype = 4 if cfg.precision is Precision.FP32 else 2          # DeepSpeed communicates in bf16
    elif cfg.sharding.is_fsdp:
        dtype = compute_bytes(cfg)                                   # Accelerate: reduce_dtype = param_dtype
    elif cfg.uses_adapters:
        dtype = 4 if adapters_fp32(cfg) or cfg.precision is not Precision.BF16_TRUE else 2
    else:
        dtype = 2 if cfg.precision is Precision.BF16_TRUE else 4     # DDP reduces param.grad's dtype
    params = counts.trainable
    if cfg.sharding is Sharding.FSDP1 and base_weights_train(cfg) and cfg.method is Method.LORA:
        params = spec.n_layer * spec.layer_linear_params() + counts.adapters   # whole flat parameters
    return params * dtype


def _gathered_bytes(cfg: TrainConfig, counts: ParamCounts) -> float:
    """Bytes of all parameters as gathered: QLoRA's NF4 storage, the rest in the compute dtype."""
    return counts.quantized * NF4_BYTES + (counts.total - counts.quantized) * compute_bytes(cfg)


def _ddp(cfg: TrainConfig, grads: float, world: int) -> Traffic:
    buckets = max(1, round(grads / DDP_BUCKET_BYTES))
    volume = 2 * _ring(world) * grads
    last = volume / buckets
    return Traffic(sync=volume - last, sync_tail=last, sync_collectives=buckets)


def _zero12(cfg: TrainConfig, counts: ParamCounts, grads: float, world: int) -> Traffic:
    bucket = cfg.engine.reduce_bucket_size * 2
    buckets = max(1, round(grads / bucket))
    reduce = 2 * _ring(world) * grads                      # DeepSpeed all-reduces each bucket
    gather = _ring(world) * counts.trainable * (4 if cfg.precision is Precision.FP32 else 2)
    if cfg.sharding is Sharding.ZERO1 or not cfg.engine.overlap_comm:
        on_sync = dict(sync_tail=reduce) if cfg.sharding is Sharding.ZERO1 else dict(tail=reduce)
        return Traffic(step=gather, step_collectives=buckets + 1, **on_sync)
    last = reduce / buckets
    return Traffic(backward=reduce - last, tail=last, collectives=buckets, step=gather, step_collectives=1)


def _sharded(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, grads: float, shard: int,
             world: int) -> Traffic:
    gathered = _ring(shard) * _gathered_bytes(cfg, counts)
    layer = gathered / spec.n_layer
    backward_gather = gathered if cfg.engine.fsdp_reshard_after_forward or cfg.sharding.is_zero else 0.0
    reduce = _ring(shard) * grads
    replicas = world // shard                               # HSDP: all-reduce the shard across replicas
    across = 2 * _ring(replicas) * grads / shard if replicas > 1 else 0.0
    layers = 2 * spec.n_layer
    if cfg.sharding is Sharding.ZERO3:                      # reduces every micro-batch
        return Traffic(forward=gathered - layer, backward=backward_gather + reduce - reduce / spec.n_layer,
                       tail=layer + reduce / spec.n_layer, collectives=layers + spec.n_layer)
    return Traffic(forward=gathered - layer, backward=backward_gather, tail=layer,
                   sync=reduce - reduce / spec.n_layer, sync_tail=reduce / spec.n_layer, across=across,
                   collectives=layers, sync_collectives=spec.n_layer, within_node=replicas > 1)
