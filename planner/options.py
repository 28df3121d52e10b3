"""The options shared by plan / estimate / config / launch (see design/interface.md), as one decorator.

Every option defaults to None, so `plan` can tell "search this" from "the user fixed this".
"""
from __future__ import annotations

from typing import Callable

import click

from planner.config import TrainConfig
from planner.enums import Attention, Method, Offload, Optimizer, Precision, Sharding

_CHOICES = [
    ("--method", Method.values() + ["auto"], "Fine-tuning method; `auto` lets the planner choose."),
    ("--precision", Precision.values(),
     "bf16-true: weights, grads and states in bf16; *-mixed: fp32 weights with 16-bit autocast."),
    ("--optimizer", Optimizer.values(), "Optimizer (adamw keeps two states per trainable parameter)."),
    ("--attn", Attention.values(), "Attention implementation (eager materialises the s x s scores)."),
    ("--sharding", Sharding.values(), "Data-parallel sharding over all GPUs (DeepSpeed ZeRO or FSDP)."),
    ("--offload", Offload.values(), "CPU offload of optimizer states, or of parameters too (ZeRO / FSDP)."),
]


def train_options(func: Callable) -> Callable:
    """Attach the shared training options; the command receives them as keyword arguments."""
    options = [click.option(flag, type=click.Choice(values, case_sensitive=False), default=None, help=text)
               for flag, values, text in _CHOICES]
    options += [
        click.option("--micro-batch", type=click.IntRange(min=1), default=None, help="Sequences per GPU per step."),
        click.option("--seq-len", type=click.IntRange(min=1), default=None,
                     help="Tokens per sequence: plan for the LONGEST one you will train on. [default: 2048]"),
        click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="Activation (gradient) checkpointing."),
        click.option("--lora-r", type=click.IntRange(min=1), default=None, help="LoRA rank. [default: 16]"),
        click.option("--lora-alpha", type=click.IntRange(min=1), default=None, help="LoRA scale. [default: 2r]"),
        click.option("--lora-targets", default=None, metavar="LIST",
                     help="Modules to adapt: q,k,v,o,gate,up,down, attn, mlp, all-linear or module names. "
                          "[default: all-linear]"),
        click.option("--no-double-quant", "no_double_quant", is_flag=True, default=False,
                     help="QLoRA without double quantization of the NF4 constants."),
        click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPUs per node."),
        click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes."),
        click.option("--gpu", default=None, metavar="NAME",
                     help='Plan for a catalog card instead of probing: "RTX 4090", a100-80gb, h100x8.'),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout."),
    ]
    for option in reversed(options):
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
