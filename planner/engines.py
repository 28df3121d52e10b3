"""What a data-parallel engine holds on one GPU beyond the model states, moment by moment.

The model states (`planner.states`) are what lives between steps. Around them each engine allocates its own
buffers at its own moments: DDP's gradient buckets, ZeRO's reduction buckets and gradient partitions, the
parameters ZeRO-3 and FSDP gather, FSDP's unsharded gradients. `planner.memory` asks the engine of a
configuration what is live at each moment of the step (`Engine.forward_layer`, `backward_layer`, ...): the
answers are whole component values (`gradients`, `comm_buffers`, `gathered_weights`, `temporary`) that
replace the moment's defaults. Every rule names the engine code it follows (docs/sharded-memory.md) and was
checked against per-rank measurements of real runs (benchmarks/sharded.py).

Pure arithmetic: no torch.
"""
from __future__ import annotations

import bisect
import functools
import itertools
from collections import Counter
from dataclasses import dataclass

from planner.config import TrainConfig
from planner.enums import Method, Offload, Sharding
from planner.params import ParamCounts, ParamTensor, clear_param_caches, ordered_params
from planner.states import (ModelStates, adapter_bytes, computes_16bit_params, flat_unit_grads, weight_bytes,
                            zero_grad_bytes, zero_partition)
from profiles.spec import ModelSpec

Parts = dict[str, int]


@dataclass(frozen=True)
class Reduction:
    """One bucket reduction in the backward: where it happens and how many elements the bucket holds."""

    layer: int | None     # 0-based layer whose gradients trigger it; None: lm_head, final norm or embeddings
    head: bool            # triggered above the layers (lm_head, final norm)
    elements: int
    made: float = 1.0     # share of the layer's trainable elements whose gradients exist when it starts


class Engine:
    """One GPU (or DDP, which replicates it): gradients accumulate in `.grad` as autograd makes them."""

    def __init__(self, spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, states: ModelStates):
        self.spec, self.cfg, self.counts, self.states = spec, cfg, counts, states

    @property
    def accumulating(self) -> bool:
        """Micro-batches after the first start with the gradients of the ones before (gradient accumulation)."""
        return self.cfg.grad_accum > 1

    @functools.cached_property
    def buckets(self) -> int:
        """DDP's Reducer keeps a flat bucket copy of every gradient from construction on
        (gradient_as_bucket_view=False, Accelerate's default): as large as the gradients, in every phase."""
        return self.states.gradients if self.cfg.sharding is Sharding.DDP and self.cfg.world_size > 1 else 0

    def resident(self) -> Parts:
        """Live through every moment of the forward and the backward, beyond the model states."""
        return {"gradients": self.states.gradients if self.accumulating else 0, "comm_buffers": self.buckets,
                "gathered_weights": 0}

    def extra_layers(self) -> list[int]:
        """Layers (0-based) whose backward can hold the peak because the engine allocates from there on."""
        return []

    def extra_forward_layers(self) -> list[int]:
        """Layers (0-based) below the top one whose forward can hold the peak because the engine holds more there."""
        return []

    def reduction_moments(self) -> list[tuple[int, float, Parts]]:
        """Moments inside a layer's backward where the engine allocates: (layer, share of the layer's weight
        gradients made by then, what it holds then)."""
        return []

    def forward_layer(self, index: int) -> Parts:
        return {}

    def forward_gather(self, index: int) -> Parts | None:
        """Before layer `index` (`n_layer`: the final norm and lm_head) runs, when the engine gathers its parameters."""
        return None

    def at_loss(self) -> Parts:
        return {}

    def loss_backward(self) -> Parts:
        return {}

    def head_backward(self) -> Parts | None:
        """The moment lm_head's weight gradient is made (full fine-tuning), when the engine acts on it."""
        return None

    hooks_gradients = False   # each weight gradient leaves the layer's backward as its hook fires

    def backward_layer(self, index: int, grads_above: int, new_grads: int) -> Parts:
        """At the peak of layer `index`'s backward: `grads_above` were made by the layers above (and the
        head), `new_grads` by this layer so far (with `hooks_gradients`, the one being made)."""
        held = self.states.gradients if self.accumulating else grads_above  # accumulation adds in place
        return {"gradients": held + new_grads}

    def backward_end(self) -> Parts | None:
        """The moment the engine finishes the backward (its last reduction), when it allocates anything then."""
        return None

    def step(self, temporaries: int) -> Parts:
        """The optimizer step: every gradient, and what the step allocates (`temporaries`: the optimizer's)."""
        return {"gradients": self.states.gradients, "comm_buffers": self.buckets, "temporary": temporaries}


