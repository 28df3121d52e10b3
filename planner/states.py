"""Model states per GPU: weights, quantization constants, adapters, gradients, optimizer states, master
weights, after sharding and offload. Every rule cites the code or paper it follows."""
from __future__ import annotations

import math
from dataclasses import dataclass

from planner.config import TrainConfig
from planner.enums import Method, Offload, Precision, Sharding
from planner.optimizers import record
from planner.params import ParamCounts, ordered_params, trainable_tensors
from profiles.spec import ModelSpec

NF4_BLOCK = 64              # bitsandbytes 4-bit blocksize (params per absmax)
NESTED_BLOCK = 256          # double quantization: absmax values per second-level fp32 absmax
NF4_CODE_BYTES = 16 * 4     # each quantized tensor keeps its own 16-entry fp32 NF4 code table
ADAPTER_BYTES = 4           # peft casts bf16/fp16 adapters to fp32 (autocast_adapter_dtype=True)


@dataclass(frozen=True)
class ModelStates:
    weights: int
    quant_constants: int
    adapters: int
    gradients: int
    optimizer_states: int
    master_weights: int
    paged: int               # paged optimizer states: managed memory on the card, invisible to torch
    cpu: int                 # offloaded to host memory

    def as_components(self) -> dict[str, int]:
        return {"weights": self.weights, "quant_constants": self.quant_constants, "adapters": self.adapters,
                "gradients": self.gradients, "optimizer_states": self.optimizer_states,
                "master_weights": self.master_weights}


def deepspeed_16bit(cfg: TrainConfig) -> bool:
    """DeepSpeed's bf16/fp16 mode casts the whole module to 16 bit and keeps fp32 masters itself."""
    return cfg.sharding.is_zero and cfg.precision is not Precision.FP32


def weight_bytes(cfg: TrainConfig) -> int:
    """Bytes per unquantized base parameter as it sits on the card."""
    if deepspeed_16bit(cfg):
        return 2
    if cfg.method is Method.QLORA:
        return 4  # peft prepare_model_for_kbit_training casts every non-4-bit parameter to fp32
    return 2 if cfg.precision is Precision.BF16_TRUE else 4  # *-mixed keep fp32 weights, autocast computes in 16 bit


def computes_16bit_params(cfg: TrainConfig) -> bool:
    """The layers compute on 16-bit parameters: DeepSpeed's bf16/fp16 mode casts the module, and FSDP's mixed
    precision (Accelerate's bf16/fp16) gathers 16-bit copies of the fp32 shards, so autocast has nothing to
    copy and the unsharded gradients are 16 bit until reduced."""
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED)
    return deepspeed_16bit(cfg) or (cfg.sharding.is_fsdp and mixed)


def trainable_bytes(cfg: TrainConfig) -> int:
    if cfg.uses_adapters and not deepspeed_16bit(cfg):
        # FSDP1 flattens a layer's frozen and trainable parameters into one tensor of one dtype: under
        # bf16-true fitplan's recipe keeps the adapters in bf16 (peft would make them fp32)
        return 2 if cfg.sharding is Sharding.FSDP1 and cfg.precision is Precision.BF16_TRUE else ADAPTER_BYTES
    return weight_bytes(cfg)


def flat_unit_grads(cfg: TrainConfig) -> bool:
    """FSDP1 flattens a layer's frozen weights and its adapters into one parameter that requires grad: autograd
    computes the whole unit's gradient, and a shard of it is kept (torch's _flat_param.py)."""
    return cfg.sharding is Sharding.FSDP1 and cfg.uses_adapters


def adapter_bytes(cfg: TrainConfig) -> int:
    """Bytes per stored LoRA weight. ZeRO-3 partitions the adapters peft adds after the bf16 model was
    partitioned at load (zero.Init) as they are: fp32."""
    if cfg.uses_adapters and cfg.sharding is Sharding.ZERO3:
        return ADAPTER_BYTES
    return trainable_bytes(cfg)


def adapter_compute_bytes(cfg: TrainConfig) -> int:
    """Bytes of the LoRA weights the layers multiply with (peft casts each input to them)."""
    return 2 if computes_16bit_params(cfg) and cfg.sharding is not Sharding.ZERO3 else adapter_bytes(cfg)


def quant_constant_bytes(spec: ModelSpec, cfg: TrainConfig) -> int:
    """bitsandbytes NF4 state: absmax per 64 weights, itself 8-bit quantized with double quantization."""
    if cfg.method is not Method.QLORA:
        return 0
    total = 0
    for lin in spec.linears():
        if lin.experts == 1:
            total += spec.n_layer * _nf4_state(lin.d_in * lin.d_out, cfg.double_quant)
    return total


def _nf4_state(numel: int, double_quant: bool) -> int:
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return 4 * blocks + NF4_CODE_BYTES
    # uint8 absmax per block, fp32 absmax per 256 blocks, fp32 offset
    return blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + 4 + NF4_CODE_BYTES


