"""The shared mapping core of the foreign-config readers: where a value came from (`Origin`), a typed view of
one mapping that records which keys a reader looked at (`Keys`), and the accumulator every reader writes into
(`Mapping`): values that the files set, the tools' defaults for keys they leave out, contradictions, values
fitplan cannot model, notes, and the keys that were ignored or unknown.

A contradiction or an unmodellable value is kept until the end, so an option on the command line can settle
it (`Mapping.check`); everything else about a bad file is one sentence, raised where it is read."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from common.errors import InputError, opt

MAX_INT = 10**15   # bucket sizes are ~1e9 elements; larger is a typo


@dataclass(frozen=True)
class Origin:
    file: str   # the path as the user gave it
    key: str    # dotted key inside the file ("zero_optimization.stage"), or "(absent key)"

    def __str__(self) -> str:
        return f"{self.key} in {self.file}"


@dataclass(frozen=True)
class PerHidden:
    """A DeepSpeed "auto" size that Accelerate and Transformers fill in from the model's hidden size."""

    factor: float   # times hidden ** power
    power: int

    def resolve(self, hidden: int) -> int:
        return int(self.factor * hidden ** self.power)


def show(value) -> str:
    """A value as a person would write it in the file, short."""
    if hasattr(value, "value"):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)[:60]
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