class ZeroEngine(Engine):
    """What DeepSpeed's stages share: gradients in the model's dtype, reduced bucket by bucket as they arrive."""

    @functools.cached_property
    def grad_bytes(self) -> int:
        return zero_grad_bytes(self.cfg)

    @functools.cached_property
    def reductions(self) -> tuple[Reduction, ...]:
        return bucket_reductions(self.spec, self.cfg, self.cfg.engine.reduce_bucket_size)


class ZeroStage12(ZeroEngine):
    """DeepSpeed ZeRO-1/2 (runtime/zero/stage_1_and_2.py): each gradient is copied into a reduction bucket as
    its hook fires and freed; a full bucket is flattened (a copy), all-reduced and this rank's part kept in
    `grads_in_partition`. ZeRO-1 with overlap_comm reduces in the hooks like ZeRO-2; without it, gradients
    accumulate whole and are reduced after the backward."""

    @property
    def hooks_gradients(self) -> bool:
        return self.reduces_in_hooks

    @functools.cached_property
    def bucket_set(self) -> int:
        """`setup_buckets` at the first gradient hook: one bucket of reduce_bucket_size elements, two with
        overlap_comm (double buffering)."""
        engine = self.cfg.engine
        return (1 + engine.overlap_comm) * engine.reduce_bucket_size * self.grad_bytes

    @property
    def reduces_in_hooks(self) -> bool:
        return self.cfg.sharding is Sharding.ZERO2 or self.cfg.engine.overlap_comm

    @functools.cached_property
    def partition(self) -> int:
        """`grads_in_partition` of the rank that allocates the most: every gradient touching its partition."""
        return self.states.gradients

    def resident(self) -> Parts:
        if not self.accumulating:
            return {"gradients": 0, "comm_buffers": 0, "gathered_weights": 0}
        if self.cfg.sharding is Sharding.ZERO2:   # reduced every micro-batch: the partition's gradients carry over
            return {"gradients": self.partition, "comm_buffers": 0, "gathered_weights": 0}
        # ZeRO-1 reduces only at the boundary micro-batch: whole gradients and the buckets carry over
        return {"gradients": self.counts.trainable * self.grad_bytes, "comm_buffers": self.bucket_set,
                "gathered_weights": 0}

    def extra_layers(self) -> list[int]:
        """grads_in_partition lives from the first reduction on: the layer below it holds it with the most
        activations still saved."""
        first = next((r for r in self.reductions[:-1]), None)
        return [first.layer - 1] if self.reduces_in_hooks and first and first.layer and not first.head else []

    def reduction_moments(self) -> list[tuple[int, float, Parts]]:
        """The first two reductions inside the layers (later ones hold no more, with fewer activations below):
        the flattened copy of the bucket beside both buckets; grads_in_partition appears after the first."""
        if not self.reduces_in_hooks:
            return []
        carried = self.resident()["gradients"]
        out = []
        for k, r in enumerate(r for r in self.reductions if r.layer is not None and not r.head):
            if k == 2:
                break
            partition = self.partition if k or self._head_reduced() else 0
            out.append((r.layer, r.made, {"gradients": carried + partition,
                                          "comm_buffers": self.bucket_set + r.elements * self.grad_bytes}))
            if not partition:   # then the partition's gradients are copied out, the flat copy gone
                out.append((r.layer, r.made, {"gradients": carried + self.partition, "comm_buffers": self.bucket_set}))
        return out

    def _head_reduced(self) -> bool:
        return any(r.head for r in self.reductions)

    def head_backward(self) -> Parts | None:
        head = self._head_grad()
        if not head:
            return None
        resident = self.resident()
        flatten = max((r.elements for r in self.reductions if r.head), default=0) * self.grad_bytes
        return {"gradients": resident["gradients"] + head, "comm_buffers": self.bucket_set + flatten}

    def _head_grad(self) -> int:
        """lm_head's (or the tied embedding's) weight gradient, made before any layer's."""
        if self.cfg.method is not Method.FULL:
            return 0
        return self.spec.vocab * self.spec.hidden * self.grad_bytes

    def backward_layer(self, index: int, grads_above: int, new_grads: int) -> Parts:
        resident = self.resident()
        if not self.reduces_in_hooks:   # gradients accumulate whole; the bucket exists from the first hook
            held = max(resident["gradients"], grads_above)
            return {"gradients": held + new_grads, "comm_buffers": self.bucket_set}
        # grads_in_partition exists once a reduction ran above this layer (a new one is added into the one
        # carried over from the micro-batch before)
        reduced = any(r.head or (r.layer is not None and r.layer > index) for r in self.reductions[:-1])
        return {"gradients": new_grads + resident["gradients"] + (self.partition if reduced else 0),
                "comm_buffers": self.bucket_set}

    def backward_end(self) -> Parts | None:
        last = self.reductions[-1].elements if self.reductions else 0
        resident = self.resident()
        grads = self.partition + (resident["gradients"] if self.accumulating else 0)
        if not self.reduces_in_hooks:   # every gradient still whole, reduced bucket by bucket
            grads = self.counts.trainable * self.grad_bytes + self.partition
        return {"gradients": grads, "comm_buffers": self.bucket_set + last * self.grad_bytes}

    def step(self, temporaries: int) -> Parts:
        """Per group, the partition's gradients are flattened (a copy) and cast to fp32 (another) while
        grads_in_partition still lives (`step`: flatten, .to(fp32), then free)."""
        shard = zero_partition(self.counts.trainable, self.cfg.world_size)
        flat = shard * (self.grad_bytes + 4)
        return {"gradients": self.states.gradients, "comm_buffers": 0, "temporary": max(flat, temporaries)}


