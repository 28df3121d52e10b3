"""The options shared by plan / estimate / config / launch (docs/cli.md), as decorators, and the typed
inputs they describe: a `TrainConfig`, a search `Request`.

Every training option defaults to None, so `plan` can tell "search this" from "the user fixed this".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
from click.core import ParameterSource

from common.errors import InputError, flag, opt, spelled
from common.units import parse_count
from planner.api import DEFAULT_MARGIN
from planner.activations import attention_kernel
from planner.config import TrainConfig
from planner.enums import (ActivationOffload, Attention, Batching, Loop, Loss, Method, Offload, Optimizer, Precision,
                           Sharding)
from planner.foreign.core import COMMAND_LINE, show
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
    ("--loss", Loss.values(), "Loss kernel: transformers' standard loss over the full logits, Liger's fused "
                              "linear cross-entropy, or Cut Cross-Entropy. [default: standard]"),
    ("--batching", Batching.values(), "fixed: every row seq_len tokens; padded: rows padded to the longest with an "
                                      "attention mask; packed: several sequences per row, told apart by position "
                                      "ids. [default: fixed]"),
    ("--loop", Loop.values(), "trainer drops the model's outputs before backward; plain keeps them (and the "
                              "logits) through backward. [default: trainer]"),
    ("--activation-offload", ActivationOffload.values(),
     "Saved activations to CPU memory: all of them, or each checkpointed layer's input. [default: none]"),
]

NO_MODEL = ("Name a model: a catalog name (`fitplan models` lists them), a local config.json or model folder, or a "
            f"training config with {opt('from')}.")


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


class PathText(click.Path):
    """A path as typed; "" is a mistake (a variable that was never set), not the default nor the current folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give one, or leave the option out", param, ctx)
        return super().convert(value, param, ctx)


def whole(low: int, high: int) -> click.IntRange:
    return click.IntRange(low, high)


MARGIN_OPTION = click.option("--margin", type=Finite(0, 0.9), default=DEFAULT_MARGIN, show_default=True,
                             help="Fraction of each card's memory kept free as a safety margin.")

GRAD_ACCUM_OPTION = click.option(
    "--grad-accum", type=whole(1, 1_000_000), default=None,
    help="Micro-batches per optimizer step; every one after the first starts with the gradients of those before "
         "still in memory. [default: 1]")

PLOT_OPTION = click.option("--plot", type=PathText(dir_okay=False), default=None, metavar="FILE",
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
        click.option("--liger-kernels/--no-liger-kernels", default=None,
                     help="Liger's RMSNorm, SwiGLU/GeGLU and RoPE kernels in place of the model's modules (what "
                          "use_liger_kernel applies; the loss is --loss). [default: no]"),
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
    click.option("--out", "out_dir", type=PathText(file_okay=False),
                 help="Folder for plan.json and the launcher configs."),
    click.option("--force", is_flag=True, help="Overwrite existing files in --out."),
    click.option("--main-process-ip", help="Address of node 0 (multi-node runs)."),
    click.option("--main-process-port", type=click.IntRange(1, 65535), help="Port on node 0 (default 29500)."),
    click.option("--machine-rank", type=whole(0, 4095), default=0, show_default=True,
                 help="This node's rank."),
]
# Training fields a user can fix; the rest of TrainConfig (grad_accum) follows from them.
FIXABLE = ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len",
           "grad_ckpt", "lora_r", "lora_alpha", "lora_targets", "double_quant", "gpus", "nodes", "loss", "loop",
           "activation_offload", "batching", "liger_kernels")


def launch_options(func: Callable) -> Callable:
    for option in reversed(LAUNCH_OPTIONS):
        func = option(func)
    return func


def config_from_options(options: dict, **fallback) -> TrainConfig:
    """A TrainConfig from the parsed options; unset ones come from `fallback`, then TrainConfig's defaults."""
    values = dict(fallback)
    for key in ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len",
                "grad_ckpt", "lora_r", "lora_alpha", "gpus", "nodes", "loss", "loop", "activation_offload",
                "grad_accum", "batching", "liger_kernels"):
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


def request_from_options(model: ResolvedModel, options: dict, fallback: dict | None = None, **extra) -> Request:
    """The search request of MODEL: what the user fixed, and the rest on `fallback` (what --from files leave open)
    or TrainConfig's defaults."""
    clean = {k: v for k, v in options.items() if not (k == "method" and (v or "").lower() == "auto")}
    try:
        base = config_from_options(clean, **(fallback or {}))
    except ValueError as err:
        raise InputError(f"{err}.") from None
    base = base.with_(attn=attention_kernel(model.spec, base))  # what transformers will really run
    return Request(spec=model.spec, base=base, fixed=fixed_fields(options), exact_params=model.exact_params,
                   **extra)


# --- --from FILE: the training configs a person already has ---------------------------------------------------
FROM_OPTION = click.option(
    "--from", "from_files", multiple=True, metavar="FILE", type=PathText(dir_okay=False),
    help="Read the configuration from a training config (axolotl or LLaMA-Factory YAML, TRL / Trainer arguments) "
         "and/or an Accelerate YAML or DeepSpeed JSON; repeat for several. Options given here override the files.")
# The options that carry a TrainConfig field of the same name; the rest of what files set goes in as fallback.
OPTION_FIELDS = ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len",
                 "grad_ckpt", "lora_r", "lora_alpha", "lora_targets", "gpus", "nodes")
