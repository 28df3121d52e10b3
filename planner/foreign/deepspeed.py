"""A DeepSpeed JSON: ZeRO stage, offload, the engine's buckets and thresholds, batch sizes, precision and its own
optimizer. "auto" values are the ones Transformers (integrations/deepspeed.py trainer_config_process) and
Accelerate (accelerator.py _prepare_deepspeed) fill in: batch sizes and precision from the training config,
bucket sizes from the model's hidden size."""
from __future__ import annotations

from planner.enums import Offload, Optimizer, Precision, Sharding
from planner.foreign import shared
from planner.foreign.core import Keys, Mapping, PerHidden

AUTO = "auto"
STAGES = {0: Sharding.DDP, 1: Sharding.ZERO1, 2: Sharding.ZERO2, 3: Sharding.ZERO3}
# accelerate/accelerator.py _prepare_deepspeed (and transformers' trainer_config_finalize): hidden x hidden,
# 0.9 hidden x hidden, 10 hidden
AUTO_SIZES = {"reduce_bucket_size": PerHidden(1, 2), "prefetch_bucket_size": PerHidden(0.9, 2),
              "param_persistence_threshold": PerHidden(10, 1)}
# deepspeed/runtime/zero/config.py DeepSpeedZeroConfig: field -> (the names it is read by, its engine setting)
SIZES = {
    "reduce_bucket_size": ("reduce_bucket_size",),
    "allgather_bucket_size": ("allgather_bucket_size",),
    "prefetch_bucket_size": ("stage3_prefetch_bucket_size", "prefetch_bucket_size"),
    "param_persistence_threshold": ("stage3_param_persistence_threshold", "param_persistence_threshold"),
    "max_live_parameters": ("stage3_max_live_parameters", "max_live_parameters"),
    "max_reuse_distance": ("stage3_max_reuse_distance", "max_reuse_distance"),
}
UNMODELLED = {"zero_quantized_weights": "quantizes the gathered weights (ZeRO++)",
              "zero_quantized_gradients": "quantizes the reduced gradients (ZeRO++)",
              "zero_hpz_partition_size": "keeps a secondary weight partition per node (ZeRO++ hpZ)",
              "mics_shard_size": "shards within groups (MiCS)"}


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def read(m: Mapping, cfg: Keys) -> None:
    _precision(m, cfg)
    _batch(m, cfg)
    _optimizer(m, cfg)
    zero = cfg.sub("zero_optimization")
    stage = _stage(m, cfg, zero)
    if zero is not None:
        _offload(m, zero, stage)
        _engine(m, zero, stage)
        for key, what in UNMODELLED.items():
            if zero.has(key) and zero.raw(key) not in (False, 0, 1):
                m.unmodelled_key(zero.origin(key), what)


def _precision(m: Mapping, cfg: Keys) -> None:
    """bf16.enabled / fp16.enabled: true or false decide (Transformers refuses a mismatch with the training config),
    "auto" follows it. DeepSpeed keeps fp32 masters of 16-bit weights either way."""
    for section, value in (("fp16", Precision.FP16_MIXED), ("bf16", Precision.BF16_MIXED),
                           ("bfloat16", Precision.BF16_MIXED)):
        sub = cfg.sub(section)
        if sub is None:
            continue
        enabled = sub.raw("enabled")
        if is_auto(enabled):
            continue
        if sub.bool("enabled"):
            shared.set_precision(m, value, sub.origin("enabled"))
        if section == "bf16" and (sub.bool("bf16_master_weights_and_grads") or sub.bool("bf16_optimizer_states")):
            m.unmodelled_key(sub.origin("bf16_master_weights_and_grads"), "keeps masters or states in bf16")


def _batch(m: Mapping, cfg: Keys) -> None:
    for key, name, high in (("train_micro_batch_size_per_gpu", "micro_batch", 65536),
                            ("gradient_accumulation_steps", "grad_accum", 1_000_000),
                            ("train_batch_size", "global_batch", 100_000_000)):
        if cfg.has(key) and not is_auto(cfg.raw(key)):
            m.set(name, cfg.int(key, 1, high), cfg.origin(key))