def model_shape(cfg: TrainConfig) -> TrainConfig:
    """The fields the engines' walks over the parameters read (not the batch, the GPU count or the optimizer):
    one cache entry serves every candidate of a search."""
    return TrainConfig(method=cfg.method, precision=cfg.precision, lora_r=cfg.lora_r, lora_targets=cfg.lora_targets,
                       grad_ckpt=cfg.grad_ckpt, sharding=cfg.sharding)


def bucket_reductions(spec: ModelSpec, cfg: TrainConfig, bucket: int) -> tuple[Reduction, ...]:
    return _bucket_reductions(spec, model_shape(cfg), bucket)


@functools.lru_cache(maxsize=1024)
def _bucket_reductions(spec: ModelSpec, cfg: TrainConfig, bucket: int) -> tuple[Reduction, ...]:
    """The reductions of one backward: gradients arrive in reverse parameter order and fill a bucket of
    `bucket` elements; one that would overflow it reduces the bucket first; one larger than the bucket is
    reduced on its own; what is left is reduced at the end (the last entry)."""
    params = [p for p in ordered_params(spec, cfg) if p.trainable]
    per_layer = Counter()
    for p in params:
        per_layer[p.layer] += p.numel
    out, elements, in_layers, made = [], 0, False, Counter()
    for p in reversed(ordered_params(spec, cfg)):
        in_layers = in_layers or p.layer is not None   # lm_head and the final norm come before the layers
        if not p.trainable:
            continue
        made[p.layer] += p.numel
        if p.numel > bucket or (elements + p.numel > bucket and elements):
            out.append(Reduction(p.layer, not in_layers, p.numel if p.numel > bucket else elements,
                                 made[p.layer] / per_layer[p.layer]))
            elements = 0 if p.numel <= bucket else elements
        if p.numel <= bucket:
            elements += p.numel
    out.append(Reduction(None, False, elements))
    return tuple(out)


@dataclass(frozen=True)
class Fetch:
    """One use of a module's parameters in the step, in the order ZeRO-3's coordinator traces them."""

    module: str
    layer: int | None     # 0-based layer; None: embeddings, final norm, lm_head
    backward: bool        # in the backward (a checkpointed layer's recompute included)
    params: tuple[int, ...]


@dataclass(frozen=True)
class GatheredProfile:
    """Bytes of gathered parameters: the most during each layer's forward and backward, around the head."""

    forward: tuple[int, ...]
    backward: tuple[int, ...]
    head_forward: int
    head_backward: int
    persistent: int       # small parameters gathered once and kept (param_persistence_threshold)


