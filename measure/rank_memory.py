"""One rank's live bytes per phase of a sharded training step, measured inside the recipe's ranks.

launch/recipe.py drives a `RankMemory` when FITPLAN_TRACK_MEMORY=<dir> is set (see its `memory_tracking`):
`measure.tracker.StorageTracker` runs from before the model is loaded to the end of the last step, in phases
"load" (loading and `accelerator.prepare`), then per step "forward", "backward", "optimizer_step". Each rank
writes <dir>/rank<k>.json (see `RankMemory.report`).

What a storage is comes from identity tags (the tracker's COMPONENTS) set while the tensors exist:
  weights / adapters   the rank's own parameter storage: FSDP2 DTensor local shards, FSDP1 flat-parameter shards
                       (a unit mixing frozen and LoRA weights is one storage: all "weights"), ZeRO-3 `ds_tensor`
                       partitions, and the replicated parameters of DDP and ZeRO-1/2 (whose trainable ones are views
                       of DeepSpeed's flat bf16 groups)
  quant_constants      bitsandbytes NF4 quantization state
  gradients            `.grad` of parameters and flat parameters, DeepSpeed's partitioned-gradient buffers, and the
                       unsharded gradients an engine is handed to reduce (tagged on entry to its reduce hook)
  master_weights       DeepSpeed's fp32 partitions (FSDP keeps none: its fp32 shards are the weights)
  optimizer_states     the torch optimizer's state tensors
and three from what was running when the storage was made:
  gathered_weights     unsharded parameters: FSDP1/FSDP2 all-gather outputs (and FSDP1's low-precision shard,
                       FSDP2's flat all-gather buffer), ZeRO-3 fetched parameters, ZeRO-3 persistent (small)
                       parameters kept whole on every rank
  comm_buffers         DDP reducer buckets, DeepSpeed IPG buckets and flatten copies, FSDP reduce-scatter inputs and
                       outputs and padding copies, broadcast buffers
  weight_copies        dtype copies of weights or adapters (autocast's bf16 copies under bf16-mixed DDP)
Untagged storages made in forward/backward are activations (logits: lm_head and the loss), others temporary.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from measure.tracker import COMPONENTS, PHASES, StorageTracker, category
from planner.enums import Sharding

GATHERED, COMM, COPIES = "gathered_weights", "comm_buffers", "weight_copies"
EXTRA_COMPONENTS = (GATHERED, COMM, COPIES)
ALL_COMPONENTS = (*COMPONENTS, *EXTRA_COMPONENTS)
LOAD = "load"
LARGEST = 16   # storages listed by size at the measured peak
SETTLE_S = 0.002
NOTES = (
    "collectives' own buffers inside gloo (C++, its own threads) are not seen, as NCCL's are not on GPUs",
    "temporaries inside a DTensor operation (FSDP2: optimizer step, gradient clipping) are not seen; their outputs are",
    "FSDP1: a unit's flat parameter holds its frozen weights and LoRA adapters in one storage, counted as weights",
    "the per-parameter gradients autograd buffers before it concatenates them (FSDP1's flat-parameter split) count "
    "as activations; the concatenated gradient counts as gradients",
    "every Work.wait() is followed by 2 ms, so gloo's worker thread releases the collective's tensors before the "
    "rank allocates again (without it a peak may or may not hold one more bucket, from run to run)",
)


@dataclass(frozen=True)
class Region:
    """While `owner.attr` runs, new storages are `component`; `grads(*args)` are gradients it is handed."""

    module: str
    owner: str | None            # a class of `module`, or None for a function of `module`
    attr: str
    component: str
    grads: Callable[..., Iterable] | None = None


def _owner_and_attr(region: Region) -> tuple[object, str]:
    module = importlib.import_module(region.module)
    return (getattr(module, region.owner) if region.owner else module), region.attr


def _settled_wait(original) -> Callable:
    """`Work.wait`, then 2 ms for gloo's worker thread to drop its references to the collective's tensors: without
    it, their release races the rank's next allocation and peaks differ from run to run."""
    def wait(work, *args, **kwargs):
        out = original(work, *args, **kwargs)
        time.sleep(SETTLE_S)
        return out
    return wait


def _flat_param_grad(state, handle, *rest) -> list:
    return [handle.flat_param.grad] if handle is not None else []


def _unsharded_grads(group, *rest) -> list:
    params = [fp._unsharded_param for fp in group.fsdp_params if hasattr(fp, "_unsharded_param")]
    return [p.grad for p in params]


def _param_grad(optimizer, param, *rest) -> list:
    return [param.grad]