class Keys:
    """One mapping of a file (or a nested section) with typed getters that remember what was read."""

    def __init__(self, data: dict, file: str, prefix: str = "") -> None:
        self.data, self.file, self.prefix = data, file, prefix
        self.read: set[str] = set()
        self.children: list[Keys] = []

    def origin(self, key: str) -> Origin:
        return Origin(self.file, self.prefix + key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str):
        self.read.add(key)
        return self.data.get(key)

    def sub(self, key: str) -> "Keys | None":
        """The nested mapping under `key`, or None when absent."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.wrong(key, value, "a mapping of settings")
        child = Keys(value, self.file, f"{self.prefix}{key}.")
        self.children.append(child)
        return child

    def bool(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"   # Transformers and Accelerate read "true" too (str_to_bool)
        raise self.wrong(key, value, "true or false")

    def int(self, key: str, low: int = 0, high: int = MAX_INT) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        number = _whole(value)
        if number is None or not low <= number <= high:
            raise self.wrong(key, value, f"a whole number from {low:,} to {high:,}")
        return number

    def str(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None or isinstance(value, str):
            return value
        raise self.wrong(key, value, "a string")

    def text(self, key: str) -> str | None:
        """A string or a number written where a name is expected (YAML reads `quantization_bit: 4` as an int)."""
        value = self.raw(key)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.wrong(key, value, "a name")

    def names(self, key: str) -> tuple[str, ...] | None:
        """A list of names, or one string of comma-separated names."""
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise self.wrong(key, value, "a list of names")

    def wrong(self, key: str, value, wanted: str) -> InputError:
        return InputError(f"{self.prefix}{key} in {self.file} must be {wanted}, not {_quoted(value)}; fix the file.")

    def all_read(self) -> set[str]:
        """Dotted paths of every key read here and in the sections under it."""
        return {self.prefix + k for k in self.read}.union(*(c.all_read() for c in self.children))


def _whole(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)   # DeepSpeed JSONs write 5e8
    if isinstance(value, str):
        try:
            number = float(value.strip()) if len(value) <= 30 else math.nan
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def _quoted(value) -> str:
    text = repr(value) if isinstance(value, str) else show(value)
    return text if len(text) <= 40 else text[:40] + "..."


# Fields the command line can set (so it can settle a contradiction about them), by option name.
COMMAND_LINE = {"method": "method", "precision": "precision", "optimizer": "optimizer", "attn": "attn",
                "sharding": "sharding", "offload": "offload", "micro_batch": "micro_batch", "seq_len": "seq_len",
                "grad_ckpt": "grad_ckpt", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
                "lora_targets": "lora_targets", "double_quant": "no_double_quant", "gpus": "gpus", "nodes": "nodes",
                "global_batch": "global_batch"}


def settle(name: str) -> str:
    """How a person resolves a contradiction about `name`."""
    if name in COMMAND_LINE:
        return f"make them agree, or set {opt(COMMAND_LINE[name])} on the command line"
    return "make them agree"


def family(value) -> str:
    """bf16, fp16 or fp32: what two precisions must share not to contradict each other."""
    return str(getattr(value, "value", value)).split("-")[0]


@dataclass
class Entry:
    value: object
    origin: Origin
    strong: bool


@dataclass
class Mapping:
    """What all the files together say, field by field (TrainConfig's names, `engine.<setting>`, `model`,
    `global_batch`)."""

    files: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, Entry] = field(default_factory=dict)
    defaults: dict[str, tuple[object, str]] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    read: list[tuple[str, str]] = field(default_factory=list)      # (file, key) of every key a reader interpreted
    ignored: list[tuple[str, str]] = field(default_factory=list)   # known to the tool, no effect on memory
    unknown: list[tuple[str, str]] = field(default_factory=list)   # not known to the tool: a typo, or newer
    unmodelled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    deepspeed_refs: list[tuple[Origin, object]] = field(default_factory=list)   # a path or an inline mapping

    def set(self, name: str, value, origin: Origin, weak: bool = False,
            same: Callable[[object, object], bool] | None = None) -> None:
        """`name` is `value` because of `origin`. A weak value (a launcher's setting the training config may
        override) gives way; two strong values that differ are a contradiction."""
        old, new = self.values.get(name), Entry(value, origin, not weak)
        if old is None:
            self.values[name] = new
            return
        agree = (same or (lambda a, b: a == b))(old.value, value)
        if old.strong and new.strong:
            if not agree:
                self.conflicts.setdefault(name, f"{old.origin} says {show(old.value)} but {origin} says "
                                                f"{show(value)}; {settle(name)}.")
            return
        winner, loser = (new, old) if new.strong else (old, new)
        if not agree:
            self.notes.append(f"{winner.origin} ({show(winner.value)}) takes precedence over {loser.origin} "
                              f"({show(loser.value)}).")
        self.values[name] = winner

    def replace(self, name: str, value, origin: Origin, why: str | None = None) -> None:
        """`origin` decides `name` whatever the others said (`why`: the tool's rule, noted when it changes
        something; None when the change is the tool's plain reading, as 4-bit weights making LoRA QLoRA)."""
        old = self.values.get(name)
        if why and old is not None and old.value != value:
            self.notes.append(f"{origin} ({show(value)}) replaces {old.origin} ({show(old.value)}): {why}.")
        self.values[name] = Entry(value, origin, True)

    def contradiction(self, name: str, first: Origin, second: Origin, why: str) -> None:
        """Two keys the tool itself refuses together; an error unless the command line sets `name`."""
        self.conflicts.setdefault(name, f"{first} and {second} contradict each other ({why}); {settle(name)}.")

    def default(self, name: str, value, why: str) -> None:
        """The tool's own value for a key the files leave out (open in `plan`)."""
        if name not in self.values:
            self.defaults.setdefault(name, (value, why))

    def problem(self, name: str, message: str) -> None:
        """A value fitplan cannot model; an error unless the command line sets `name`."""
        self.problems.setdefault(name, message)

    def unmodelled_key(self, origin: Origin, what: str) -> None:
        self.unmodelled.append(str(origin.key))
        self.notes.append(f"{origin} {what}; fitplan does not model it, so the estimate leaves it out.")

    def get(self, name: str, fallback=None):
        entry = self.values.get(name)
        if entry is not None:
            return entry.value
        return self.defaults.get(name, (fallback,))[0]

    def check(self, overridden: set[str]) -> None:
        """Raise the first contradiction or unmodellable value the command line does not settle."""
        for name, message in [*self.conflicts.items(), *self.problems.items()]:
            if name not in overridden:
                raise InputError(message)
