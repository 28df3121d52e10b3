"""Which model a MODEL argument names, where its weights come from, and its LoRA target module names."""
from __future__ import annotations

from pathlib import Path

from planner.config import TARGET_ALIASES
from planner.errors import UserError
from planner.model_input import resolve_model
from profiles.models import FUSED_ROLES, ModelSpec, find


def model_source(model_arg: str) -> dict:
    """Where the weights of MODEL come from: {"kind": catalog|folder|config|hub, "path": ...}."""
    path = Path(model_arg).expanduser()
    if path.is_dir():
        return {"kind": "folder", "path": str(path.resolve())}
    if path.is_file():
        return {"kind": "config", "path": str(path.resolve())}
    return {"kind": "catalog" if find(model_arg) else "hub", "path": None}


def resolve_spec(model_arg: str) -> ModelSpec:
    """The architecture numbers of MODEL (catalog name, local folder or config.json), via the planner."""
    return resolve_model(model_arg).spec


def lora_modules(targets: tuple[str, ...] | list[str], spec: ModelSpec) -> list[str]:
    """Module names for --lora-targets: aliases (attn, mlp, all-linear), roles (q, k, ..., down) or names."""
    linears = spec.linears()
    names: list[str] = []
    for target in targets:
        for role in TARGET_ALIASES.get(target, (target,)):
            found = [lin.module for lin in linears if lin.role == role or role in FUSED_ROLES.get(lin.role, ())]
            found = found or [lin.module for lin in linears if lin.module == role]
            if not found:
                known = sorted({lin.module for lin in linears} | {lin.role for lin in linears} | set(TARGET_ALIASES))
                raise UserError(f"LoRA target {role!r} is not a projection of {spec.name}; use one of {', '.join(known)}.")
            names += [n for n in found if n not in names]
    return names
