"""The page's JSON API without the server: request parameters in, the command line's JSON out.

Each endpoint takes the options of the command it mirrors, named as in the JSON (`seq_len`, `grad_ckpt`), as
a JSON object (POST) or a query string (GET), and answers with what `fitplan <command> --json` prints. The
values are parsed by that command's own click parameters, so what the command line refuses is refused here
in the same sentence, options spelled as its flags. MODEL is a catalog name (`model`) or the contents of a
config.json (`config`), never a path: the server reads no file on behalf of whoever reaches it.
"""
from __future__ import annotations

import importlib
import re
import shlex
from dataclasses import replace
from pathlib import Path

import click

from common.errors import FitplanError, InputError, clipped, full_stop, one_line, opt, spelled
from common.files import parse_json
from planner.model_input import ResolvedModel, closest_names

# Options of the training configuration, shared by every planning endpoint (as in cli/options.py)
TRAIN = ("method", "precision", "optimizer", "attn", "sharding", "offload", "loss", "loop", "activation_offload",
         "micro_batch", "seq_len", "grad_ckpt", "lora_r", "lora_alpha", "lora_targets", "double_quant", "gpus",
         "nodes", "gpu", "margin", "batching", "liger_kernels")
MODEL_KEYS = ("model", "config", "config_name")
PARAMETERS = {"estimate": TRAIN + ("grad_accum",), "timeline": TRAIN + ("grad_accum",),
              "plan": TRAIN + ("global_batch", "prefer", "tokens", "epochs", "interconnect"),
              "configs": TRAIN + ("global_batch", "force")}
COMMAND_OF = {"estimate": "estimate", "timeline": "estimate", "plan": "plan", "configs": "config"}
# Yes/no options: the flag for yes and the flag for no (None: the command's default)
SWITCHES = {"grad_ckpt": ("--grad-ckpt", "--no-grad-ckpt"), "double_quant": (None, "--no-double-quant"),
            "liger_kernels": ("--liger-kernels", "--no-liger-kernels"),
            "force": ("--force", None)}
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
NOT_OPTIONS = ("model", "gpu", "margin", "as_json", "trace", "plot", "global_batch", "prefer", "tokens", "epochs",
               "force", "out_dir", "main_process_ip", "main_process_port", "machine_rank", "model_path", "interconnect",
               "from_files")
MAX_NAME = 120   # characters of a model name shown back


def answer(endpoint: str, payload: dict) -> dict | list:
    """The JSON of `endpoint` for the request's parameters; FitplanError (one sentence) for bad input."""
    if endpoint == "models":
        return models_answer(payload)
    if endpoint == "gpus":
        return gpus_answer(payload)
    params = parsed(endpoint, payload)
    return ANSWERS[endpoint](model_of(payload), params)


def sentence(err: FitplanError) -> str:
    """The error as the command line says it: one line, options spelled as flags."""
    return one_line(err.render())


# --- parameters --------------------------------------------------------------------------------------------

def parsed(endpoint: str, payload: dict) -> dict:
    """The command's parsed parameters (click converts and checks every value, as on the command line)."""
    only(payload, PARAMETERS[endpoint] + MODEL_KEYS, endpoint)
    args = [arg for key in PARAMETERS[endpoint] for arg in flag_args(key, payload.get(key))]
    command = click_command(COMMAND_OF[endpoint])
    try:   # "--" first: a value can never be read as an option; MODEL is resolved apart (model_of)
        return command.make_context(command.name, [*args, "--", "model"]).params
    except click.ClickException as err:
        raise InputError(full_stop(clipped(err.format_message()))) from None   # as cli.main.fail says it


def only(payload: dict, known: tuple[str, ...], endpoint: str) -> None:
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise InputError(f"/api/{endpoint} takes no parameter {clipped(unknown[0])!r}; it takes "
                         f"{', '.join(sorted(known))}.")


def flag_args(key: str, value: object) -> list[str]:
    """The command-line words of one parameter: none when unset (null or ""), so the planner chooses."""
    if value is None or value == "":
        return []
    if key in SWITCHES:
        word = SWITCHES[key][0 if boolean(key, value) else 1]
        return [word] if word else []
    if key == "lora_targets" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if isinstance(value, (dict, list)):
        raise InputError(f"{opt(key)} takes one value, not a JSON {'object' if isinstance(value, dict) else 'list'}.")
    if isinstance(value, bool):
        value = str(value).lower()
    return [f"--{key.replace('_', '-')}={value}"]


def boolean(key: str, value: object) -> bool:
    """A yes/no parameter: JSON true/false, or true/false, 1/0, yes/no, on/off in a query string."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in TRUE | FALSE:
        return text in TRUE
    raise InputError(f"{opt(key)} is true or false, not {clipped(str(value))!r}.")


def click_command(name: str) -> click.Command:
    from cli.main import COMMANDS
    return importlib.import_module(COMMANDS[name]).command


def options_of(params: dict) -> dict:
    """The training options among a command's parameters (what the commands receive as **options)."""
    return {key: value for key, value in params.items() if key not in NOT_OPTIONS}


# --- the model -----------------------------------------------------------------------------------------------