_FSDP1, _FSDP2 = "torch.distributed.fsdp._flat_param", "torch.distributed.fsdp._fully_shard._fsdp_param_group"
_ZERO12, _ZERO3 = "deepspeed.runtime.zero.stage_1_and_2", "deepspeed.runtime.zero.stage3"
_DDP = "torch.nn.parallel.distributed"
ZERO12_REGIONS = (
    Region(_ZERO12, "DeepSpeedZeroOptimizer", "setup_buckets", COMM),
    Region(_ZERO12, "DeepSpeedZeroOptimizer", "reduce_independent_p_g_buckets_and_remove_grads", COMM, _param_grad),
    Region(_ZERO12, "DeepSpeedZeroOptimizer", "reduce_gradients", COMM),
    Region(_ZERO12, "DeepSpeedZeroOptimizer", "overlapping_partition_gradients_reduce_epilogue", COMM),
    Region(_ZERO12, "DeepSpeedZeroOptimizer", "independent_gradient_partition_epilogue", COMM),
)
REGIONS: dict[Sharding, tuple[Region, ...]] = {
    Sharding.NONE: (),
    Sharding.DDP: (Region(_DDP, "DistributedDataParallel", "_ddp_init_helper", COMM),   # the Reducer's buckets
                   Region(_DDP, "DistributedDataParallel", "_pre_forward", COMM)),     # rebuilt buckets, buffers
    Sharding.ZERO1: ZERO12_REGIONS,
    Sharding.ZERO2: ZERO12_REGIONS,
    Sharding.ZERO3: (
        Region("deepspeed.runtime.zero.partitioned_param_coordinator", "PartitionedParameterCoordinator",
               "fetch_sub_module", GATHERED),
        Region(_ZERO3, "DeepSpeedZeroOptimizer_Stage3", "reduce_independent_p_g_buckets_and_remove_grads", COMM,
               _param_grad),
        Region(_ZERO3, "DeepSpeedZeroOptimizer_Stage3", "independent_gradient_partition_epilogue", COMM),
    ),
    Sharding.FSDP: (
        Region(_FSDP2, "FSDPParamGroup", "unshard", GATHERED),
        Region(_FSDP2, "FSDPParamGroup", "wait_for_unshard", GATHERED),
        Region(_FSDP2, "FSDPParamGroup", "post_backward", COMM, _unsharded_grads),
    ),
    Sharding.FSDP1: (
        Region(_FSDP1, "FlatParamHandle", "pre_unshard", GATHERED),
        Region(_FSDP1, "FlatParamHandle", "unshard", GATHERED),
        Region("torch.distributed.fsdp._runtime_utils", None, "_post_backward_hook", COMM, _flat_param_grad),
    ),
}
# DeepSpeed ZeRO optimizer attributes -> what they hold
ZERO_BUFFERS = {"single_partition_of_fp32_groups": "master_weights", "fp32_partitioned_groups_flat": "master_weights",
                "averaged_gradients": "gradients", "grads_in_partition": "gradients",
                "grad_partitions_flat_buffer": "gradients"}