SEARCHED = ("method", "precision", "gpus", "sharding", "offload", "grad_ckpt", "micro_batch")


@dataclass
class FromFiles:
    """MODEL and the options as the --from files and the command line make them together."""

    model: str
    options: dict           # the parsed options, with what the files set filled in (fixed in plan)
    fallback: dict          # TrainConfig fields no option carries, and the tools' values for what is left open
    global_batch: int | None   # micro-batch x accumulation x GPUs, where the files give all three
    per_gpu_batch: int | None  # micro-batch x accumulation, where the files give both but not the GPU count
    section: dict           # the `from` part of --json
    lines: list[str]        # what the text output says about the files


def given_options(options: dict) -> set[str]:
    """The options the user typed (--nodes has a default, so its source tells)."""
    given = {k for k, v in options.items() if v is not None and k not in ("nodes", "no_double_quant")}
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("nodes") is ParameterSource.COMMANDLINE:
        given.add("nodes")
    return given


def read_from(model: str | None, options: dict, files: tuple[str, ...], given: set[str],
              gpu: str | None = None) -> FromFiles:
    """Read the files, settle them against the command line (which wins, with a note: a count in --gpu too)
    and resolve the model."""
    from planner.foreign import api as foreign
    from profiles.gpus import split_count
    m = foreign.read_files(files)
    count = split_count(gpu)[1] if gpu else 1
    if count != 1 and options.get("gpus") is None and "gpus" in m.values:
        options, given = {**options, "gpus": count, "gpu_text": gpu}, given | {"gpus"}
    overridden = {f for f in given if f in OPTION_FIELDS or f == "global_batch"}
    overridden |= {"double_quant"} if options.get("no_double_quant") else set()
    name, resolved = _model(model, m)
    answer = foreign.resolve(m, resolved.spec)
    m.check(overridden)
    merged, fallback = {k: v for k, v in options.items() if k != "gpu_text"}, {}
    for field, value in answer.fixed.items():
        _merge(m, field, value, merged, fallback, given, options, fixed=True)
    for field, value in answer.defaults.items():
        _merge(m, field, value, merged, fallback, given, options, fixed=False)
    batch = answer.fixed.get("global_batch") if "global_batch" not in given else None
    per_gpu = _per_gpu_batch(merged, fallback)
    world = merged.get("gpus") and per_gpu and per_gpu * merged["gpus"] * (merged.get("nodes") or 1)
    return FromFiles(name, merged, fallback, batch or world or None, None if world else per_gpu,
                     foreign.section(m), foreign.summary(m) + [f"  note: {spelled(n)}" for n in m.notes])


def _model(model: str | None, m) -> tuple[str, ResolvedModel]:
    from planner.foreign import api as foreign
    from planner.model_input import resolve_model
    found = foreign.model_of(m)
    if model:
        if found and found[0].strip().lower() != model.strip().lower():
            m.notes.append(f"MODEL {model[:80]} overrides {found[1]} ({found[0][:80]}).")
        return model, resolve_model(model)
    if not found:
        raise InputError("Name the model: give MODEL, or the training config that names it (base_model, "
                         "model_name_or_path) with --from.")
    name, origin = found
    if not _exists(Path(name).expanduser()) and _exists(Path(origin.file).parent / name):
        name = str(Path(origin.file).parent / name)   # a local model folder written relative to the config
    try:
        return name, resolve_model(name)
    except InputError as err:
        raise InputError(f"{origin}: {err}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):   # a name too long for the file system, or with a NUL: not a path
        return False


def _merge(m, field: str, value, merged: dict, fallback: dict, given: set[str], options: dict, fixed: bool) -> None:
    """One value the files give: into the options where one carries it, else into the fallback."""
    if field == "global_batch":
        return
    if field in given or (field == "double_quant" and options.get("no_double_quant")):
        typed = options.get(field, False)
        if fixed and _option_value(field, value) != _option_value(field, typed):
            spelled_as = _spelled_option(field, typed, options)
            m.notes.append(f"{spelled_as} overrides {m.values[field].origin} ({show(value)}).")
        return
    if field in OPTION_FIELDS and (fixed or field not in SEARCHED):
        merged[field] = _option_value(field, value)
    elif field == "double_quant" and fixed and value is False:
        merged["no_double_quant"] = True
    else:
        fallback[field] = value


def _spelled_option(field: str, typed, options: dict) -> str:
    if field == "gpus" and options.get("gpu_text"):
        return f'--gpu "{options["gpu_text"]}"'
    if field == "grad_ckpt":
        return "--grad-ckpt" if typed else "--no-grad-ckpt"
    return flag(COMMAND_LINE.get(field, field)) + ("" if field == "double_quant" else f" {show(typed)}")


def _option_value(field: str, value):
    if isinstance(value, (tuple, list)):
        return ",".join(value)
    value = getattr(value, "value", value)
    return value.lower() if isinstance(value, str) and field != "lora_targets" else value


def _per_gpu_batch(options: dict, fallback: dict) -> int | None:
    """micro-batch x accumulation where the micro-batch is fixed and the files give the accumulation."""
    if options.get("micro_batch") is None or "grad_accum" not in fallback:
        return None
    return options["micro_batch"] * fallback["grad_accum"]
