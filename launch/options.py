"""The options `config` and `launch` share (interface.md's table), and the TrainConfig they describe.

Every training option defaults to None, so "not given" stays visible to the planner's search.
"""
from __future__ import annotations

import re

import click

from planner.config import TrainConfig
from planner.enums import Attention, Method, Offload, Optimizer, Precision, Sharding
from planner.errors import UserError

GPU_COUNT = re.compile(r"^(?P<name>.*?)\s*x(?P<count>\d+)$", re.IGNORECASE)


def _choice(enum, extra: tuple[str, ...] = ()) -> click.Choice:
    return click.Choice([*enum.values(), *extra], case_sensitive=False)


TRAIN_OPTIONS = [
    click.option("--method", type=_choice(Method, ("auto",)), help="Fine-tuning method."),
    click.option("--precision", type=_choice(Precision), help="bf16-true: all bf16; *-mixed: fp32 weights, 16-bit autocast."),
    click.option("--optimizer", type=_choice(Optimizer)),
    click.option("--micro-batch", type=click.IntRange(min=1), help="Sequences per GPU per step."),
    click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sequence."),
    click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="Activation (gradient) checkpointing."),
    click.option("--attn", type=_choice(Attention), help="Attention implementation."),
    click.option("--lora-r", type=click.IntRange(min=1), help="LoRA rank."),
    click.option("--lora-alpha", type=click.IntRange(min=1), help="LoRA scale."),
    click.option("--lora-targets", help="Comma list: module names, q,k,v,o,gate,up,down, attn, mlp or all-linear."),
    click.option("--no-double-quant", "double_quant", flag_value=False, default=None, help="QLoRA without double quantization."),
    click.option("--gpus", type=click.IntRange(min=1), help="GPUs per node."),
    click.option("--nodes", type=click.IntRange(min=1), help="Nodes."),
    click.option("--sharding", type=_choice(Sharding)),
    click.option("--offload", type=_choice(Offload), help="CPU offload (ZeRO / FSDP)."),
    click.option("--gpu", "gpu_name", help='Plan for a card that is not here: catalog name, optionally xN ("h100x8").'),
    click.option("--global-batch", type=click.IntRange(min=1), help="Sequences per optimizer step, all GPUs (sets grad_accum)."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout."),
]

LAUNCH_OPTIONS = [
    click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for plan.json and the launcher configs."),
    click.option("--force", is_flag=True, help="Overwrite existing files in --out."),
    click.option("--main-process-ip", help="Address of node 0 (multi-node runs)."),
    click.option("--main-process-port", type=click.IntRange(1, 65535), default=29500, show_default=True),
    click.option("--machine-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank."),
]


def train_options(func):
    """Add the shared training options (interface.md) to a click command."""
    for option in reversed(TRAIN_OPTIONS):
        func = option(func)
    return func


def launch_options(func):
    for option in reversed(LAUNCH_OPTIONS):
        func = option(func)
    return func


def split_gpu(gpu_name: str | None) -> tuple[str | None, int | None]:
    """'h100x8' -> ('h100', 8); 'RTX 4090' -> ('RTX 4090', None)."""
    if not gpu_name:
        return None, None
    match = GPU_COUNT.match(gpu_name.strip())
    return (match["name"], int(match["count"])) if match else (gpu_name.strip(), None)


def config_from_options(options: dict) -> TrainConfig:
    """A TrainConfig from explicit options; what is not given keeps TrainConfig's default."""
    if options.get("method") == "auto":
        raise UserError("--method auto needs the planner's search; choose --method full, lora or qlora.")
    fields = {k: options[k] for k in TrainConfig.__dataclass_fields__ if options.get(k) is not None}
    if options.get("lora_targets"):
        fields["lora_targets"] = tuple(t.strip() for t in options["lora_targets"].split(",") if t.strip())
    _, count = split_gpu(options.get("gpu_name"))
    if count and options.get("gpus") is None:
        fields["gpus"] = count
    try:
        config = TrainConfig(**fields)
    except ValueError as err:
        raise UserError(f"{err}.") from None
    return with_global_batch(config, options.get("global_batch"))


def with_global_batch(config: TrainConfig, global_batch: int | None) -> TrainConfig:
    """Meet --global-batch with gradient accumulation; it must split evenly over micro-batches and GPUs."""
    if global_batch is None:
        return config
    per_step = config.micro_batch * config.world_size
    if global_batch % per_step:
        raise UserError(f"--global-batch {global_batch} is not a multiple of micro-batch x GPUs = {per_step}; "
                        f"use a multiple of {per_step}.")
    return config.with_(grad_accum=global_batch // per_step)
