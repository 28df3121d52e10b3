"""`fitplan estimate`: the per-GPU memory of ONE configuration, by component, with its peak phase."""
from __future__ import annotations

import json

import click

from common.errors import InputError, opt
from cli.options import (FROM_OPTION, GRAD_ACCUM_OPTION, NO_MODEL, PLOT_OPTION, config_from_options, fixed_fields,
                         given_options, read_from, train_options)
from planner.api import DEFAULT_MARGIN, Evaluation
from planner.config import TrainConfig
from planner.hardware import Hardware
from planner.model_input import ResolvedModel


@click.command("estimate")
@click.argument("model", required=False)
@train_options
@GRAD_ACCUM_OPTION
@FROM_OPTION
@click.option("--trace", is_flag=True,
              help="Exact mode: run the real training step on fake tensors and report measured bytes; also "
                   "takes config.json files of model types only transformers knows.")
@PLOT_OPTION
def command(model: str | None, gpu: str | None, as_json: bool, trace: bool, margin: float, plot: str | None,
            from_files: tuple[str, ...], **options) -> None:
    """Per-GPU memory of one configuration of MODEL, component by component, and whether it fits.

    MODEL is a catalog name (see `fitplan models`), a local config.json or a local model folder.
    Unset options take the defaults shown in --help (LoRA, bf16-true, AdamW, micro-batch 1, 2048
    tokens). With --gpu (or the GPUs found on this machine) it says whether the configuration fits with
    --margin of the card kept free, the same test `plan`, `fits`, `config` and `launch` apply; a count
    in --gpu (h100x8) is the number of GPUs.

    --from FILE reads the configuration from a training config you already have (axolotl, LLaMA-Factory,
    TRL / Trainer arguments) and its Accelerate YAML or DeepSpeed JSON; MODEL may then be left out, and
    options given here override the files.

    --plot FILE draws memory over the training step, layer by layer (.png, .svg or .html); with --trace
    the measured phase peaks are drawn over the prediction.

    \b
    Examples:
      fitplan estimate meta-llama/Llama-2-7b-hf --method full --micro-batch 1 --seq-len 512
      fitplan estimate Llama-3.1-8B --method qlora --grad-ckpt --micro-batch 4 --json
      fitplan estimate Llama-2-70b-hf --method full --sharding zero3 --grad-ckpt --gpu h100x8
      fitplan estimate Llama-3.1-8B --method qlora --grad-ckpt --gpu "RTX 4090" --plot step.png
      fitplan estimate ./my-model/config.json --trace --json
      fitplan estimate --from axolotl.yaml --gpu "RTX 4090"
      fitplan estimate --from train_args.json --from accelerate.yaml --from ds_zero3.json --gpu h100x8
    """
    from cli.render import estimate_table, trace_table

    if plot:
        check_plot(plot)
    files, fallback = None, {}
    if from_files:
        files = read_from(model, options, from_files, given_options(options), gpu)
        model, options, fallback = files.model, files.options, files.fallback
    elif not model:
        raise InputError(NO_MODEL)
    hardware, cfg = estimate_inputs(gpu, options, fallback)
    # the trace's analytic side ignores which options were set, so its picture must too
    fixed = frozenset({"precision"}) if trace else fixed_fields(options)
    evaluation = _evaluation_to_draw(model, cfg, hardware, margin, fixed, trace) if plot else None
    if trace:
        from measure.trace import trace_estimate
        data = trace_estimate(model, cfg, hardware=hardware, margin=margin)
    else:
        data = estimate_json(model, cfg, hardware, margin, fixed, evaluation)
    if plot:
        draw_timeline(plot, evaluation, data if trace else None)
    _echo(data, as_json, trace_table if trace else estimate_table, files)


def _echo(data: dict, as_json: bool, table, files) -> None:
    """The answer, with what --from read: the `from` section in JSON, a line per file above the table."""
    if files is not None:
        data["from"] = files.section
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo("\n".join([*(files.lines if files else []), table(data)]))


def check_plot(path: str) -> None:
    """A picture that cannot be drawn fails before any work."""
    from cli.plot import plot_format, require_matplotlib
    plot_format(path)
    require_matplotlib()


def estimate_inputs(gpu: str | None, options: dict,
                    fallback: dict | None = None) -> tuple[Hardware | None, TrainConfig]:
    """(the card, else None; the configuration asked for): its GPU count is the card's unless --gpus says;
    `fallback`: what --from files set that no option carries."""
    from planner.api import card_for_estimate

    fallback = fallback or {}
    if (options.get("method") or "").lower() == "auto":
        raise InputError(f"estimate takes one configuration: choose {opt('method')} full, lora or qlora "
                         "(or use `fitplan plan` to let the planner choose).")
    hardware = card_for_estimate(gpu, options.get("gpus") or fallback.get("gpus"), options.get("nodes") or 1)
    return hardware, _config(options, hardware, fallback)


def evaluation_for(model: str | ResolvedModel, gpu: str | None, margin: float, options: dict) -> Evaluation:
    """The `planner.api.Evaluation` of MODEL (a name or a `ResolvedModel`) under the parsed options."""
    from planner.api import evaluate
    hardware, cfg = estimate_inputs(gpu, options)
    return evaluate(model, cfg, hardware, margin, fixed_fields(options))


def estimate_json(model: str, cfg: TrainConfig, hardware: Hardware | None = None, margin: float = DEFAULT_MARGIN,
                  fixed: frozenset[str] = frozenset({"precision"}), evaluation: Evaluation | None = None) -> dict:
    """`estimate --json` of MODEL under cfg, on `hardware` (None: no card to fit against)."""
    from planner.api import evaluate
    from planner.serialize import estimate_dict
    return estimate_dict(evaluation or evaluate(model, cfg, hardware, margin, fixed))


def draw_timeline(path: str, evaluation: Evaluation, traced: dict | None = None) -> None:
    """Write the timeline picture of `evaluation`; with a trace, its measured phase peaks drawn over it."""
    from cli.plot import timeline_figure, write_picture
    from planner.serialize import timeline_dict

    data = timeline_dict(evaluation)
    measured, note = None, None
    if traced is not None:
        measured = traced["per_gpu"]["phases"] if traced.get("source") == "trace" else None
        note = "measured: the trace's peak of each phase" if measured else f"not measured: {traced.get('source')}"
        data["trace"] = {"source": traced.get("source"), "phases": measured}
    write_picture(path, lambda: timeline_figure(data, measured, note), f"{data['model']}: memory over one step", data)
    click.echo(f"wrote {path}", err=True)


def _evaluation_to_draw(model: str, cfg: TrainConfig, hardware: Hardware | None, margin: float,
                        fixed: frozenset[str], trace: bool) -> Evaluation:
    """The analytic answer the picture draws; an architecture only the trace knows has none."""
    from measure.trace import raw_config
    from planner.api import evaluate
    try:
        return evaluate(model, cfg, hardware, margin, fixed)
    except InputError:
        if trace and raw_config(model):
            raise InputError(f"{opt('plot')} draws the planner's step, and the planner does not model this "
                             f"architecture; drop {opt('plot')} to trace it alone.") from None
        raise


def _config(options: dict, hardware, fallback: dict | None = None):
    """The configuration asked for; its GPU count is the hardware's unless --gpus (or a --from file) says otherwise;
    `fallback`: what --from files set that no option carries."""
    try:
        return config_from_options(options, **{**(fallback or {}),
                                               **({"gpus": hardware.gpus_per_node} if hardware else {})})
    except ValueError as err:
        raise InputError(f"{err}") from None