def _optimizer(m: Mapping, cfg: Keys) -> None:
    """An `optimizer` section makes DeepSpeed build its own (FusedAdam, or DeepSpeedCPUAdam when offloading):
    the training config's optimizer is not used (transformers/integrations/deepspeed.py deepspeed_optim_sched)."""
    section = cfg.sub("optimizer")
    if section is None:
        return
    name = section.str("type") or ""
    found = shared.DEEPSPEED_OPTIMIZERS.get(name.strip().lower())
    if found is None:
        m.problem("optimizer", f"{section.origin('type')} is {name[:40]!r}, an optimizer fitplan does not model "
                               "(it models Adam and AdamW here); fix the file or set it on the command line.")
        return
    m.replace("optimizer", Optimizer(found), section.origin("type"), "DeepSpeed builds its own optimizer")


def _stage(m: Mapping, cfg: Keys, zero: Keys | None) -> int:
    # deepspeed/runtime/zero/config.py: stage 0 when unset
    stage = zero.int("stage", 0, 3) if zero is not None and zero.has("stage") else 0
    origin = zero.origin("stage") if zero is not None and zero.has("stage") else cfg.origin("zero_optimization")
    m.set("sharding", STAGES[stage], origin)
    if stage == 0:
        m.notes.append(f"{origin}: DeepSpeed without ZeRO replicates the model on every GPU; planned as DDP.")
    return stage


def _offload(m: Mapping, zero: Keys, stage: int) -> None:
    """offload_param puts the 16-bit weights on the host (fitplan's "params", which moves the optimizer states
    too); offload_optimizer the states and fp32 masters ("optimizer")."""
    devices = {section: _device(m, zero, section) for section in ("offload_optimizer", "offload_param")}
    if zero.bool("cpu_offload"):   # the old spelling of offload_optimizer: {device: cpu}
        devices["offload_optimizer"] = zero.origin("cpu_offload")
    chosen = (Offload.PARAMS, devices["offload_param"]) if devices["offload_param"] else (
        Offload.OPTIMIZER, devices["offload_optimizer"])
    if chosen[1] is not None:
        m.set("offload", chosen[0], chosen[1])
        if chosen[0] is Offload.PARAMS and not devices["offload_optimizer"]:
            m.notes.append(f"{chosen[1]} without offload_optimizer: planned with the optimizer states offloaded too.")


def _device(m: Mapping, zero: Keys, section: str):
    """The origin of an offload to the host (cpu, or nvme planned as cpu), or None."""
    sub = zero.sub(section)
    device = (sub.str("device") or "none").strip().lower() if sub is not None else "none"
    if device == "none":
        return None
    if device not in ("cpu", "nvme"):
        m.problem("offload", f"{sub.origin('device')} is {device[:20]!r}, not none, cpu or nvme; fix the file.")
        return None
    if device == "nvme":
        m.notes.append(f"{sub.origin('device')} is nvme: off the GPU, planned as cpu.")
    return sub.origin("device")


def _engine(m: Mapping, zero: Keys, stage: int) -> None:
    for field, names in SIZES.items():
        for key in names:
            if zero.has(key):
                _size(m, zero, key, field)
    for key in ("overlap_comm", "contiguous_gradients"):
        if zero.bool(key) is not None:
            m.set(f"engine.{key}", zero.bool(key), zero.origin(key))
    # deepspeed/runtime/zero/config.py overlap_comm_valid: unset means on for stage 3 only
    m.default("engine.overlap_comm", stage == 3, "DeepSpeed's default for the stage")


def _size(m: Mapping, zero: Keys, key: str, field: str) -> None:
    value = zero.raw(key)
    if is_auto(value):
        if field not in AUTO_SIZES:
            m.problem(f"engine.{field}", f"{zero.origin(key)} is \"auto\", which neither Transformers nor Accelerate "
                                         "fills in (DeepSpeed refuses it); give a number.")
            return
        m.set(f"engine.{field}", AUTO_SIZES[field], zero.origin(key))
        return
    m.set(f"engine.{field}", zero.int(key, 0), zero.origin(key))