class RankMemory:
    """The tracker of one rank, its phases and steps, and what it writes at the end."""

    def __init__(self, out_dir: Path, sharding: Sharding) -> None:
        self.out_dir, self.sharding = Path(out_dir), Sharding(sharding)
        self.tracker = StorageTracker()
        self.tracker.phase = LOAD
        self.tracker.copy_regions = {"weights": COPIES, "adapters": COPIES}
        self.steps: list[dict] = []
        self.load: dict = {}
        self.params: dict = {}
        self.engine = "none"
        self.model = self.optimizer = None
        self._last_step: dict = {}

    # -- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> "RankMemory":
        self._patches = contextlib.ExitStack()
        for region in REGIONS[self.sharding]:
            self._wrap(*_owner_and_attr(region), self._region_wrapper(region))
        if self.sharding.is_zero:
            from deepspeed.runtime.engine import DeepSpeedEngine
            self._wrap(DeepSpeedEngine, "step", self._optimizer_step_wrapper)
        import torch.distributed as dist
        self._wrap(dist.Work, "wait", _settled_wait)
        self.tracker.__enter__()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.tracker.__exit__(exc_type, *exc)
        self._patches.close()
        if exc_type is None:
            self.write()

    def _wrap(self, owner, attr: str, wrapper: Callable) -> None:
        """Replace `owner.attr` by `wrapper(original)` until the tracking ends."""
        original = getattr(owner, attr)
        setattr(owner, attr, functools.wraps(original)(wrapper(original)))
        self._patches.callback(setattr, owner, attr, original)

    def _region_wrapper(self, region: Region) -> Callable:
        def wrapper(original):
            def inside(*args, **kwargs):
                if region.grads is not None:
                    self.tracker.tag([g for g in region.grads(*args) if g is not None], "gradients")
                with self.region(region.component):
                    return original(*args, **kwargs)
            return inside
        return wrapper

    def _optimizer_step_wrapper(self, original) -> Callable:
        """Accelerate's backward runs DeepSpeed's optimizer step: that is the optimizer_step phase."""
        def step(engine, *args, **kwargs):
            self.gradients_ready()
            out = original(engine, *args, **kwargs)
            self.optimizer_stepped()
            return out
        return step

    @contextlib.contextmanager
    def region(self, component: str) -> Iterator[None]:
        previous, self.tracker.region = self.tracker.region, component
        try:
            yield
        finally:
            if self.tracker.region == component:   # unless a hook inside moved on (the logits region ends)
                self.tracker.region = previous

    # -- driver API (launch/recipe.py) ----------------------------------------------------------
    def loaded(self, model) -> None:
        """Before `prepare`: the model's parameter numel as loaded (ZeRO-3 zero.Init: their full numel)."""
        numel = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731
        params = list(model.parameters())
        self.params = {"numel": sum(numel(p) for p in params),
                       "trainable_numel": sum(numel(p) for p in params if p.requires_grad),
                       "loaded_bytes": sum(p.numel() * p.element_size() for p in params)}

    def prepared(self, accelerator, model, optimizer) -> None:
        """After `prepare`: tag the rank's parameters and the engine's buffers; the load phase ends."""
        from measure.harness import watch_logits
        self.model, self.optimizer = model, optimizer
        self.engine = engine_name(model)
        self._tag_parameters(accelerator.unwrap_model(model))
        self._tag_engine_buffers()
        watch_logits(accelerator.unwrap_model(model), self.tracker)
        self.load = {"peak_bytes": self.tracker.phase_peaks.get(LOAD, 0), "after_prepare_bytes": self.tracker.live_bytes,
                     "peak_seq": self.tracker.phase_peak_seqs.get(LOAD, 0), "after_prepare_seq": self.tracker.seq}

    def step_begins(self) -> None:
        gc.collect()   # every rank starts the step with the same garbage: none (so cyclic GC runs at the same points)
        self.tracker.reset_peak()

    def phase(self, name: str) -> None:
        self.tracker.phase = name
        if name == "backward":
            self.tracker.region = "logits"   # the loss and lm_head's backward come first (watch_logits ends it)

    def gradients_ready(self) -> None:
        """End of backward: tag what holds the gradients now; the optimizer step begins."""
        self.tracker.region = None
        self.tracker.tag(self._gradient_tensors(), "gradients")
        if self.sharding is Sharding.ZERO3:
            self._tag_persistent_parameters()
        self.tracker.phase = "optimizer_step"

    def optimizer_stepped(self) -> None:
        self.tracker.tag(optimizer_state_tensors(self.optimizer), "optimizer_states")

    def step_done(self) -> None:
        t = self.tracker
        phase_seqs = {p: t.phase_peak_seqs[p] for p in PHASES if p in t.phase_peak_seqs}
        self._last_step = {"peak_seq": t.peak.seq, "phase_seqs": phase_seqs, "end_seq": t.seq}
        self.steps.append({"step": len(self.steps) + 1, "peak_bytes": t.peak.nbytes, "peak_phase": t.peak.phase,
                           "phase_peaks": {p: t.phase_peaks.get(p, 0) for p in PHASES},
                           "end_bytes": t.live_bytes})
        t.phase = "between_steps"

    # -- tagging --------------------------------------------------------------------------------
    def _tag_parameters(self, model) -> None:
        for name, p in model.named_parameters():
            self.tracker.tag([p], "adapters" if "lora_" in name else "weights")
            self.tracker.tag(quant_state_tensors(p), "quant_constants")
            if hasattr(p, "ds_tensor"):   # ZeRO-3: the rank's partition (`p` itself is empty or gathered)
                self.tracker.tag([p.ds_tensor], "adapters" if "lora_" in name else "weights")
        for flat in fsdp1_flat_params(self.model):   # FSDP1: one shard per unit, frozen and LoRA together
            self.tracker.tag([flat], "weights")

    def _tag_engine_buffers(self) -> None:
        for zero in deepspeed_optimizers(self.optimizer):
            for attr, component in ZERO_BUFFERS.items():
                self.tracker.tag(tensors_in(getattr(zero, attr, None)), component)
            buckets = getattr(zero, "ipg_buckets", {}) or {}
            self.tracker.tag(tensors_in([getattr(b, "buffer", None) for b in buckets.values()]), COMM)

    def _gradient_tensors(self) -> list:
        zero = deepspeed_optimizers(self.optimizer)
        if zero:   # not param.grad: DeepSpeed points those into its IPG bucket until its epilogue clears them
            return [t for z in zero for attr, component in ZERO_BUFFERS.items() if component == "gradients"
                    for t in tensors_in(getattr(z, attr, None))]
        flat = [f.grad for f in fsdp1_flat_params(self.model)]
        return [g for g in [p.grad for p in self.model.parameters()] + flat if g is not None]

    def _tag_persistent_parameters(self) -> None:
        """ZeRO-3 keeps small parameters gathered for good once fetched (param_persistence_threshold)."""
        whole = [p for p in self.model.parameters() if getattr(p, "ds_persist", False) and p.numel() > 0]
        self.tracker.tag(whole, GATHERED)

    # -- report ---------------------------------------------------------------------------------
    def report(self) -> dict:
        """rank, engine, parameter numel, the load phase, every step's phase peaks, and the last step's peak
        with the components live then (also at each phase's peak and at the end of the step)."""
        import torch.distributed as dist
        components = lambda seq: _all_components(self.tracker.components(seq))  # noqa: E731
        last, step, load = self._last_step, self.steps[-1] if self.steps else {}, self.load
        return {
            "rank": dist.get_rank() if dist.is_initialized() else 0,
            "world": dist.get_world_size() if dist.is_initialized() else 1,
            "engine": self.engine, "params": self.params,
            "load": {"peak_bytes": load.get("peak_bytes"), "components": components(load.get("peak_seq", 0)),
                     "after_prepare_bytes": load.get("after_prepare_bytes"),
                     "after_prepare_components": components(load.get("after_prepare_seq", 0))},
            "steps": self.steps, "measured_step": step.get("step"),
            "step1_peak_bytes": self.steps[0]["peak_bytes"] if self.steps else None,
            "peak_bytes": step.get("peak_bytes"), "peak_phase": step.get("peak_phase"),
            "components": components(last["peak_seq"]) if last else {},
            "phase_components": {p: components(seq) for p, seq in last.get("phase_seqs", {}).items()},
            "end_of_step_components": components(last["end_seq"]) if last else {},
            "largest_at_peak": self._largest(last["peak_seq"]) if last else [],
            "notes": list(NOTES),
        }

    def _largest(self, seq: int, count: int = LARGEST) -> list[dict]:
        """The biggest storages live at `seq`: what they are, and the phase they were made in."""
        live = sorted(self.tracker.live_at(seq), key=lambda r: -r.nbytes)[:count]
        return [{"bytes": r.nbytes, "component": category(r), "made_in": r.phase} for r in live]

    def write(self) -> Path:
        report = self.report()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{report['rank']}.json"
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return path


