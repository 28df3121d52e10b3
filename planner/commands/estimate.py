"""`fitplan estimate`: the per-GPU memory of ONE configuration, by component, with its peak phase."""
from __future__ import annotations

import json

import click

from planner.errors import UserError
from planner.options import config_from_options, train_options


@click.command("estimate")
@click.argument("model")
@train_options
def command(model: str, gpu: str | None, as_json: bool, **options) -> None:
    """Per-GPU memory of one configuration of MODEL, component by component.

    MODEL is a catalog name (see `fitplan models`), a local config.json or a local model folder.
    Unset options take the defaults shown in --help (LoRA, bf16-true, AdamW, micro-batch 1, 2048
    tokens).

    \b
    Examples:
      fitplan estimate meta-llama/Llama-2-7b-hf --method full --micro-batch 1 --seq-len 512
      fitplan estimate Llama-3.1-8B --method qlora --grad-ckpt --micro-batch 4 --json
      fitplan estimate Llama-2-70b-hf --method full --gpus 8 --sharding zero3 --gpu h100x8
    """
    from planner.api import estimate_model

    if (options.get("method") or "").lower() == "auto":
        raise UserError("estimate takes one configuration: choose --method full, lora or qlora "
                        "(or use `fitplan plan` to let the planner choose).")
    cfg = _config(options)
    data = estimate_model(model, cfg, gpu)
    click.echo(json.dumps(data, indent=2) if as_json else _table(data))


def _config(options: dict):
    try:
        return config_from_options(options)
    except ValueError as err:
        raise UserError(f"{err}") from None


def _table(data: dict) -> str:
    from planner.report import estimate_table
    return estimate_table(data)
