"""`fitplan estimate`: the per-GPU memory of ONE configuration, by component, with its peak phase."""
from __future__ import annotations

import json

import click

from common.errors import InputError, opt
from cli.options import config_from_options, train_options


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
    from cli.render import estimate_table

    if (options.get("method") or "").lower() == "auto":
        raise InputError(f"estimate takes one configuration: choose {opt('method')} full, lora or qlora "
                         "(or use `fitplan plan` to let the planner choose).")
    cfg = _config(options)
    if trace:
        from cli.render import trace_table
        from measure.trace import trace_estimate
        data = trace_estimate(model, cfg, gpu)
        click.echo(json.dumps(data, indent=2) if as_json else trace_table(data))
        return
    data = estimate_json(model, cfg, gpu)
    click.echo(json.dumps(data, indent=2) if as_json else estimate_table(data))


def estimate_json(model: str, cfg, gpu: str | None = None) -> dict:
    """`estimate --json` of MODEL under cfg, on the named or probed card."""
    from planner.api import card_for_estimate, evaluate
    from planner.serialize import estimate_dict
    return estimate_dict(evaluate(model, cfg, card_for_estimate(gpu)))


def _config(options: dict):
    try:
        return config_from_options(options)
    except ValueError as err:
        raise InputError(f"{err}") from None
