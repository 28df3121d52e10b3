"""FSDP settings, wherever they are written: an Accelerate YAML's `fsdp_config` (keys with the `fsdp_` prefix), the
Trainer's `fsdp` / `fsdp_config` arguments (prefix optional: transformers/training_args.py strips it), and
axolotl's `fsdp_config` (which it hands to the Trainer). Each caller passes its tool's defaults."""
from __future__ import annotations

from dataclasses import dataclass

from planner.enums import Offload, Sharding
from planner.foreign.core import Keys, Mapping, Origin

# accelerate/utils/constants.py FSDP_SHARDING_STRATEGY (1-based, as ShardingStrategy numbers them):
# whether parameters are resharded after forward
STRATEGIES = {"FULL_SHARD": True, "SHARD_GRAD_OP": False, "NO_SHARD": None, "HYBRID_SHARD": True,
              "HYBRID_SHARD_ZERO2": False}
PREFETCH = {"BACKWARD_PRE": "BACKWARD_PRE", "BACKWARD_POST": "BACKWARD_POST", "NO_PREFETCH": "NONE", "NONE": "NONE"}


@dataclass(frozen=True)
class Defaults:
    version: int                 # FSDP1 or FSDP2 when no version is written
    backward_prefetch: str       # FSDP1, when not written
    use_orig_params: bool        # FSDP1, when not written
    rule: str                    # the source file the defaults come from


# accelerate/utils/dataclasses.py FullyShardedDataParallelPlugin: version 1, no prefetch, use_orig_params False
ACCELERATE = Defaults(1, "NONE", False, "accelerate/utils/dataclasses.py")
# transformers/training_args.py _process_fsdp_args: version 2, FSDP1 backward_prefetch NO_PREFETCH,
# use_orig_params true
TRAINER = Defaults(2, "NONE", True, "transformers/training_args.py")
# axolotl/utils/schemas/validation.py check_fsdp_version_in_fsdp_config pins version 1; the rest is the Trainer's
AXOLOTL = Defaults(1, "NONE", True, "axolotl/utils/schemas/validation.py")


def get(cfg: Keys, name: str):
    """`name` or `fsdp_name`, whichever the file wrote (both are read)."""
    for key in (name, f"fsdp_{name}"):
        if cfg.has(key):
            return key
    return None


def read(m: Mapping, cfg: Keys, defaults: Defaults, origin: Origin, tokens: tuple[str, ...] = (),
         outer: tuple[int, Origin] | None = None) -> None:
    """FSDP is on because of `origin`; `tokens` are the Trainer's legacy `fsdp` words (full_shard, offload...);
    `outer` a version written outside the section (axolotl's top-level fsdp_version)."""
    key = get(cfg, "version")
    versions = [(cfg.int(key, 1, 2), cfg.origin(key))] if key else []
    versions += [outer] if outer else []
    for version, where in versions:
        m.set("sharding", Sharding.FSDP if version == 2 else Sharding.FSDP1, where)
    version = versions[0][0] if versions else defaults.version
    if not versions:
        m.set("sharding", Sharding.FSDP if version == 2 else Sharding.FSDP1, origin)
        m.notes.append(f"{origin}: FSDP version {version} ({defaults.rule} default).")
    _reshard(m, cfg, version, origin, tokens)
    _offload_and_checkpointing(m, cfg, origin, tokens)
    _engine(m, cfg, version, defaults)


def _reshard(m: Mapping, cfg: Keys, version: int, origin: Origin, tokens: tuple[str, ...]) -> None:
    for name in ("sharding_strategy", "reshard_after_forward"):
        key = get(cfg, name)
        if key:
            _strategy(m, cfg.raw(key), cfg.origin(key), version)
    words = [t for t in tokens if t.upper() in STRATEGIES]
    if words:
        _strategy(m, words[0], origin, version)


def _strategy(m: Mapping, value, origin: Origin, version: int) -> None:
    """reshard_after_forward as a bool (FSDP2, and FSDP1 through Accelerate), or a strategy name or number."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if isinstance(value, bool):
        m.set("engine.fsdp_reshard_after_forward", value, origin)
        return
    names = list(STRATEGIES)
    text = str(value).strip().upper()
    if text.isdigit() and 1 <= int(text) <= len(names):
        text = names[int(text) - 1]
    if text not in STRATEGIES:
        m.problem("sharding", f"{origin} is {str(value)[:40]!r}, not an FSDP sharding strategy "
                              f"({', '.join(names)}); fix the file.")
        return
    if STRATEGIES[text] is None:
        m.set("sharding", Sharding.DDP, origin)
        m.notes.append(f"{origin} NO_SHARD replicates everything: planned as DDP.")
        return
    if text.startswith("HYBRID"):
        m.notes.append(f"{origin} {text} shards within each node only; planned as sharded over all GPUs.")
    m.set("engine.fsdp_reshard_after_forward", STRATEGIES[text], origin)


def _offload_and_checkpointing(m: Mapping, cfg: Keys, origin: Origin, tokens: tuple[str, ...]) -> None:
    for name in ("offload_params", "cpu_offload"):
        key = get(cfg, name)
        if key and cfg.bool(key):
            # torch FSDP's CPUOffload(offload_params=True) (accelerate/utils/dataclasses.py cpu_offload) moves
            # parameters, gradients and optimizer states: fitplan's "params"
            m.set("offload", Offload.PARAMS, cfg.origin(key))
        elif key:
            m.set("offload", Offload.NONE, cfg.origin(key))
    if "offload" in (t.lower() for t in tokens):
        m.set("offload", Offload.PARAMS, origin)
    key = get(cfg, "activation_checkpointing")
    if key and cfg.bool(key):
        m.set("grad_ckpt", True, cfg.origin(key))


def _engine(m: Mapping, cfg: Keys, version: int, defaults: Defaults) -> None:
    key = get(cfg, "backward_prefetch")
    value = cfg.str(key) if key else None
    if value is not None:
        prefetch = PREFETCH.get(value.strip().upper())
        if prefetch is None:
            m.problem("engine.fsdp_backward_prefetch", f"{cfg.origin(key)} is {value[:40]!r}, not BACKWARD_PRE, "
                                                       "BACKWARD_POST or NO_PREFETCH; fix the file.")
        elif version == 1:
            m.set("engine.fsdp_backward_prefetch", prefetch, cfg.origin(key))
    elif version == 1:
        m.default("engine.fsdp_backward_prefetch", defaults.backward_prefetch, f"{defaults.rule} default")
    for name in ("forward_prefetch", "use_orig_params"):
        key = get(cfg, name)
        if key and cfg.bool(key) is not None:
            m.set(f"engine.fsdp_{name}", cfg.bool(key), cfg.origin(key))
    if version == 1 and not get(cfg, "use_orig_params"):
        m.default("engine.fsdp_use_orig_params", defaults.use_orig_params, f"{defaults.rule} default")
