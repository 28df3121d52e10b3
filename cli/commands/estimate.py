"""`fitplan estimate`: the per-GPU memory of ONE configuration, by component, with its peak phase."""
from __future__ import annotations

import json

import click

from common.errors import InputError, opt
from cli.options import config_from_options, fixed_fields, train_options
from planner.api import DEFAULT_MARGIN


@click.command("estimate")
@click.argument("model")
@train_options
@click.option("--trace", is_flag=True,
              help="Exact mode: run the real training step on fake tensors and report measured bytes; also "
                   "takes config.json files of model types only transformers knows.")
def command(model: str, gpu: str | None, as_json: bool, trace: bool, margin: float, **options) -> None:
    """Per-GPU memory of one configuration of MODEL, component by component, and whether it fits.

    MODEL is a catalog name (see `fitplan models`), a local config.json or a local model folder.
    Unset options take the defaults shown in --help (LoRA, bf16-true, AdamW, micro-batch 1, 2048
    tokens). With --gpu (or the GPUs found on this machine) it says whether the configuration fits with
    --margin of the card kept free, the same test `plan`, `fits`, `config` and `launch` apply; a count
    in --gpu (h100x8) is the number of GPUs.

    \b
    Examples:
      fitplan estimate meta-llama/Llama-2-7b-hf --method full --micro-batch 1 --seq-len 512
      fitplan estimate Llama-3.1-8B --method qlora --grad-ckpt --micro-batch 4 --json
      fitplan estimate Llama-2-70b-hf --method full --sharding zero3 --grad-ckpt --gpu h100x8
      fitplan estimate ./my-model/config.json --trace --json
    """
    from cli.render import estimate_table
    from planner.api import card_for_estimate

    if (options.get("method") or "").lower() == "auto":
        raise InputError(f"estimate takes one configuration: choose {opt('method')} full, lora or qlora "
                         "(or use `fitplan plan` to let the planner choose).")
    hardware = card_for_estimate(gpu, options.get("gpus"), options.get("nodes") or 1)
    cfg = _config(options, hardware)
    if trace:
        from cli.render import trace_table
        from measure.trace import trace_estimate
        data = trace_estimate(model, cfg, hardware=hardware, margin=margin)
        click.echo(json.dumps(data, indent=2) if as_json else trace_table(data))
        return
    data = estimate_json(model, cfg, hardware, margin, fixed_fields(options))
    click.echo(json.dumps(data, indent=2) if as_json else estimate_table(data))


def estimate_json(model: str, cfg, hardware=None, margin: float = DEFAULT_MARGIN,
                  fixed: frozenset[str] = frozenset({"precision"})) -> dict:
    """`estimate --json` of MODEL under cfg, on `hardware` (None: no card to fit against)."""
    from planner.api import evaluate
    from planner.serialize import estimate_dict
    return estimate_dict(evaluate(model, cfg, hardware, margin, fixed))


def _config(options: dict, hardware):
    """The configuration asked for; its GPU count is the hardware's unless --gpus says otherwise."""
    try:
        return config_from_options(options, **({"gpus": hardware.gpus_per_node} if hardware else {}))
    except ValueError as err:
        raise InputError(f"{err}") from None