def optimizer_state_bytes(spec: ModelSpec, cfg: TrainConfig) -> int:
    """Unsharded optimizer state bytes of all trainable tensors."""
    dtype = 4 if deepspeed_16bit(cfg) else trainable_bytes(cfg)  # DeepSpeed steps its fp32 masters
    optimizer = record(cfg.optimizer)
    return sum(count * optimizer.state_bytes(shape, dtype) for shape, count in trainable_tensors(spec, cfg))


def model_states(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts) -> ModelStates:
    world = cfg.world_size if cfg.sharding is not Sharding.NONE else 1
    wb = weight_bytes(cfg)
    weights = counts.unquantized * wb + _packed_nf4(counts)
    if cfg.method is Method.FULL:
        weights = counts.total * wb
    adapters = counts.adapters * adapter_bytes(cfg)
    grads = counts.trainable * trainable_bytes(cfg)
    if flat_unit_grads(cfg):
        grads = sum(p.numel for p in ordered_params(spec, cfg) if p.layer is not None) * trainable_bytes(cfg)
    states = optimizer_state_bytes(spec, cfg)
    paged = record(cfg.optimizer).paged
    sharded = _shard(cfg, world, weights=weights, adapters=adapters, grads=grads, states=states,
                     trainable=counts.trainable)
    if cfg.sharding in (Sharding.ZERO1, Sharding.ZERO2):
        sharded["gradients"] = zero12_partition_grads(spec, cfg)
    cpu = sharded.pop("cpu")
    return ModelStates(quant_constants=quant_constant_bytes(spec, cfg) // _param_shards(cfg, world),
                       paged=sharded.pop("optimizer_states") if paged else 0,
                       optimizer_states=0 if paged else sharded.pop("optimizer_states"), cpu=cpu, **sharded)


def zero_grad_bytes(cfg: TrainConfig) -> int:
    """ZeRO's gradients are in the model's dtype: 16 bit in DeepSpeed's bf16/fp16 mode (no grad_accum_dtype)."""
    return 2 if deepspeed_16bit(cfg) else 4


def zero_partition(numel: int, world: int) -> int:
    """Elements of one rank's partition: ZeRO-1/2 pad the flat group to a multiple of 2 x world."""
    return 2 * -(-numel // (2 * world))


def zero12_partition_grads(spec: ModelSpec, cfg: TrainConfig) -> int:
    """`grads_in_partition` of the rank that holds the most (stage_1_and_2.py `copy_grads_in_partition`): every
    trainable tensor that touches the rank's slice of the flat group counts whole."""
    world = cfg.world_size
    sizes = [p.numel for p in ordered_params(spec, cfg) if p.trainable]
    size = zero_partition(sum(sizes), world)
    touching = [0] * world
    start = 0
    for numel in sizes:
        first, last = start // size, min((start + numel - 1) // size, world - 1)
        for rank in range(first, last + 1):
            touching[rank] += numel
        start += numel
    return max(touching) * zero_grad_bytes(cfg)


def _packed_nf4(counts: ParamCounts) -> int:
    return (counts.quantized + 1) // 2  # two 4-bit values per byte


def _param_shards(cfg: TrainConfig, world: int) -> int:
    return world if cfg.sharding.shards_params else 1


def _shard(cfg: TrainConfig, world: int, *, weights: int, adapters: int, grads: int, states: int,
           trainable: int) -> dict[str, int]:
    """Divide what each sharding strategy divides; move what offload moves to the host."""
    s = cfg.sharding
    master = 0
    if deepspeed_16bit(cfg):
        master = trainable * 4          # DeepSpeed keeps an fp32 master copy of 16-bit trainable weights
    shard_states, shard_grads = s.shards_states, s.shards_grads
    n_param = _param_shards(cfg, world)
    out = {
        "weights": weights // n_param,
        "adapters": adapters // n_param,
        "gradients": grads // (world if shard_grads else 1),
        "optimizer_states": states // (world if shard_states else 1),
        "master_weights": master // (world if shard_states else 1),
        "cpu": 0,
    }
    return _offload(cfg, out)


def _offload(cfg: TrainConfig, out: dict[str, int]) -> dict[str, int]:
    if cfg.offload is Offload.NONE:
        return out
    # ZeRO-Offload / FSDP CPU offload keep optimizer states, fp32 master and fp32 gradients on the host
    moved = ["optimizer_states", "master_weights"]
    if cfg.sharding is Sharding.ZERO3:   # stage3.py puts its gradient partitions where the optimizer steps
        moved += ["gradients"]
    if cfg.offload is Offload.PARAMS:
        moved += ["weights"]
    for key in moved:
        out["cpu"] += out[key]
        out[key] = 0
    return out
