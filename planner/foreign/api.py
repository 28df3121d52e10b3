"""Reading the --from files together: at most one training config, one Accelerate YAML and one DeepSpeed JSON (the
one a training config names, when it is not given), each mapped by its tool's reader into one `Mapping`;
`resolve` finishes the values that need the model (DeepSpeed's "auto" bucket sizes, LoRA targets the model
lacks); `section` and `summary` say what was read. Pure functions of the files' contents; no torch."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from common.errors import InputError, opt, spelled
from planner.enums import Offload
from planner.foreign import accelerate, axolotl, deepspeed, keys, llamafactory, trainer
from planner.foreign.core import Keys, Mapping, Origin, PerHidden, show
from planner.foreign.load import TOOLS, detect, load
from planner.sharding import EngineSettings
from profiles.spec import LAYOUTS, ModelSpec

MAX_FILES = 8
TRAINING = ("axolotl", "llama-factory", "trl", "transformers")
READERS = {"axolotl": axolotl.read, "llama-factory": llamafactory.read,
           "trl": lambda m, cfg: trainer.read(m, cfg, "trl"),
           "transformers": lambda m, cfg: trainer.read(m, cfg, "transformers"),
           "accelerate": accelerate.read, "deepspeed": deepspeed.read}
KNOWN = {"axolotl": keys.AXOLOTL, "llama-factory": keys.LLAMA_FACTORY | keys.TRAINER,
         "trl": keys.TRL | keys.TRAINER, "transformers": keys.TRAINER | keys.TRL, "accelerate": keys.ACCELERATE,
         "deepspeed": keys.DEEPSPEED}
# Sections whose keys are reported one by one, and the keys each may hold
SECTIONS = {"fsdp_config": keys.ACCELERATE_FSDP, "deepspeed_config": keys.ACCELERATE_DEEPSPEED,
            "zero_optimization": keys.ZERO}
ROLES = frozenset().union(*(layout.keys() for layout in LAYOUTS.values())) | {"attn", "mlp", "all-linear"}


def read_files(paths: Sequence[str]) -> Mapping:
    """What the files say together: one training config, one Accelerate YAML and one DeepSpeed JSON at most."""
    if len(paths) > MAX_FILES:
        raise InputError(f"{len(paths)} files were given with {opt('from')}; give at most {MAX_FILES}.")
    sources = [(str(path), *_detected(str(path))) for path in paths]
    _one_each(sources)
    m = Mapping()
    order = {"accelerate": 1, "deepspeed": 2}
    for path, tool, data in sorted(sources, key=lambda s: order.get(s[1], 0)):
        read_one(m, path, tool, data)
    _linked_deepspeed(m, sources)
    return m


def _detected(path: str) -> tuple[str, dict]:
    data = load(path)
    return detect(data, path), data


def _one_each(sources: list[tuple[str, str, dict]]) -> None:
    groups = {"training config": TRAINING, "Accelerate config": ("accelerate",), "DeepSpeed JSON": ("deepspeed",)}
    for what, tools in groups.items():
        found = [path for path, tool, _ in sources if tool in tools]
        if len(found) > 1:
            raise InputError(f"{found[0]} and {found[1]} are both a {what}; give one {what} with {opt('from')}.")


def read_one(m: Mapping, path: str, tool: str, data: dict, prefix: str = "") -> None:
    """Map one file (or a section inline in it: `prefix`) and sort its keys into mapped, ignored and unknown."""
    before = set(m.unmodelled)
    cfg = Keys(data, path, prefix)
    if not prefix:
        m.files.append((path, tool))
    READERS[tool](m, cfg)
    used = cfg.all_read() | (set(m.unmodelled) - before)
    for key in _key_paths(cfg):
        if key in used:
            m.read.append((cfg.file, key))
        elif _known(tool, key, prefix):
            m.ignored.append((cfg.file, key))
        else:
            m.unknown.append((cfg.file, key))


def _key_paths(cfg: Keys) -> list[str]:
    """The file's keys, with the keys of the sections fitplan reads one by one."""
    out = []
    for key, value in cfg.data.items():
        if isinstance(value, dict) and key in SECTIONS and key in cfg.read:
            out += [f"{cfg.prefix}{key}.{inner}" for inner in value]
        else:
            out.append(f"{cfg.prefix}{key}")
    return out


def _known(tool: str, key: str, prefix: str) -> bool:
    parts = key[len(prefix):].split(".")
    if len(parts) == 1:
        return parts[0] in KNOWN[tool]
    section, leaf = parts[0], parts[-1]
    words = SECTIONS.get(section, frozenset())
    return leaf in words or f"fsdp_{leaf}" in words or leaf.removeprefix("fsdp_") in words or tool == "axolotl"


def _linked_deepspeed(m: Mapping, sources: list[tuple[str, str, dict]]) -> None:
    """The DeepSpeed config a training config or Accelerate YAML names: the one given with --from, else the
    file it names (beside the config or here), else what its name says (zero3_offload.json)."""
    given = [path for path, tool, _ in sources if tool == "deepspeed"]
    for origin, value in m.deepspeed_refs:
        if isinstance(value, dict):
            read_one(m, origin.file, "deepspeed", value, prefix=f"{origin.key}.")
        elif not isinstance(value, str):
            raise InputError(f"{origin} must be the path of a DeepSpeed JSON, not {show(value)}; fix the file.")
        elif given:
            if Path(value).name != Path(given[0]).name:
                m.notes.append(f"{origin} names {value[:80]}; the DeepSpeed JSON given, {given[0]}, is used instead.")
        else:
            given = _follow(m, origin, value)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):   # too long a name, or a NUL in it
        return False


