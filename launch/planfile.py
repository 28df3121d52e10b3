"""`plan.json`: the versioned record of one chosen plan, read by the launcher and the recipe.

Version 1 keys (see tests/test_launch_fixtures/plan_v1.json):
  version, fitplan_version, created, model, model_source {kind, path}, config (TrainConfig.to_dict()
  plus global_batch), hardware {gpu, memory_bytes, gpus_per_node, nodes}, per_gpu (estimate's
  per_gpu dict or null), launcher (accelerate | deepspeed).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from planner.config import TrainConfig
from common.errors import InputError
from common.files import read_json, write_text

PLAN_VERSION = 1
PLAN_NAME = "plan.json"


def fitplan_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fitplan")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def hardware_record(config: TrainConfig, gpu: str | None = None, memory_bytes: int | None = None) -> dict:
    return {"gpu": gpu, "memory_bytes": memory_bytes, "gpus_per_node": config.gpus, "nodes": config.nodes}


def build_plan(model: str, source: dict, config: TrainConfig, hardware: dict | None = None,
               per_gpu: dict | None = None, launcher: str = "accelerate") -> dict:
    """A plan.json dict for `config`; `hardware` defaults to the GPU counts in `config`."""
    return {
        "version": PLAN_VERSION,
        "fitplan_version": fitplan_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "model_source": source,
        "config": {**config.to_dict(), "global_batch": global_batch(config)},
        "hardware": {**hardware_record(config), **(hardware or {})},
        "per_gpu": per_gpu,
        "launcher": launcher,
    }


def global_batch(config: TrainConfig) -> int:
    return config.micro_batch * config.grad_accum * config.world_size


def plan_config(plan: dict) -> TrainConfig:
    """The TrainConfig stored in a validated plan."""
    fields = {k: v for k, v in plan["config"].items() if k != "global_batch"}
    return TrainConfig.from_dict(fields)


def validate_plan(plan: object, where: str = "plan.json") -> dict:
    """Check a loaded plan against its schema (`launch.plan_schema`); raise InputError with one sentence
    naming the first problem."""
    from launch.plan_schema import check_plan
    check_plan(plan, where, PLAN_VERSION)
    try:
        config = plan_config(plan)
    except (TypeError, ValueError) as err:
        raise InputError(f"{where} has an invalid config: {err}.") from None
    stated = plan["config"].get("global_batch", global_batch(config))
    if stated != global_batch(config):
        raise InputError(f"{where} says global_batch {stated}, but micro_batch x grad_accum x GPUs is "
                         f"{global_batch(config)}; fix one of them.")
    return plan


def read_plan(path: str | Path) -> dict:
    return validate_plan(read_json(path, "plan"), str(path))


def plan_text(plan: dict, where: str = "plan.json") -> str:
    return json.dumps(validate_plan(plan, where), indent=2) + "\n"


def write_plan(path: str | Path, plan: dict, force: bool = False) -> Path:
    return write_text(path, plan_text(plan, str(path)), force)
