"""The schema of plan.json (version 1), checked with pydantic before anything reads a value: what each key
holds and in what range, so a hand-edited or damaged plan is one sentence, never a crash."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from common.errors import InputError
from planner.enums import ActivationOffload, Attention, Batching, Loop, Loss, Method, Offload, Optimizer, Precision, Sharding

Count = Annotated[StrictInt, Field(ge=1, le=4096)]
Size = Annotated[StrictInt, Field(ge=1, le=100_000_000)]
Name = Annotated[StrictStr, Field(max_length=1000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    kind: Literal["catalog", "folder", "config", "hub"]
    path: Optional[Name] = None


class HardwareRecord(_Strict):
    gpu: Optional[Name] = None
    memory_bytes: Optional[Annotated[StrictInt, Field(ge=0, le=2**50)]] = None
    gpus_per_node: Count
    nodes: Count


class ConfigRecord(_Strict):
    method: Method
    precision: Precision
    optimizer: Optimizer
    micro_batch: Annotated[StrictInt, Field(ge=1, le=65536)]
    seq_len: Annotated[StrictInt, Field(ge=1, le=10_000_000)]
    grad_ckpt: StrictBool
    attn: Attention
    lora_r: Annotated[StrictInt, Field(ge=1, le=65536)]
    lora_alpha: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    lora_targets: Annotated[list[Annotated[StrictStr, Field(max_length=200)]], Field(min_length=1, max_length=64)]
    double_quant: StrictBool
    gpus: Count
    nodes: Count
    sharding: Sharding
    offload: Offload
    grad_accum: Size
    global_batch: Size
    # written by later fitplans; a plan without them takes the defaults
    engine: Optional[dict] = None
    loss: Loss = Loss.STANDARD
    liger_kernels: StrictBool = False
    batching: Batching = Batching.FIXED
    loop: Loop = Loop.TRAINER
    activation_offload: ActivationOffload = ActivationOffload.NONE


class MultiNode(_Strict):
    main_process_ip: Optional[Name] = None
    main_process_port: Optional[Annotated[StrictInt, Field(ge=1, le=65535)]] = None


class PlanRecord(BaseModel):
    model_config = ConfigDict(extra="allow")   # later versions may add keys this one ignores

    version: StrictInt
    fitplan_version: Name
    created: Name
    model: Name
    model_source: Source
    config: ConfigRecord
    hardware: HardwareRecord
    per_gpu: Optional[dict] = None
    launcher: Literal["accelerate", "deepspeed"]
    multi_node: Optional[MultiNode] = None


def check_plan(plan: object, where: str, version: int) -> None:
    if not isinstance(plan, dict):
        raise InputError(f"{where} is not a JSON object; write it again with `fitplan config`.")
    if "version" not in plan:
        raise InputError(f"{where} has no plan version, so it is not a plan.json fitplan wrote; write it again with "
                         "`fitplan config`.")
    if plan["version"] != version:
        raise InputError(f"{where} has plan version {str(plan['version'])[:20]}, but this fitplan reads version "
                         f"{version}; write it again with `fitplan config`.")
    try:
        PlanRecord.model_validate(plan)
    except ValidationError as err:
        first = err.errors()[0]
        where_in = ".".join(str(part) for part in first["loc"])
        what = "lacks" if first["type"] == "missing" else "has an invalid"
        raise InputError(f"{where} {what} {where_in} ({first['msg'][:120]}); write it again with "
                         "`fitplan config`.") from None