def _follow(m: Mapping, origin: Origin, value: str) -> list[str]:
    for place in (Path(value), Path(origin.file).parent / value):
        if _is_file(place):
            read_one(m, str(place), "deepspeed", load(str(place)))
            m.notes.append(f"read {place}, which {origin} names.")
            return [str(place)]
    stage = re.search(r"(?:zero|stage)[_-]?([0-3])", Path(value).name.lower())
    if stage is None:
        m.problem("sharding", f"{origin} names {value[:80]}, which is not here; give it with another {opt('from')}.")
        return []
    m.set("sharding", deepspeed.STAGES[int(stage.group(1))], origin)
    if "offload" in value.lower():
        m.set("offload", Offload.OPTIMIZER, origin)
    m.notes.append(f"{origin} names {value[:80]}, which is not here: planned from its name; give it with another "
                   f"{opt('from')} for its settings.")
    return []


@dataclass(frozen=True)
class Resolved:
    """What the files say about one model: the fields they set (fixed in plan) and the tools' values for the
    fields they leave open, both in TrainConfig's names (plus `global_batch`)."""

    fixed: dict
    defaults: dict


def model_of(m: Mapping) -> tuple[str, Origin] | None:
    entry = m.values.get("model")
    return (entry.value, entry.origin) if entry else None


def resolve(m: Mapping, spec: ModelSpec) -> Resolved:
    fixed = {k: e.value for k, e in m.values.items() if k != "model"}
    defaults = {k: v for k, (v, _) in m.defaults.items() if k not in fixed}
    engine = _engine(m, spec, fixed, defaults)
    if engine is not None:
        fixed["engine"] = engine
    for values in (fixed, defaults):
        if "lora_targets" in values:
            values["lora_targets"] = _targets(m, spec, values["lora_targets"])
    _world_from_batch(m, fixed, defaults)
    return Resolved(fixed, defaults)


def _engine(m: Mapping, spec: ModelSpec, fixed: dict, defaults: dict) -> EngineSettings | None:
    names = {f.name for f in fields(EngineSettings)}
    chosen = {}
    for values in (defaults, fixed):
        for key in [k for k in values if k.startswith("engine.")]:
            value = values.pop(key)
            chosen[key[7:]] = value.resolve(spec.hidden) if isinstance(value, PerHidden) else value
    chosen = {k: v for k, v in chosen.items() if k in names}
    return EngineSettings(**chosen) if chosen else None


def _targets(m: Mapping, spec: ModelSpec, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Module names the model has (and fitplan's aliases); the rest (lm_head, embed_tokens) are left out."""
    modules = {lin.module for lin in spec.linears()}
    kept = tuple(t for t in targets if t in modules or t in ROLES)
    dropped = [t for t in targets if t not in kept]
    if dropped:
        m.notes.append(f"LoRA targets {', '.join(dropped)[:80]} are not linear layers of {spec.short_name} that "
                       "fitplan adapts; left out.")
    return kept or ("all-linear",)


def _world_from_batch(m: Mapping, fixed: dict, defaults: dict) -> None:
    """DeepSpeed's train_batch_size must be micro-batch x accumulation x GPUs (it refuses otherwise)."""
    if "global_batch" not in fixed:
        return
    per_gpu = _value("micro_batch", fixed, defaults, 1) * _value("grad_accum", fixed, defaults, 1)
    nodes = _value("nodes", fixed, defaults, 1)
    if "gpus" in fixed:
        world = fixed["gpus"] * nodes
        if per_gpu * world != fixed["global_batch"]:
            m.conflicts.setdefault("global_batch", f"{m.values['global_batch'].origin} is {fixed['global_batch']}, "
                                                   f"but micro-batch x accumulation x GPUs is {per_gpu * world}; "
                                                   "make them agree.")
    elif fixed["global_batch"] % (per_gpu * nodes) == 0:
        defaults["gpus"] = fixed["global_batch"] // (per_gpu * nodes)
        m.notes.append(f"{m.values['global_batch'].origin} implies {defaults['gpus']} GPUs per node.")


def _value(name: str, fixed: dict, defaults: dict, fallback):
    return fixed.get(name, defaults.get(name, fallback))


def section(m: Mapping) -> dict:
    """The `from` part of --json."""
    return {
        "files": [{"path": path, "format": tool} for path, tool in m.files],
        "mapped": {name: [e.origin.file, e.origin.key] for name, e in sorted(m.values.items())},
        "read": [list(pair) for pair in m.read],
        "defaults": {name: [show(value), why] for name, (value, why) in sorted(m.defaults.items())
                     if name not in m.values},
        "ignored": [list(pair) for pair in m.ignored],
        "unknown": [list(pair) for pair in m.unknown],
        "unmodelled": list(m.unmodelled),
        "notes": [spelled(n) for n in m.notes],
    }


def summary(m: Mapping) -> list[str]:
    """One line per file for the text output: what was mapped, ignored and unknown."""
    lines = []
    for path, tool in m.files:
        mapped, ignored = [k for f, k in m.read if f == path], [k for f, k in m.ignored if f == path]
        unknown = [k for f, k in m.unknown if f == path]
        tail = f": {', '.join(unknown[:6])}{', ...' if len(unknown) > 6 else ''}" if unknown else ""
        lines.append(f"read from {path} ({TOOLS[tool]}): mapped {len(mapped)} keys, ignored {len(ignored)}, "
                     f"unknown {len(unknown)}{tail}")
    return lines
