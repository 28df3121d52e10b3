"""Which model a MODEL argument names, where its weights come from, and its LoRA target module names.

Uses the planner's resolver (`planner.model_input.resolve_model`) when it exists; until then a catalog
name, a local folder or a local config.json is understood here. Imports nothing heavy.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from planner.config import TARGET_ALIASES
from planner.errors import UserError
from profiles.models import FUSED_ROLES, ModelSpec, find

# transformers model_type -> layout of profiles.models.LAYOUTS (the rest use Llama's module names)
LAYOUT_BY_TYPE = {"phi": "phi", "phi3": "phi3", "gpt_neox": "neox", "falcon": "neox", "gpt2": "gpt2"}


def model_source(model_arg: str) -> dict:
    """Where the weights of MODEL come from: {"kind": catalog|folder|config|hub, "path": ...}."""
    path = Path(model_arg).expanduser()
    if path.is_dir():
        return {"kind": "folder", "path": str(path.resolve())}
    if path.is_file():
        return {"kind": "config", "path": str(path.resolve())}
    return {"kind": "catalog" if find(model_arg) else "hub", "path": None}


def resolve_spec(model_arg: str) -> ModelSpec:
    """The architecture numbers of MODEL (catalog name, HF id, local folder or config.json)."""
    resolver = _planner_resolver()
    if resolver is not None:
        found = resolver(model_arg)
        return getattr(found, "spec", found)  # a ResolvedModel carries its ModelSpec
    spec = find(model_arg)
    if spec is not None:
        return spec
    path = Path(model_arg).expanduser()
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise UserError(f"unknown model {model_arg!r}: it is not in the catalog (`fitplan models`) and not a local "
                        "folder or config.json.")
    return spec_from_hf_config(_read_json(config_file), default_name=path.resolve().name)


def _planner_resolver():
    try:
        module = importlib.import_module("planner.model_input")
    except ModuleNotFoundError:
        return None
    return getattr(module, "resolve_model", None)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read the model config {path}: {err}.") from None


def spec_from_hf_config(cfg: dict, default_name: str = "local-model") -> ModelSpec:
    """A ModelSpec with the numbers a transformers config.json gives (enough for names and shapes)."""
    def get(*keys, default=None):
        return next((cfg[k] for k in keys if cfg.get(k) is not None), default)

    hidden = get("hidden_size", "n_embd", "d_model")
    kind = cfg.get("model_type", "unknown")
    try:
        return ModelSpec(
            name=get("_name_or_path", default=default_name) or default_name, hf_type=kind, family=kind,
            n_layer=get("num_hidden_layers", "n_layer"), hidden=hidden,
            intermediate=get("intermediate_size", "n_inner", default=4 * (hidden or 0)),
            n_head=get("num_attention_heads", "n_head"), vocab=get("vocab_size"),
            n_kv_head=get("num_key_value_heads"), head_dim=get("head_dim"),
            layout=LAYOUT_BY_TYPE.get(kind, "llama"), tied_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    except (TypeError, ValueError) as err:
        raise UserError(f"the model config of {default_name} lacks architecture numbers fitplan needs ({err}).") from None


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