def model_of(payload: dict) -> ResolvedModel:
    """A catalog name (`model`) or a config.json's contents (`config`), never both."""
    name, config = payload.get("model"), payload.get("config")
    if name not in (None, "") and config not in (None, ""):
        raise InputError("Give a model name or a config.json, not both.")
    if config not in (None, ""):
        return uploaded_model(config, payload.get("config_name"))
    return catalog_model(name)


def catalog_model(name: object) -> ResolvedModel:
    from profiles.models import find
    if not isinstance(name, str) or not name.strip():
        raise InputError("Name a model: a catalog name (`fitplan models` lists them), or drop its config.json "
                         "on the page.")
    spec = find(name[:500])
    if spec is None:
        close = closest_names(name.strip()[:500])
        hint = f" (closest catalog names: {', '.join(close)})" if close else ""
        raise InputError(f"Unknown model {clipped(name[:MAX_NAME])!r}{hint}: choose a catalog name (`fitplan models` "
                         "lists them), or drop the model's config.json on the page.")
    return ResolvedModel(spec, "catalog")


def uploaded_model(config: object, file_name: object) -> ResolvedModel:
    """The model a dropped config.json describes (its text, or the object it holds)."""
    from profiles.hf_config import spec_from_hf_config
    if isinstance(config, str):
        config = parse_json(config, "The config.json", "drop the model's own config.json")
    if not isinstance(config, dict):
        raise InputError(f"The config.json holds a JSON {type(config).__name__}, not an object; give the model's "
                         "config.json.")
    name = config.get("_name_or_path")
    if not isinstance(name, str) or not name.strip():
        name = Path(file_name).stem if isinstance(file_name, str) and file_name.strip() else "uploaded"
    spec = spec_from_hf_config(config, clipped(name)[:MAX_NAME])
    return ResolvedModel(replace(spec, source="uploaded config.json"), "config")


# --- the answers ---------------------------------------------------------------------------------------------

def estimate_answer(model: ResolvedModel, params: dict) -> dict:
    """`fitplan estimate --json`."""
    from cli.commands.estimate import evaluation_for
    from planner.serialize import estimate_dict
    return estimate_dict(evaluation_for(model, params["gpu"], params["margin"], options_of(params)))


def timeline_answer(model: ResolvedModel, params: dict) -> dict:
    """`fitplan estimate --json` with "timeline": every moment of the step (what --plot draws)."""
    from cli.commands.estimate import evaluation_for
    from planner.serialize import timeline_dict
    return timeline_dict(evaluation_for(model, params["gpu"], params["margin"], options_of(params)))


def plan_answer(model: ResolvedModel, params: dict) -> dict:
    """`fitplan plan --json` (also when nothing fits: then `recommended` is null and `nothing_fits` says why)."""
    from cli.commands.plan import plan_json
    request = {key: params[key] for key in ("global_batch", "margin", "prefer", "tokens", "epochs", "interconnect")}
    return plan_json(model, options_of(params), gpu=params["gpu"], **request)[0]


def configs_answer(model: ResolvedModel, params: dict) -> dict:
    """What `fitplan config` writes, as text: plan.json, the Accelerate YAML and (for ZeRO) the DeepSpeed JSON,
    for the folder `run_dir`, with the command that launches it."""
    from cli.commands.config import chosen_plan
    from launch import emit, planfile

    plan, warnings = chosen_plan(model, None, params["gpu"], params["global_batch"], params["force"],
                                 options_of(params), params["margin"])
    run_dir = Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "-", plan["model"].split("/")[-1]).strip("-.")
    files = emit.render_configs(run_dir, planfile.plan_config(plan), emit.MultiNode())
    texts = {planfile.PLAN_NAME: planfile.plan_text(plan), **{path.name: text for path, text in files.values()}}
    return {"plan": plan, "files": texts, "run_dir": str(run_dir),
            "launch": f"fitplan launch --plan {shlex.quote(str(run_dir / planfile.PLAN_NAME))}",
            "warnings": [spelled(w) for w in warnings]}


ANSWERS = {"estimate": estimate_answer, "timeline": timeline_answer, "plan": plan_answer, "configs": configs_answer}


def models_answer(payload: dict) -> list:
    """`fitplan models --json`, of one `family`, and only the models whose name or family hold every word of `q`."""
    from cli.commands.models import models_dict, select
    from profiles.models import catalog
    only(payload, ("q", "family"), "models")
    family, words = payload.get("family"), payload.get("q") or ""
    if not isinstance(family, (str, type(None))) or not isinstance(words, str):
        raise InputError("/api/models takes q and family as text.")
    found = models_dict(select(catalog(), family or None))
    return [m for m in found if all(w in f"{m['model']} {m['family']}".lower() for w in words.lower().split())]


def gpus_answer(payload: dict) -> dict:
    """`fitplan gpus --json` (this machine's GPUs), or with `catalog` true `fitplan gpus --catalog --json`."""
    from cli.commands.gpus import catalog_dict
    from planner.nvml import probe
    only(payload, ("catalog",), "gpus")
    if boolean("catalog", payload.get("catalog", False)):
        return catalog_dict()
    return {"source": "nvml", **probe().to_dict()}


ENDPOINTS = (*ANSWERS, "models", "gpus")