# -- what the engines hold ----------------------------------------------------------------------------
def engine_name(model) -> str:
    """The engine that really wraps `model`, named as planner.enums.Sharding names it."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.nn.parallel import DistributedDataParallel
    if isinstance(model, DistributedDataParallel):
        return Sharding.DDP.value
    if isinstance(model, FSDP):
        return Sharding.FSDP1.value
    if isinstance(model, FSDPModule):
        return Sharding.FSDP.value
    stage = getattr(model, "zero_optimization_stage", None)   # a DeepSpeedEngine
    return f"zero{stage()}" if callable(stage) else Sharding.NONE.value


def fsdp1_flat_params(model) -> list:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    if not isinstance(model, FSDP):
        return []
    return [m._flat_param for m in FSDP.fsdp_modules(model) if m._flat_param is not None]


def optimizer_chain(optimizer) -> Iterator:
    """Accelerate's optimizer, what it wraps (DeepSpeed's ZeRO optimizer), and so on down to torch's."""
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        yield optimizer
        optimizer = getattr(optimizer, "optimizer", None)


def deepspeed_optimizers(optimizer) -> list:
    return [o for o in optimizer_chain(optimizer) if type(o).__module__.startswith("deepspeed.runtime.zero")]


def optimizer_state_tensors(optimizer) -> list:
    states = [o.state for o in optimizer_chain(optimizer) if isinstance(o, torch.optim.Optimizer)]
    return [t for state in states for per_param in state.values() for t in tensors_in(per_param)]


def quant_state_tensors(param) -> list:
    """bitsandbytes' NF4 state of a Params4bit (absmax, code, and the nested ones with double quantization)."""
    qs = getattr(param, "quant_state", None)
    if qs is None:
        return []
    nested = [qs.offset, qs.state2.absmax, qs.state2.code] if getattr(qs, "nested", False) else []
    return [t for t in (qs.absmax, qs.code, *nested) if isinstance(t, torch.Tensor)]


def tensors_in(value) -> list:
    """The tensors in a tensor, or in lists, tuples and dicts of them (nested)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def _all_components(components: dict[str, int]) -> dict[str, int]:
    return {name: components.get(name, 0) for name in ALL_COMPONENTS}
