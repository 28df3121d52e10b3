"""The options shared by plan / estimate / config / launch (docs/cli.md), as decorators, and the typed
inputs they describe: a `TrainConfig`, a search `Request`.

Every training option defaults to None, so `plan` can tell "search this" from "the user fixed this".
"""
from __future__ import annotations

import math
from typing import Callable

import click

from common.errors import InputError
from common.units import parse_count
from planner.api import DEFAULT_MARGIN
from planner.activations import attention_kernel
from planner.config import TrainConfig
from planner.enums import Attention, Method, Offload, Optimizer, Precision, Sharding
from planner.model_input import ResolvedModel
from planner.search import Request

_CHOICES = [
    ("--method", Method.values() + ["auto"], "Fine-tuning method; `auto` lets the planner choose."),
    ("--precision", Precision.values(),
     "bf16-true: weights, grads and states in bf16; *-mixed: fp32 weights with 16-bit autocast."),
    ("--optimizer", Optimizer.values(), "Optimizer (adamw keeps two states per trainable parameter)."),
    ("--attn", Attention.values(), "Attention implementation (eager materialises the s x s scores)."),
    ("--sharding", Sharding.values(), "Data-parallel sharding over all GPUs (DeepSpeed ZeRO or FSDP)."),
    ("--offload", Offload.values(), "CPU offload of optimizer states, or of parameters too (ZeRO / FSDP)."),
]


class Finite(click.ParamType):
    """A finite number in [low, high] (click's FloatRange lets NaN through)."""

    name = "number"

    def __init__(self, low: float, high: float, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:40]!r} is not a number", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or below or number > self.high:
            bound = "above" if self.low_open else "from"
            self.fail(f"{str(value)[:40]!r} is not a number {bound} {self.low:g} up to {self.high:g}", param, ctx)
        return number


class Count(click.ParamType):
    """A whole count written as 20000000, 2e7 or 20M."""

    name = "count"

    def convert(self, value, param, ctx) -> int:
        try:
            return value if isinstance(value, int) else parse_count(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


def whole(low: int, high: int) -> click.IntRange:
    return click.IntRange(low, high)


MARGIN_OPTION = click.option("--margin", type=Finite(0, 0.9), default=DEFAULT_MARGIN, show_default=True,
                             help="Fraction of each card's memory kept free as a safety margin.")

PLOT_OPTION = click.option("--plot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                           help="Also draw the answer into FILE: .png, .svg or .html (self-contained); an "
                                "existing picture is replaced.")


def train_options(func: Callable) -> Callable:
    """Attach the shared training options; the command receives them as keyword arguments."""
    options = [click.option(flag, type=click.Choice(values, case_sensitive=False), default=None, help=text)
               for flag, values, text in _CHOICES]
    options += [
        click.option("--micro-batch", type=whole(1, 65536), default=None, help="Sequences per GPU per step."),
        click.option("--seq-len", type=whole(1, 10_000_000), default=None,
                     help="Tokens per sequence: plan for the LONGEST one you will train on. [default: 2048]"),
        click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="Activation (gradient) checkpointing."),
        click.option("--lora-r", type=whole(1, 65536), default=None, help="LoRA rank. [default: 16]"),
        click.option("--lora-alpha", type=whole(1, 1_000_000), default=None, help="LoRA scale. [default: 2r]"),
        click.option("--lora-targets", default=None, metavar="LIST",
                     help="Modules to adapt: q,k,v,o,gate,up,down, attn, mlp, all-linear or module names. "
                          "[default: all-linear]"),
        click.option("--no-double-quant", "no_double_quant", is_flag=True, default=False,
                     help="QLoRA without double quantization of the NF4 constants."),
        click.option("--gpus", type=whole(1, 4096), default=None,
                     help="GPUs per node. [default: the count in --gpu, else the GPUs found]"),
        click.option("--nodes", type=whole(1, 4096), default=1, show_default=True, help="Nodes."),
        click.option("--gpu", default=None, metavar="NAME",
                     help='Plan for a catalog card instead of probing: "RTX 4090", a100-80gb, h100x8 (8 per node).'),
        MARGIN_OPTION,
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


LAUNCH_OPTIONS = [
    click.option("--global-batch", type=whole(1, 100_000_000),
                 help="Sequences per optimizer step, all GPUs (sets grad_accum)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False),
                 help="Folder for plan.json and the launcher configs."),
    click.option("--force", is_flag=True, help="Overwrite existing files in --out."),
    click.option("--main-process-ip", help="Address of node 0 (multi-node runs)."),
    click.option("--main-process-port", type=click.IntRange(1, 65535), help="Port on node 0 (default 29500)."),
    click.option("--machine-rank", type=whole(0, 4095), default=0, show_default=True,
                 help="This node's rank."),
]
# Training fields a user can fix; the rest of TrainConfig (grad_accum) follows from them.
FIXABLE = ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len",
           "grad_ckpt", "lora_r", "lora_alpha", "lora_targets", "double_quant", "gpus", "nodes")


def launch_options(func: Callable) -> Callable:
    for option in reversed(LAUNCH_OPTIONS):
        func = option(func)
    return func


def config_from_options(options: dict, **fallback) -> TrainConfig:
    """A TrainConfig from the parsed options; unset ones come from `fallback`, then TrainConfig's defaults."""
    values = dict(fallback)
    for key in ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len",
                "grad_ckpt", "lora_r", "lora_alpha", "gpus", "nodes"):
        if options.get(key) is not None:
            values[key] = options[key].lower() if isinstance(options[key], str) else options[key]
    if options.get("lora_targets"):
        values["lora_targets"] = tuple(t.strip() for t in options["lora_targets"].split(",") if t.strip())
    if options.get("no_double_quant"):
        values["double_quant"] = False
    if options.get("lora_r") and not options.get("lora_alpha"):
        values["lora_alpha"] = 2 * options["lora_r"]
    return TrainConfig(**values)


def fixed_fields(options: dict) -> frozenset[str]:
    """The TrainConfig fields the user set ("auto" and the node count leave the choice to the planner)."""
    fixed = {key for key in FIXABLE if options.get(key) is not None}
    if (options.get("method") or "").lower() == "auto":
        fixed.discard("method")
    if options.get("no_double_quant"):
        fixed.add("double_quant")
    return frozenset(fixed - {"nodes"})


def request_from_options(model: ResolvedModel, options: dict, **extra) -> Request:
    """The search request of MODEL: what the user fixed, and the rest on TrainConfig's defaults."""
    clean = {k: v for k, v in options.items() if not (k == "method" and (v or "").lower() == "auto")}
    try:
        base = config_from_options(clean)
    except ValueError as err:
        raise InputError(f"{err}.") from None
    base = base.with_(attn=attention_kernel(model.spec, base))  # what transformers will really run
    return Request(spec=model.spec, base=base, fixed=fixed_fields(options), exact_params=model.exact_params,
                   **extra)
