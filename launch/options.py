"""Options of `config` and `launch` beyond the shared training ones (planner/options.py), and the
TrainConfig they describe together."""
from __future__ import annotations

import click

from planner import options as shared
from planner.config import TrainConfig
from planner.errors import UserError
from profiles.gpus import split_count

train_options = shared.train_options

LAUNCH_OPTIONS = [
    click.option("--global-batch", type=click.IntRange(min=1), help="Sequences per optimizer step, all GPUs (sets grad_accum)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for plan.json and the launcher configs."),
    click.option("--force", is_flag=True, help="Overwrite existing files in --out."),
    click.option("--main-process-ip", help="Address of node 0 (multi-node runs)."),
    click.option("--main-process-port", type=click.IntRange(1, 65535), help="Port on node 0 (default 29500)."),
    click.option("--machine-rank", type=click.IntRange(min=0), default=0, show_default=True, help="This node's rank."),
]


def launch_options(func):
    for option in reversed(LAUNCH_OPTIONS):
        func = option(func)
    return func


def config_from_options(options: dict) -> TrainConfig:
    """A TrainConfig from explicit options; what is not given keeps TrainConfig's default."""
    count = split_count(options["gpu"])[1] if options.get("gpu") else None  # "h100x8": 8 per node
    fallback = {"gpus": count} if count and options.get("gpus") is None else {}
    try:
        config = shared.config_from_options(options, **fallback)
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
