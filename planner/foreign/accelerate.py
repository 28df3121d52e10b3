"""An Accelerate config YAML (accelerate/commands/config/config_args.py ClusterConfig): processes and machines,
mixed precision, and the DeepSpeed or FSDP section `accelerate launch` turns into the engine's settings."""
from __future__ import annotations

from common.errors import InputError
from planner.enums import Offload, Precision, Sharding
from planner.foreign import fsdp, shared
from planner.foreign.core import Keys, Mapping

# accelerate/utils/dataclasses.py DistributedType: the ones fitplan plans
ENGINES = {"NO": Sharding.NONE, "MULTI_GPU": Sharding.DDP, "DEEPSPEED": None, "FSDP": None}
PRECISIONS = {"no": Precision.FP32, "bf16": Precision.BF16_MIXED, "fp16": Precision.FP16_MIXED}
STAGES = {0: Sharding.DDP, 1: Sharding.ZERO1, 2: Sharding.ZERO2, 3: Sharding.ZERO3}


def read(m: Mapping, cfg: Keys) -> None:
    if cfg.bool("use_cpu"):
        raise InputError(f"{cfg.origin('use_cpu')} trains on the CPU; fitplan plans GPU memory, so give a GPU config.")
    _processes(m, cfg)
    _mixed_precision(m, cfg)
    kind = (cfg.str("distributed_type") or "NO").strip().upper()
    if kind not in ENGINES:
        m.problem("sharding", f"{cfg.origin('distributed_type')} is {kind[:30]}, which fitplan does not plan (it plans "
                              "NO, MULTI_GPU, DEEPSPEED and FSDP); set the sharding on the command line.")
        return
    origin = cfg.origin("distributed_type")
    if kind == "DEEPSPEED":
        _deepspeed(m, cfg.sub("deepspeed_config"), origin)
    elif kind == "FSDP":
        fsdp.read(m, cfg.sub("fsdp_config") or Keys({}, cfg.file, "fsdp_config."), fsdp.ACCELERATE, origin)
    else:
        # a training config naming DeepSpeed or FSDP overrides a plain launch (it sets ACCELERATE_USE_* itself)
        m.set("sharding", ENGINES[kind], origin, weak=True)


def _processes(m: Mapping, cfg: Keys) -> None:
    """num_processes counts every GPU of every machine (accelerate/utils/launch.py: nproc_per_node is
    num_processes // num_machines); fitplan's gpus are per node."""
    machines = cfg.int("num_machines", 1, 4096) or 1
    if cfg.has("num_machines"):
        m.set("nodes", machines, cfg.origin("num_machines"))
    processes = cfg.int("num_processes", 1, 4096 * 4096)
    if processes is None:
        return
    if processes % machines:
        raise InputError(f"{cfg.origin('num_processes')} is {processes}, which does not split over num_machines "
                         f"{machines}; fix the file.")
    m.set("gpus", processes // machines, cfg.origin("num_processes"))


def _mixed_precision(m: Mapping, cfg: Keys) -> None:
    """The launcher's autocast: the training config's bf16 / fp16 replaces it (transformers/training_args.py sets
    ACCELERATE_MIXED_PRECISION), so "no" gives way; bf16 against fp16 is a contradiction."""
    value = cfg.str("mixed_precision")
    if value is None:
        return
    found = PRECISIONS.get(value.strip().lower())
    if found is None:
        m.problem("precision", f"{cfg.origin('mixed_precision')} is {value[:20]!r}, which fitplan does not model "
                               "(no, bf16 or fp16); set the precision on the command line.")
        return
    shared.set_precision(m, found, cfg.origin("mixed_precision"), weak=found is Precision.FP32)


def _deepspeed(m: Mapping, cfg: Keys | None, origin) -> None:
    if cfg is None:   # accelerate/utils/dataclasses.py DeepSpeedPlugin: zero_stage 2 by default
        m.set("sharding", Sharding.ZERO2, origin, weak=True)
        m.notes.append(f"{origin} DEEPSPEED without deepspeed_config: planned as ZeRO-2.")
        return
    if cfg.has("deepspeed_config_file"):
        m.deepspeed_refs.append((cfg.origin("deepspeed_config_file"), cfg.str("deepspeed_config_file")))
    if cfg.has("zero_stage"):
        m.set("sharding", STAGES[cfg.int("zero_stage", 0, 3)], cfg.origin("zero_stage"))
    devices = {key: (cfg.str(key) or "none").strip().lower() for key in ("offload_optimizer_device",
                                                                        "offload_param_device")}
    for key, value in devices.items():
        if value not in ("none", "cpu", "nvme"):
            m.problem("offload", f"{cfg.origin(key)} is {value[:20]!r}, not none, cpu or nvme; fix the file.")
    if devices["offload_param_device"] in ("cpu", "nvme"):
        m.set("offload", Offload.PARAMS, cfg.origin("offload_param_device"))
    elif devices["offload_optimizer_device"] in ("cpu", "nvme"):
        m.set("offload", Offload.OPTIMIZER, cfg.origin("offload_optimizer_device"))
    if cfg.has("gradient_accumulation_steps"):   # `accelerate config` writes 1; the training config's wins
        m.set("grad_accum", cfg.int("gradient_accumulation_steps", 1, 1_000_000),
              cfg.origin("gradient_accumulation_steps"), weak=True)
