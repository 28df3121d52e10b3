"""The launcher configs of a plan: Accelerate's config YAML and, for ZeRO, DeepSpeed's JSON.

Pure functions of a TrainConfig (plus multi-node settings) returning dicts; `write_configs` puts them
in a folder. Choices worth knowing:
- `bf16-true` loads the model in bf16, so Accelerate's `mixed_precision` is "no" (autocast to bf16 of a
  bf16 model does nothing, and FSDP would otherwise keep fp32 copies). `*-mixed` map to bf16 / fp16.
- With DeepSpeed the JSON decides precision; the YAML names no `mixed_precision`, because Accelerate
  refuses a `deepspeed_config_file` next to one. Both bf16 precisions enable DeepSpeed's bf16 mode,
  which keeps fp32 master weights and optimizer states (as planner/states.py counts them).
- `--sharding fsdp` is emitted as FSDP2 (`fsdp_version: 2`), `fsdp1` as FSDP1 with flat parameters; every
  key that changes memory is written (`planner.sharding.EngineSettings`), so Accelerate's defaults never decide.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from planner.config import TrainConfig
from planner.enums import Method, Offload, Precision, Sharding
from planner.optimizers import record
from common.errors import InputError, UnsupportedError, opt
from common.files import write_files
from planner.rules import layout_problem

ACCELERATE_NAME = "accelerate_config.yaml"
DEEPSPEED_NAME = "deepspeed.json"
ZERO_STAGES = {Sharding.ZERO1: 1, Sharding.ZERO2: 2, Sharding.ZERO3: 3}
MIXED_PRECISION = {Precision.BF16_TRUE: "no", Precision.BF16_MIXED: "bf16",
                   Precision.FP16_MIXED: "fp16", Precision.FP32: "no"}
GRADIENT_CLIPPING = 1.0
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class MultiNode:
    """Where the ranks of a multi-node run meet, and which node this is."""

    main_process_ip: str | None = None
    main_process_port: int = DEFAULT_PORT
    machine_rank: int = 0


def check_layout(config: TrainConfig, nodes: MultiNode) -> None:
    """Reject plans no launcher can run, in one sentence."""
    if config.nodes > 1 and not nodes.main_process_ip:
        raise InputError(f"a {config.nodes}-node run needs {opt('main_process_ip')} (the address of node 0).")
    if not 0 <= nodes.machine_rank < config.nodes:
        raise InputError(f"{opt('machine_rank')} must be between 0 and {config.nodes - 1} for {config.nodes} node(s), "
                        f"got {nodes.machine_rank}.")
    problem = layout_problem(config)
    if problem:
        raise UnsupportedError(problem)


def distributed_type(config: TrainConfig) -> str:
    if config.sharding in ZERO_STAGES:
        return "DEEPSPEED"
    if config.sharding.is_fsdp:
        return "FSDP"
    return "NO" if config.world_size == 1 else "MULTI_GPU"


def accelerate_config(config: TrainConfig, nodes: MultiNode = MultiNode(),
                      deepspeed_file: str | Path | None = None) -> dict:
    """The dict `accelerate launch --config_file` reads (ClusterConfig's keys)."""
    kind = distributed_type(config)
    out = {"compute_environment": "LOCAL_MACHINE", "distributed_type": kind, "debug": False,
           "num_processes": config.world_size, "num_machines": config.nodes, "machine_rank": nodes.machine_rank,
           "gpu_ids": "all", "use_cpu": False, "rdzv_backend": "static", "same_network": True}
    if kind != "DEEPSPEED":  # DeepSpeed takes precision from its JSON (see module docstring)
        out["mixed_precision"] = MIXED_PRECISION[config.precision]
    if config.nodes > 1:
        out |= {"main_process_ip": nodes.main_process_ip, "main_process_port": int(nodes.main_process_port)}
    if kind == "DEEPSPEED":
        out["deepspeed_config"] = _accelerate_deepspeed_section(config, deepspeed_file)
    if kind == "FSDP":
        out["fsdp_config"] = fsdp_config(config)
    return out


def _accelerate_deepspeed_section(config: TrainConfig, deepspeed_file: str | Path | None) -> dict:
    if deepspeed_file is None:
        raise ValueError("a DeepSpeed plan needs the path of its DeepSpeed JSON")
    section = {"deepspeed_config_file": str(deepspeed_file),
               "zero3_init_flag": ZERO_STAGES[config.sharding] == 3 and config.method == Method.FULL}
    if config.nodes > 1:  # one `accelerate launch` per node (torchrun), not DeepSpeed's pdsh launcher
        section["deepspeed_multinode_launcher"] = "standard"
    return section


def fsdp_config(config: TrainConfig) -> dict:
    """FSDP settings (version 2 for `fsdp`, 1 for `fsdp1`); the wrapped layer classes come from the model's
    `_no_split_modules`. Every memory-relevant key is written, so Accelerate's defaults never decide."""
    engine = config.engine
    common = {
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_offload_params": config.offload == Offload.PARAMS,
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": config.method == Method.FULL,
        "fsdp_activation_checkpointing": config.grad_ckpt,
    }
    if config.sharding is Sharding.FSDP:
        return {"fsdp_version": 2, "fsdp_reshard_after_forward": engine.fsdp_reshard_after_forward, **common}
    strategy = "FULL_SHARD" if engine.fsdp_reshard_after_forward else "SHARD_GRAD_OP"
    # `accelerate launch` reads the strategy from fsdp_sharding_strategy (it overrides reshard_after_forward)
    return {"fsdp_version": 1, "fsdp_sharding_strategy": strategy, "fsdp_reshard_after_forward": strategy,
            "fsdp_backward_prefetch": engine.fsdp_backward_prefetch, "fsdp_forward_prefetch": engine.fsdp_forward_prefetch,
            "fsdp_use_orig_params": engine.fsdp_use_orig_params,
            "fsdp_sync_module_states": config.method == Method.FULL, **common}  # with RAM-efficient loading


def deepspeed_owns_optimizer(config: TrainConfig) -> bool:
    """ZeRO-Offload with AdamW: DeepSpeed builds its CPU Adam from the JSON (the recipe passes DummyOptim)."""
    return (config.sharding in ZERO_STAGES and config.offload != Offload.NONE
            and record(config.optimizer).deepspeed_type is not None)


def deepspeed_config(config: TrainConfig, gradient_clipping: float = GRADIENT_CLIPPING) -> dict:
    """The DeepSpeed JSON for a zero1/zero2/zero3 plan, with concrete batch sizes."""
    if config.sharding not in ZERO_STAGES:
        raise ValueError(f"sharding {config.sharding} does not use DeepSpeed")
    out = {
        "train_micro_batch_size_per_gpu": config.micro_batch,
        "gradient_accumulation_steps": config.grad_accum,
        "train_batch_size": config.micro_batch * config.grad_accum * config.world_size,
        "gradient_clipping": gradient_clipping,
        "zero_optimization": zero_section(config),
        "bf16": {"enabled": config.precision in (Precision.BF16_TRUE, Precision.BF16_MIXED)},
        "fp16": {"enabled": config.precision == Precision.FP16_MIXED, "auto_cast": True},
        "steps_per_print": 2**31 - 1,  # the recipe logs its own progress
        "wall_clock_breakdown": False,
    }
    if deepspeed_owns_optimizer(config):
        out["optimizer"] = {"type": record(config.optimizer).deepspeed_type, "params": {"lr": "auto", "weight_decay": "auto",
                                                        "betas": [0.9, 0.999], "eps": 1e-8}}
    elif not record(config.optimizer).zero_tested:  # bitsandbytes / Adafactor / SGD: ZeRO takes them when told to
        out["zero_allow_untested_optimizer"] = True
    if config.offload != Offload.NONE and not deepspeed_owns_optimizer(config):
        out["zero_force_ds_cpu_optimizer"] = False
    return out


def zero_section(config: TrainConfig) -> dict:
    stage, engine = ZERO_STAGES[config.sharding], config.engine
    out = {"stage": stage, "overlap_comm": engine.overlap_comm, "contiguous_gradients": engine.contiguous_gradients,
           "reduce_bucket_size": engine.reduce_bucket_size, "allgather_bucket_size": engine.allgather_bucket_size}
    if config.offload != Offload.NONE:
        out["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if config.offload == Offload.PARAMS:
        out["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        del out["allgather_bucket_size"]  # stage 3 prefetches by its own sizes
        out |= {"stage3_prefetch_bucket_size": engine.prefetch_bucket_size,
                "stage3_param_persistence_threshold": engine.param_persistence_threshold,
                "stage3_max_live_parameters": engine.max_live_parameters,
                "stage3_max_reuse_distance": engine.max_reuse_distance,
                "stage3_gather_16bit_weights_on_model_save": True}
    return out


def render_configs(out_dir: str | Path, config: TrainConfig, nodes: MultiNode = MultiNode()) -> dict[str, tuple[Path, str]]:
    """The text of each launcher file of a plan, by name: {"accelerate": (path, text), "deepspeed": ...}."""
    check_layout(config, nodes)
    out_dir = Path(out_dir).resolve()
    files: dict[str, tuple[Path, str]] = {}
    ds_path = None
    if config.sharding in ZERO_STAGES:
        ds_path = out_dir / DEEPSPEED_NAME
        files["deepspeed"] = (ds_path, json.dumps(deepspeed_config(config), indent=2) + "\n")
    text = yaml.safe_dump(accelerate_config(config, nodes, ds_path), sort_keys=False)
    files["accelerate"] = (out_dir / ACCELERATE_NAME, text)
    return files


def write_configs(out_dir: str | Path, config: TrainConfig, nodes: MultiNode = MultiNode(),
                  force: bool = False) -> dict[str, Path]:
    """Write the Accelerate YAML (and DeepSpeed JSON) into `out_dir`; returns their paths by name."""
    files = render_configs(out_dir, config, nodes)
    write_files({path: text for path, text in files.values()}, force)
    return {name: path for name, (path, _) in files.items()}
