"""`fitplan fits`: which catalog models fit on a card, per method, with the largest micro-batch."""
from __future__ import annotations

import json

import click

from cli.commands.models import billions, select
from cli.options import MARGIN_OPTION, whole
from cli.table import text_table
from common.errors import spelled
from common.units import GiB
from planner.api import best_fit
from planner.enums import Method
from planner.hardware import Hardware
from planner.search import Plan
from profiles.models import catalog
from profiles.spec import ModelSpec


@click.command("fits")
@click.option("--gpu", required=True, metavar="NAME",
              help='Catalog card, optionally with a count: "RTX 4090", a100-80gb, h100x8.')
@click.option("--seq-len", type=whole(1, 10_000_000), default=2048, show_default=True,
              help="Tokens per sequence.")
@MARGIN_OPTION
@click.option("--family", default=None, metavar="NAME", help="Only this model family (see `fitplan models`).")
@click.option("--all", "all_models", is_flag=True, help="Include instruct / chat variants (same numbers as their base).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(gpu: str, seq_len: int, margin: float, family: str | None, all_models: bool, as_json: bool) -> None:
    """Which catalog models fit on --gpu, for full fine-tuning, LoRA and QLoRA.

    Each cell is the plan with the largest micro-batch that fits in the card less --margin, or N/A.
    On one card the whole search runs (precision, checkpointing). With several cards (h100x8) the
    matrix is restricted to stay fast: all the cards, ZeRO-3 with activation checkpointing, CPU offload
    only when nothing fits without it; `fitplan plan MODEL --gpu ...` searches every strategy.

    \b
    Examples:
      fitplan fits --gpu "RTX 4090"
      fitplan fits --gpu h100x8 --family llama-3 --seq-len 4096 --json
    """
    from planner.hardware import resolve_hardware

    hardware = resolve_hardware(gpu, None, 1)
    specs = select(catalog(), family, bases_only=not all_models)
    data = fits_dict(specs, hardware, seq_len, margin)
    click.echo(json.dumps(data, indent=2) if as_json else fits_table(data))


def fits_dict(specs: list[ModelSpec], hardware: Hardware, seq_len: int, margin: float) -> dict:
    """The matrix as the JSON of `fits --json`."""
    rows = [{"model": spec.name, "family": spec.family, "params": spec.params,
             **{method.value: cell_dict(*best_fit(spec, method, hardware, seq_len, margin)) for method in Method}}
            for spec in specs]
    card = hardware.card
    return {"gpu": {"name": card.name, "memory_bytes": card.memory_bytes, "count": hardware.gpus_per_node},
            "seq_len": seq_len, "margin": margin, "methods": Method.values(), "models": rows}


def cell_dict(plan: Plan | None, unsupported: str | None = None) -> dict:
    if plan is None:
        return {"fits": False, "unsupported": unsupported and spelled(unsupported), "micro_batch": None,
                "total_bytes": None, "sharding": None, "grad_ckpt": None, "precision": None, "offload": None}
    cfg = plan.cfg
    return {"fits": True, "unsupported": None, "micro_batch": cfg.micro_batch, "total_bytes": plan.total_bytes,
            "sharding": cfg.sharding.value, "grad_ckpt": cfg.grad_ckpt, "precision": cfg.precision.value,
            "offload": cfg.offload.value}


def fits_table(data: dict) -> str:
    """The matrix as text: the largest micro-batch per method, N/A where nothing fits."""
    gpu = data["gpu"]
    count = f"{gpu['count']} x " if gpu["count"] > 1 else ""
    title = (f"Catalog models on {count}{gpu['name']} ({gpu['memory_bytes'] / GiB:.1f} GiB), "
             f"{data['seq_len']} tokens, {data['margin']:.0%} margin: largest micro-batch per method")
    headers = ["Model", "Params", *data["methods"]]
    rows = [[row["model"], billions(row["params"]), *(_cell(row[method]) for method in data["methods"])]
            for row in data["models"]]
    table = text_table(headers, rows, right={"Params"})
    notes = ("N/A: does not fit. unsupported: the libraries cannot train it (see --json for why). "
             "ckpt: activation checkpointing; offload: CPU offload (ZeRO-3).")
    return f"{title}\n\n{table}\n\n{notes}"


def _cell(cell: dict) -> str:
    if not cell["fits"]:
        return "unsupported" if cell.get("unsupported") else "N/A"
    flags = (["ckpt"] if cell["grad_ckpt"] else []) + \
            ([f"offload {cell['offload']}"] if cell["offload"] != "none" else [])
    return f"{cell['micro_batch']}" + (f" ({', '.join(flags)})" if flags else "")
