"""`fitplan estimate`: the per-GPU memory of ONE configuration, by component, with its peak phase."""
from __future__ import annotations

import json

import click

from planner.errors import UserError
from planner.options import config_from_options, train_options


@click.command("estimate")
@click.argument("model")
@train_options
@click.option("--trace", is_flag=True,
              help="Exact mode: run the real training step on fake tensors and report measured bytes; also "
                   "takes config.json files of model types only transformers knows.")
def command(model: str, gpu: str | None, as_json: bool, trace: bool, **options) -> None:
    """Per-GPU memory of one configuration of MODEL, component by component.

    MODEL is a catalog name (see `fitplan models`), a local config.json or a local model folder.
    Unset options take the defaults shown in --help (LoRA, bf16-true, AdamW, micro-batch 1, 2048
    tokens).

    \b
    Examples:
      fitplan estimate meta-llama/Llama-2-7b-hf --method full --micro-batch 1 --seq-len 512
      fitplan estimate Llama-3.1-8B --method qlora --grad-ckpt --micro-batch 4 --json
      fitplan estimate Llama-2-70b-hf --method full --gpus 8 --sharding zero3 --gpu h100x8
      fitplan estimate ./my-model/config.json --trace --json
    """
    from planner.api import estimate_model

    if (options.get("method") or "").lower() == "auto":
        raise UserError("estimate takes one configuration: choose --method full, lora or qlora "
                        "(or use `fitplan plan` to let the planner choose).")
    cfg = _config(options)
    if trace:
        from planner.trace import trace_estimate, trace_table
        data = trace_estimate(model, cfg, gpu)
        click.echo(json.dumps(data, indent=2) if as_json else trace_table(data))
        return
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