class Zero3(ZeroEngine):
    """DeepSpeed ZeRO-3 (runtime/zero/stage3.py, partitioned_param_coordinator.py): every parameter is
    partitioned and gathered module by module; the coordinator keeps a gathered parameter that is used again
    within max_reuse_distance elements and prefetches prefetch_bucket_size elements ahead; parameters under
    param_persistence_threshold stay gathered. Gradients are copied into one persistent reduction bucket and
    reduce-scattered into a persistent flat buffer of this rank's gradient partitions."""

    hooks_gradients = True

    @functools.cached_property
    def bucket(self) -> int:
        """The reduction bucket, allocated at initialisation and kept (one buffer: stage 3 does not double it)."""
        return self.cfg.engine.reduce_bucket_size * self.grad_bytes if self.cfg.engine.contiguous_gradients else 0

    @functools.cached_property
    def gathered(self) -> GatheredProfile:
        return zero3_gathered(self.spec, self.cfg)

    def resident(self) -> Parts:
        return {"gradients": self.states.gradients, "comm_buffers": self.bucket,
                "gathered_weights": self.gathered.persistent}

    def extra_layers(self) -> list[int]:
        return rising_layers(self.gathered.backward)

    def extra_forward_layers(self) -> list[int]:
        return rising_layers(self.gathered.forward)

    def _with_gathered(self, gathered: int) -> Parts:
        return {"gathered_weights": self.gathered.persistent + gathered}

    def forward_layer(self, index: int) -> Parts:
        return self._with_gathered(self.gathered.forward[index])

    def at_loss(self) -> Parts:
        return self._with_gathered(self.gathered.head_forward)

    def loss_backward(self) -> Parts:
        return self._with_gathered(self.gathered.head_backward)

    def _scatter_copies(self, elements: int) -> int:
        """reduce_scatter_coalesced interleaves the bucket into one `torch.cat` copy, and a second bucket-sized
        copy is live beside it (measured on CPU ranks)."""
        return 2 * elements * self.grad_bytes

    def head_backward(self) -> Parts | None:
        if self.cfg.method is not Method.FULL:
            return None
        head = self.spec.vocab * self.spec.hidden * self.grad_bytes
        flatten = max((r.elements for r in self.reductions if r.head), default=0)
        return {"gradients": self.states.gradients + head, "comm_buffers": self.bucket + self._scatter_copies(flatten),
                **self._with_gathered(self.gathered.head_backward)}

    def backward_layer(self, index: int, grads_above: int, new_grads: int) -> Parts:
        gathered = self.gathered.backward[index] if 0 <= index < self.spec.n_layer else self.gathered.head_backward
        return {"gradients": self.states.gradients + new_grads, **self._with_gathered(gathered)}

    def reduction_moments(self) -> list[tuple[int, float, Parts]]:
        """The first two reductions inside the layers, each with its scatter copies."""
        inside = [r for r in self.reductions if r.layer is not None and not r.head][:2]
        return [(r.layer, r.made, {"gradients": self.states.gradients,
                                   "comm_buffers": self.bucket + self._scatter_copies(r.elements),
                                   **self._with_gathered(self.gathered.backward[r.layer])})
                for r in inside]

    def backward_end(self) -> Parts | None:
        last = self.reductions[-1].elements if self.reductions else 0
        return {"gradients": self.states.gradients, "comm_buffers": self.bucket + self._scatter_copies(last),
                "gathered_weights": self.gathered.persistent}

    def step(self, temporaries: int) -> Parts:
        """Per sub-group the gradient partitions are flattened and cast to fp32, and the optimizer's foreach
        temporary joins them (stage3.py `_prepare_fp32_grad_for_sub_group`); offloaded, all of it is on the host."""
        shard = -(-self.counts.trainable // self.cfg.world_size)
        on_gpu = self.cfg.offload is Offload.NONE
        return {"gradients": self.states.gradients, "comm_buffers": self.bucket, "gathered_weights": 0,
                "temporary": shard * (4 + 4) if on_gpu else 0}


def rising_layers(held: tuple[int, ...]) -> list[int]:
    """The layers, top down, holding more than every layer above them: with saved activations growing upward,
    only these can hold a pass's peak."""
    out, most = [], -1
    for index in reversed(range(len(held))):
        if held[index] > most:
            out.append(index)
            most = held[index]
    return out


def zero3_gathered(spec: ModelSpec, cfg: TrainConfig) -> GatheredProfile:
    e = cfg.engine
    return _zero3_gathered(spec, model_shape(cfg.with_(sharding=Sharding.ZERO3)),
                           e.param_persistence_threshold, e.max_reuse_distance, e.prefetch_bucket_size,
                           e.max_live_parameters)


@functools.lru_cache(maxsize=256)
def _zero3_gathered(spec: ModelSpec, cfg: TrainConfig, persist: int, reuse: int, prefetch: int,
                    max_live: int) -> GatheredProfile:
    """Replays the coordinator over one step once its trace is complete (from the second step on): each use
    gathers its module; the prefetcher then walks the parameter trace ahead until `prefetch` elements not yet
    gathered are on their way, marking every use it passes; after the use, a parameter stays gathered if the
    prefetcher passed a later use of it or it is used again within `reuse` elements of the module trace
    (`__params_to_release`). Parameters of at most `persist` elements are never released."""
    trace, params = zero3_trace(spec, cfg)
    coordinator = _Coordinator(trace, params, persist)
    held = []
    for at, f in enumerate(trace):
        coordinator.fetch(f, at, min(max_live - coordinator.n_available, prefetch))
        held.append(coordinator.gathered)
        coordinator.release(f, at, reuse)
    return _profile(spec, trace, held, sum(params[pid][1] for pid in coordinator.persistent))


class _Coordinator:
    """DeepSpeed's PartitionedParameterCoordinator, as far as memory goes: what is gathered, use by use."""

    def __init__(self, trace: list[Fetch], params: dict[int, tuple[int, int]], persist: int):
        self.params = params
        self.persistent = {pid for pid, (numel, _) in params.items() if numel <= persist}
        self.entries = [(pid, at) for at, f in enumerate(trace) for pid in f.params]
        self.uses: dict[int, list[int]] = {}
        for pid, at in self.entries:
            self.uses.setdefault(pid, []).append(at)
        self.starts = list(itertools.accumulate((sum(params[pid][0] for pid in f.params) for f in trace), initial=0))
        self.available, self.queue, self.marked = set(self.persistent), 0, {}
        self.n_available = 0   # the coordinator's count restarts every step
        self.gathered = 0      # bytes of the non-persistent parameters gathered now

    def _gather(self, pid: int) -> None:
        self.available.add(pid)
        self.gathered += self.params[pid][1]
        self.n_available += self.params[pid][0]

    def fetch(self, f: Fetch, at: int, budget: int) -> None:
        """Gather the module, pop its use off the queue, then prefetch up to `budget` elements not gathered."""
        for pid in f.params:
            if pid not in self.available:
                self._gather(pid)
        pending = {pid for pid in f.params if self.marked.get(pid, -1) < at}
        while pending and self.queue < len(self.entries):
            pid, used = self.entries[self.queue]
            self.queue += 1
            self.marked[pid] = used
            pending.discard(pid)
        fetching = 0
        while self.queue < len(self.entries) and fetching < budget:
            pid, used = self.entries[self.queue]
            self.queue += 1
            self.marked[pid] = max(self.marked.get(pid, -1), used)
            if pid not in self.available:
                self._gather(pid)
                fetching += self.params[pid][0]

    def release(self, f: Fetch, at: int, reuse: int) -> None:
        for pid in f.params:
            keep = self.marked[pid] > at + 1 or _reused(self.uses[pid], at, self.starts, reuse)
            if pid in self.persistent or keep or pid not in self.available:
                continue
            self.available.discard(pid)
            self.gathered -= self.params[pid][1]
            self.n_available -= self.params[pid][0]


def _reused(uses: list[int], at: int, starts: list[int], reuse: int) -> bool:
    """Used again before the module trace after `at` has passed `reuse` elements."""
    later = bisect.bisect_right(uses, at)
    return later < len(uses) and starts[uses[later]] - starts[at + 1] < reuse


def _profile(spec: ModelSpec, trace: list[Fetch], held: list[int], persistent: int) -> GatheredProfile:
    forward, backward = [0] * spec.n_layer, [0] * spec.n_layer
    head = {False: 0, True: 0}
    for f, bytes_ in zip(trace, held):
        if f.layer is None:
            head[f.backward] = max(head[f.backward], bytes_)
        else:
            side = backward if f.backward else forward
            side[f.layer] = max(side[f.layer], bytes_)
    return GatheredProfile(tuple(forward), tuple(backward), head[False], head[True], persistent)


def zero3_trace(spec: ModelSpec, cfg: TrainConfig) -> tuple[list[Fetch], dict[int, tuple[int, int]]]:
    """The modules' uses in one step: the forward in order; the backward from lm_head down, a checkpointed
    layer's forward again before its backward; the embedding last when its output needs a gradient. Returns the
    uses and each parameter's (elements, bytes when gathered)."""
    modules: dict[str, list[int]] = {}
    params: dict[int, tuple[int, int]] = {}
    layer_of: dict[str, int | None] = {}
    for pid, p in enumerate(ordered_params(spec, cfg)):
        modules.setdefault(p.module, []).append(pid)
        layer_of[p.module] = p.layer
        params[pid] = (p.numel, p.numel * (adapter_bytes(cfg) if p.trainable and cfg.method is not Method.FULL else 2))
    if spec.tied_embeddings:
        modules["lm_head"], layer_of["lm_head"] = modules["embed"], None   # lm_head's weight is the embedding's

    def use(name: str, backward: bool) -> Fetch:
        return Fetch(name, layer_of[name], backward, tuple(modules[name]))

    order = [name for name in modules if name != "lm_head"] + ["lm_head"]
    by_layer: dict[int | None, list[str]] = {}
    for name in order:
        by_layer.setdefault(layer_of[name], []).append(name)
    trace = [use(name, False) for name in order]
    trace += [use(name, True) for name in ("lm_head", "norm") if name in modules]
    for layer in reversed(range(spec.n_layer)):
        names = by_layer.get(layer, [])
        if cfg.grad_ckpt:
            trace += [use(name, False) for name in names]
        trace += [use(name, True) for name in reversed(names)]
    if cfg.method is Method.FULL or cfg.grad_ckpt:   # checkpointing hooks the embedding's output to need grad
        trace.append(use("embed", True))
    return trace, params


@dataclass(frozen=True)
class Units:
    """FSDP's units in forward order: bytes of their parameters gathered, and of their trainable gradients
    before they are reduced."""

    layers: tuple[int, ...]
    layer_grads: tuple[int, ...]
    embed: int            # the input embedding's own unit (0 when tied: it is in the tail)
    embed_grads: int
    tail: int             # final norm and lm_head
    tail_grads: int


def fsdp_units(spec: ModelSpec, cfg: TrainConfig) -> Units:
    return _fsdp_units(spec, model_shape(cfg))


@functools.lru_cache(maxsize=256)
def _fsdp_units(spec: ModelSpec, cfg: TrainConfig) -> Units:
    layers, layer_grads = [0] * spec.n_layer, [0] * spec.n_layer
    embed = embed_grads = tail = tail_grads = 0
    for p in ordered_params(spec, cfg):
        size, grad = gathered_bytes(p, cfg), (p.numel * unreduced_grad_bytes(p, cfg) if p.trainable else 0)
        if p.layer is not None:
            layers[p.layer] += size
            layer_grads[p.layer] += grad
        elif p.module in ("embed", "positions") and not spec.tied_embeddings:
            embed, embed_grads = embed + size, embed_grads + grad
        else:
            tail, tail_grads = tail + size, tail_grads + grad
    return Units(tuple(layers), tuple(layer_grads), embed, embed_grads, tail, tail_grads)


def gathered_bytes(p: ParamTensor, cfg: TrainConfig) -> int:
    """A parameter as FSDP gathers it: in the compute dtype under mixed precision, else as stored (4-bit
    weights packed two to a byte)."""
    if p.quantized:
        return (p.numel + 1) // 2
    if computes_16bit_params(cfg):
        return p.numel * 2
    return p.numel * (adapter_bytes(cfg) if p.trainable and cfg.method is not Method.FULL else weight_bytes(cfg))


def unreduced_grad_bytes(p: ParamTensor, cfg: TrainConfig) -> int:
    """Bytes per element of a gradient before the reduce-scatter: the dtype the parameter computed in."""
    return gathered_bytes(p, cfg) // p.numel if not p.quantized else 0


class FsdpEngine(Engine):
    """What both FSDP versions share: the units a layer-wise wrapping policy makes."""

    @functools.cached_property
    def units(self) -> Units:
        return fsdp_units(self.spec, self.cfg)


class Fsdp2(FsdpEngine):
    """FSDP2 through Accelerate (torch/distributed/fsdp/_fully_shard): one unit per layer, the embedding its
    own, [final norm, lm_head] one unit kept gathered from its forward to its backward. A unit's forward holds
    its parameters and the flat all-gather buffer they were copied from, which lives until the next unit has
    gathered; in backward the unit below is prefetched; a unit's reduce-scatter input is a copy of its
    gradients, kept until the next unit reduces."""

    def _layer(self, index: int) -> int:
        return self.units.layers[index] if index >= 0 else self.units.embed

    @property
    def _tail_kept(self) -> int:
        """A tied embedding puts the tail unit first in the forward: gathered from the embedding to the end of
        the backward (never resharded, and its gradient is complete only after the embedding's backward)."""
        return self.units.tail if self.spec.tied_embeddings else 0

    def resident(self) -> Parts:
        # gradient accumulation (set_requires_gradient_sync(False)) keeps every unreduced gradient
        held = self._unreduced_total() if self.accumulating else 0
        return {"gradients": held, "comm_buffers": 0, "gathered_weights": self._tail_kept}

    def extra_layers(self) -> list[int]:
        """The layer under the top one holds the top layer's reduce-scatter input, larger than the tail's under LoRA."""
        return [self.spec.n_layer - 2] if self.spec.n_layer > 1 else []

    def _unreduced_total(self) -> int:
        u = self.units
        return sum(u.layer_grads) + u.embed_grads + u.tail_grads

    def forward_gather(self, index: int) -> Parts | None:
        """The unit's all-gather buffer and its parameters, beside the unit before's buffer."""
        if index == self.spec.n_layer:
            return None if self._tail_kept else {"gathered_weights": self._layer(index - 1) + 2 * self.units.tail}
        before = self._tail_kept or self._layer(index - 1) if index == 0 else self._layer(index - 1)
        return {"gathered_weights": before + 2 * self._layer(index) + self._tail_kept}

    def forward_layer(self, index: int) -> Parts:
        return {"gathered_weights": 2 * self._layer(index) + self._tail_kept}

    def at_loss(self) -> Parts:
        """The last unit gathered in the forward keeps its buffer until the model's forward returns."""
        last = self._layer(self.spec.n_layer - 1) if self._tail_kept else self.units.tail
        return {"gathered_weights": self.units.tail + last}

    def loss_backward(self) -> Parts:
        return {"gathered_weights": self.units.tail}

    def head_backward(self) -> Parts | None:
        if not self.units.tail_grads:
            return None
        return {"gradients": self.resident()["gradients"] + self.units.tail_grads,
                "gathered_weights": self.units.tail + self._layer(self.spec.n_layer - 1)}

    def backward_layer(self, index: int, grads_above: int, new_grads: int) -> Parts:
        if not 0 <= index < self.spec.n_layer:
            return {"gradients": grads_above + new_grads, "gathered_weights": self.units.tail}
        above = self.units.layer_grads[index + 1] if index + 1 < self.spec.n_layer else self.units.tail_grads
        below = self._layer(index - 1) if index or self.units.embed_grads else 0
        held = self._unreduced_total() if self.accumulating else grads_above
        if self._tail_kept and index + 1 == self.spec.n_layer:
            above = 0   # the tied tail reduces at the end of the backward
        return {"gradients": held + new_grads, "comm_buffers": above,
                "gathered_weights": self.units.layers[index] + below + self._tail_kept}

    def reduction_moments(self) -> list[tuple[int, float, Parts]]:
        """A unit's reduce-scatter once its backward is done: its parameters freed, the one below prefetched, its
        gradients and their copy both live."""
        if self.accumulating:
            return []
        top = self.spec.n_layer - 1
        grads = self.units.layer_grads[top]
        return [(top, 1.0, {"gradients": grads, "comm_buffers": grads,
                            "gathered_weights": self._layer(top - 1) + self._tail_kept})]


class Fsdp1(FsdpEngine):
    """FSDP1 through Accelerate (torch/distributed/fsdp, use_orig_params): each layer one flat parameter, the
    rest (embedding, final norm, lm_head) the root unit, which stays gathered from the forward's start to the
    backward's end. In backward the unit below is prefetched (BACKWARD_PRE); a unit's gradient arrives as one
    flat tensor concatenated from its parameters' gradients (both alive at that instant), of the whole unit even
    where only adapters train."""

    @functools.cached_property
    def root(self) -> int:
        return self.units.embed + self.units.tail

    def _unit_grad(self, index: int) -> int:
        """The unit's unsharded flat gradient: every element of a unit that has a trainable parameter."""
        grads = self.units.layer_grads[index]
        return self.units.layers[index] if grads and flat_unit_grads(self.cfg) else grads

    def _sharded_grad(self, index: int) -> int:
        return self.states.gradients // self.spec.n_layer if self.units.layer_grads[index] else 0

    @functools.cached_property
    def _root_grad(self) -> int:
        """lm_head's and the final norm's gradients wait in the root unit's autograd buffer until the
        embedding's, the last of the backward, arrive."""
        return self.units.tail_grads

    def _resharded(self, layers: range) -> int:
        """Layer units still gathered: under SHARD_GRAD_OP every unit run so far stays gathered."""
        return 0 if self.cfg.engine.fsdp_reshard_after_forward else sum(self.units.layers[i] for i in layers)

    def resident(self) -> Parts:
        held = sum(self._unit_grad(i) for i in range(self.spec.n_layer)) + self._root_grad + self.units.embed_grads \
            if self.accumulating else 0
        return {"gradients": held, "comm_buffers": 0, "gathered_weights": self.root}

    def forward_layer(self, index: int) -> Parts:
        ahead = self.cfg.engine.fsdp_forward_prefetch and index + 1 < self.spec.n_layer
        prefetch = self.units.layers[index + 1] if ahead else 0
        return {"gathered_weights": self.root + self.units.layers[index] + prefetch + self._resharded(range(index))}

    def at_loss(self) -> Parts:
        return {"gathered_weights": self.root + self._resharded(range(self.spec.n_layer))}

    def loss_backward(self) -> Parts:
        """The root's pre-backward hook prefetches the top layer's unit."""
        top = self.units.layers[-1] if self.cfg.engine.fsdp_backward_prefetch == "BACKWARD_PRE" else 0
        return {"gathered_weights": self.at_loss()["gathered_weights"] + top}

    def _above(self, index: int) -> int:
        """Gradients held while layer `index` runs its backward: the shards of the units above, the root's."""
        if self.accumulating:
            return self.resident()["gradients"]
        return sum(self._sharded_grad(i) for i in range(index + 1, self.spec.n_layer)) + self._root_grad

    def _gathered_in_backward(self, index: int, current: bool = True) -> int:
        pre = self.cfg.engine.fsdp_backward_prefetch == "BACKWARD_PRE"
        prefetched = self.units.layers[index - 1] if index > 0 and pre else 0
        kept = self._resharded(range(index))
        return self.root + (self.units.layers[index] if current else 0) + prefetched + kept

    def head_backward(self) -> Parts | None:
        if not self._root_grad:
            return None
        return {"gradients": self._above(self.spec.n_layer - 1), **self.at_loss()}

    def backward_layer(self, index: int, grads_above: int, new_grads: int) -> Parts:
        if not 0 <= index < self.spec.n_layer:
            return {"gradients": grads_above + new_grads}
        return {"gradients": self._above(index) + new_grads, "gathered_weights": self._gathered_in_backward(index)}

    def reduction_moments(self) -> list[tuple[int, float, Parts]]:
        """The top unit's flat gradient being concatenated: its parameters' gradients and the flat copy."""
        top = self.spec.n_layer - 1
        unit = self._unit_grad(top)
        if not unit:
            return []
        return [(top, 1.0, {"gradients": self._above(top) + 2 * unit,
                            "gathered_weights": self._gathered_in_backward(top)})]


def clear_engine_caches() -> None:
    _bucket_reductions.cache_clear()
    _zero3_gathered.cache_clear()
    _fsdp_units.cache_clear()
    clear_param_caches()


def engine_for(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, states: ModelStates) -> Engine:
    if cfg.sharding in (Sharding.ZERO1, Sharding.ZERO2):
        return ZeroStage12(spec, cfg, counts, states)
    if cfg.sharding is Sharding.ZERO3 and cfg.world_size > 1:
        return Zero3(spec, cfg, counts, states)
    if cfg.sharding is Sharding.FSDP and cfg.world_size > 1:
        return Fsdp2(spec, cfg, counts, states)
    if cfg.sharding is Sharding.FSDP1 and cfg.world_size > 1:
        return Fsdp1(spec, cfg, counts, states)
    return Engine(spec, cfg, counts, states)
