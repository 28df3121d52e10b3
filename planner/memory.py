"""Per-GPU memory of one training configuration, phase by phase.

Memory peaks in one phase, it is not a sum: at the end of the forward pass (weights, optimizer states,
every saved activation, the loss's fp32 logits), during the backward pass (activations being freed while
gradients appear, the logits' gradients first) or at the optimizer step (weights, gradients, states and
the step's temporaries). Each phase is a dict of the components named in the JSON contract; the peak is
the largest phase, and its components are what is live then. Step 2 is modelled: optimizer states exist.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from planner.activations import (LayerSaved, attention_kernel, final_norm_saved, head_walk_cache, layer_saved,
                                  layer_walk_cache, sdpa_needs_mask, stream_bytes)
from planner.loss import LossHead, loss_head
from planner.config import TrainConfig
from planner.enums import ActivationOffload, Attention, Batching, Loss, Method, Offload, Phase, Precision
from planner.optimizers import record
from planner.params import ParamCounts, count_params, numel, ordered_params, trainable_tensors
from planner.engines import Engine, clear_engine_caches, engine_for, model_shape
from planner.states import (ModelStates, computes_16bit_params, deepspeed_16bit, flat_unit_grads, model_states,
                            trainable_bytes)
from profiles.spec import ModelSpec

COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer_states", "master_weights",
              "gathered_weights", "comm_buffers", "activations", "logits", "temporary")
INDEX_BYTES = 8  # input_ids and labels are int64


@dataclass(frozen=True)
class Estimate:
    spec: ModelSpec
    cfg: TrainConfig
    counts: ParamCounts
    states: ModelStates
    phases: dict[Phase, dict[str, int]]
    host_activations: int = 0      # offloaded activations in host memory

    @property
    def peak_phase(self) -> Phase:
        # ties go to the earliest phase: that is where the memory is first needed
        return max(self.phases, key=lambda p: sum(self.phases[p].values()))

    @property
    def components(self) -> dict[str, int]:
        return self.phases[self.peak_phase]

    @property
    def allocated_peak_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def paged_bytes(self) -> int:
        return self.states.paged

    @property
    def cpu_bytes(self) -> int:
        return self.states.cpu + self.host_activations


def estimate(spec: ModelSpec, cfg: TrainConfig, total_params: int | None = None) -> Estimate:
    engine = engine_of(spec, cfg, total_params)
    acts = Activations.of(spec, cfg)
    layers = sorted({*peak_layers(spec.n_layer), *engine.extra_layers()}, reverse=True)
    forward = sorted({layers[0], *engine.extra_forward_layers()}, reverse=True)   # saved activations grow upward
    phases = {
        Phase.FORWARD: highest(forward_moments(engine, acts, forward)).components,
        Phase.BACKWARD: highest(backward_moments(engine, acts, layers)).components,
        Phase.OPTIMIZER_STEP: optimizer_moment(engine, acts).components,
    }
    return Estimate(spec=spec, cfg=cfg, counts=engine.counts, states=engine.states, phases=phases,
                    host_activations=acts.host)


def engine_of(spec: ModelSpec, cfg: TrainConfig, total_params: int | None = None) -> Engine:
    """The engine of a configuration, with its parameters and model states (the same for every micro-batch and
    sequence length, so kept)."""
    key = (spec, cfg.method, cfg.precision, cfg.optimizer, cfg.lora_r, cfg.lora_targets, cfg.double_quant,
           cfg.gpus, cfg.nodes, cfg.sharding, cfg.offload, total_params)  # what model states depend on
    if key not in _STATES:
        counts = count_params(spec, cfg, total_params)
        _STATES[key] = counts, model_states(spec, cfg, counts)
    return engine_for(spec, cfg, *_STATES[key])


_STATES: dict[tuple, tuple[ParamCounts, ModelStates]] = {}


def clear_caches() -> None:
    """Forget every cached state and walk (for timing a cold search)."""
    _STATES.clear()
    clear_engine_caches()
    _grad_numels.cache_clear()
    layer_walk_cache.cache_clear()
    head_walk_cache.cache_clear()


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one micro-batch on one GPU."""
    tokens: int
    layers: list[int]          # saved per layer on the GPU (its checkpointed input alone with checkpointing)
    first: LayerSaved          # the first layer (its input needs no gradient under LoRA)
    rest: LayerSaved           # every other layer
    head: LossHead             # final norm, lm_head and the loss (planner/loss.py)
    inputs: int                # input_ids, labels and the loss's shifted labels
    stream: int                # one hidden state (a layer's input)
    mask: int                  # the b x s x s causal mask, alive through the forward (with inputs under checkpointing)
    autocast_cache: int        # autocast's 16-bit copies of trainable fp32 weights, kept until it exits
    restored: int = 0          # brought back from host memory for the layer in backward (offloaded checkpoints)
    host: int = 0              # saved activations offloaded to host memory

    @classmethod
    def of(cls, spec: ModelSpec, cfg: TrainConfig) -> "Activations":
        n = cfg.micro_batch * cfg.seq_len
        first, rest = layer_saved(spec, cfg, first=True), layer_saved(spec, cfg)
        stream = n * spec.hidden * stream_bytes(cfg)
        layers = [first.bytes(n)] + [rest.bytes(n)] * (spec.n_layer - 1)
        if cfg.grad_ckpt:
            layers = [stream] * spec.n_layer  # each checkpointed layer keeps only its input
        offloaded = _offloaded(cfg, layers, stream)
        mask = _mask(spec, cfg)
        kept = mask if cfg.grad_ckpt else 0  # an input of every checkpointed layer: kept for the recomputes
        return cls(tokens=n, layers=[0] * spec.n_layer if offloaded else layers, first=first, rest=rest,
                   head=_head_on_gpu(spec, cfg, loss_head(spec, cfg, n), n), inputs=_inputs(spec, cfg) + kept,
                   stream=stream, mask=mask - kept,
                   autocast_cache=_autocast_cache(spec, cfg), restored=stream if offloaded and cfg.grad_ckpt else 0,
                   host=offloaded)


def _inputs(spec: ModelSpec, cfg: TrainConfig) -> int:
    """input_ids, labels and the loss's shifted labels (int64); padded rows add their attention mask, packed ones
    their position ids, from which the rotary tables (cos, sin) are made per row instead of once for all."""
    n = cfg.micro_batch * cfg.seq_len
    ids = 3 * n * INDEX_BYTES
    if cfg.batching is Batching.FIXED:
        return ids
    rows = cfg.micro_batch - 1 if cfg.batching is Batching.PACKED and not spec.learned_positions else 0
    rotary = 2 * rows * cfg.seq_len * int(spec.head_dim * spec.partial_rotary) * stream_bytes(cfg)
    return ids + n * INDEX_BYTES + rotary


def _offloaded(cfg: TrainConfig, layers: list[int], stream: int) -> int:
    """Bytes of saved activations moved to host memory: with offloading, every saved tensor of the layers
    (TRL's OffloadActivations), or under checkpointing only each layer's input."""
    return 0 if cfg.activation_offload is ActivationOffload.NONE else sum(layers)


def _head_on_gpu(spec: ModelSpec, cfg: TrainConfig, head: LossHead, tokens: int) -> LossHead:
    """With offloading, the final norm's saved tensors leave too; lm_head's stay (TRL's NoOpManager)."""
    if cfg.activation_offload is ActivationOffload.NONE or cfg.loss is not Loss.STANDARD:
        return head
    return replace(head, saved=head.saved - final_norm_saved(spec, cfg, tokens))


def _autocast_cache(spec: ModelSpec, cfg: TrainConfig) -> int:
    """torch.autocast caches the 16-bit cast of every leaf weight that requires grad for the whole forward."""
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED) and not computes_16bit_params(cfg)
    if not mixed or cfg.method is not Method.FULL:
        return 0  # adapters' copies are small; frozen weights are cast anew for each use, not cached
    return 2 * spec.n_layer * sum(lin.experts * lin.d_in * lin.d_out for lin in spec.linears())


def _mask(spec: ModelSpec, cfg: TrainConfig) -> int:
    """The b x 1 x s x s causal mask the model builds for the forward: in the embeddings' dtype for eager
    attention, boolean for SDPA when it needs one (a sliding window, Falcon)."""
    if attention_kernel(spec, cfg) is Attention.EAGER:
        return cfg.micro_batch * cfg.seq_len**2 * stream_bytes(cfg)
    return cfg.micro_batch * cfg.seq_len**2 if sdpa_needs_mask(spec, cfg) else 0


@dataclass(frozen=True)
class Moment:
    """One moment of the step: what runs, its phase and the bytes live then, by component (per GPU)."""

    step: str
    phase: Phase
    components: dict[str, int]
    layer: int | None = None   # 1-based transformer layer, None outside the layers

    @property
    def total(self) -> int:
        return sum(self.components.values())


def highest(moments: list[Moment]) -> Moment:
    """The moment holding the most (the earliest of equals: where the memory is first needed)."""
    return max(moments, key=lambda m: m.total)


def peak_layers(n_layer: int) -> list[int]:
    """The layers (0-based, top first) whose moments can hold a pass's peak: along the layers that walk alike
    (all but the bottom one) activations and gradients change linearly, so one end of that line holds the
    most, the top or the second layer; the bottom layer walks differently (under LoRA its input needs no
    gradient) and is evaluated on its own. Where an engine allocates inside a layer it says so itself
    (`Engine.reduction_moments`)."""
    return sorted({n_layer - 1, min(1, n_layer - 1), 0}, reverse=True)


def _walk(acts: "Activations", index: int) -> LayerSaved:
    return acts.first if index == 0 else acts.rest


def _states(states: ModelStates, with_grads: bool) -> dict[str, int]:
    out = states.as_components()
    if not with_grads:
        out["gradients"] = 0
    return out


def forward_moments(engine: Engine, acts: Activations, layers: list[int]) -> list[Moment]:
    """The forward of each of `layers` (0-based, in order), then the loss. A layer's transients sit on top of
    everything saved below it; at the loss, every saved activation and the loss's fp32 logits. A checkpointed
    forward saves nothing inside layers: its transients show up again, larger, when backward recomputes it."""
    cfg = engine.cfg
    base = dict(_states(engine.states, with_grads=False), **engine.resident(), temporary=0)
    cache = acts.autocast_cache if cfg.grad_ckpt else 0   # checkpointed layers save no weight copies; autocast does
    moments = []
    for index in sorted({*layers, 0}):   # the bottom layer's gather can hold the peak: it follows the embedding's
        moments += _gather(engine, acts, base, index)
        moments += [_layer_forward(engine, acts, base, index)] if index in layers else []
    moments += _gather(engine, acts, base, engine.spec.n_layer)
    at_loss = dict(base, activations=sum(acts.layers) + acts.head.saved + acts.inputs, logits=acts.head.forward,
                   temporary=cache)
    moments.append(Moment("loss", Phase.FORWARD, at_loss | engine.at_loss()))
    return moments


def _gather(engine: Engine, acts: Activations, base: dict[str, int], index: int) -> list[Moment]:
    """An engine gathering layer `index`'s parameters (`n_layer`: lm_head's) before it runs, above what is saved
    below."""
    parts = engine.forward_gather(index)
    if parts is None:
        return []
    name = f"layer {index + 1} gather" if index < engine.spec.n_layer else "lm_head gather"
    below = sum(acts.layers[:index]) + acts.stream + acts.mask + acts.inputs
    live = dict(base, activations=below, logits=0, temporary=0)
    return [Moment(name, Phase.FORWARD, live | parts, index + 1 if index < engine.spec.n_layer else None)]


def _layer_forward(engine: Engine, acts: Activations, base: dict[str, int], index: int) -> Moment:
    # the layer's input lives on as its residual, beside what the layer makes; a checkpointed layer under
    # no_grad keeps nothing for backward, and offloaded saved tensors leave as they are saved
    spec, cfg = engine.spec, engine.cfg
    held = _walk(acts, index).forward_peak(acts.tokens, keeps_saved=not (cfg.grad_ckpt or acts.host))
    cached = acts.autocast_cache * (index + 1) // spec.n_layer if cfg.grad_ckpt else 0  # autocast's copies accumulate
    parts = dict(base, activations=sum(acts.layers[:index]) + acts.stream + held + acts.mask + acts.inputs, logits=0,
                 temporary=cached)
    return Moment(f"layer {index + 1} forward", Phase.FORWARD, parts | engine.forward_layer(index), index + 1)


def backward_moments(engine: Engine, acts: Activations, layers: list[int]) -> list[Moment]:
    """The loss's backward (logit gradients), lm_head's weight gradient where the engine acts on it, a fused
    loss's final-norm backward, each of `layers` (0-based, in order: recomputed first under checkpointing, then
    its backward), a tied embedding's gradient, and the engine's last reduction."""
    spec, cfg, states, back = engine.spec, engine.cfg, engine.states, Phase.BACKWARD
    base = dict(_states(states, with_grads=False), **engine.resident(), temporary=0, logits=acts.head.kept)
    per_layer, head_grads = _grad_bytes_made(spec, cfg, states)
    saved = sum(acts.layers) + acts.inputs
    moments = [Moment("loss backward", back, dict(base, activations=saved + acts.head.saved,
                                                  logits=acts.head.backward) | engine.loss_backward())]
    head = engine.head_backward()
    if head is not None:   # lm_head has made its weight's gradient; the hidden states' gradient waits
        moments.append(Moment("lm_head backward", back, dict(base, activations=saved + acts.stream) | head))
    if acts.head.norm_backward:   # a fused loss hands the final norm its gradient: the norm's backward runs
        moments.append(Moment("final norm backward", back, dict(base, activations=saved + acts.head.norm_backward)
                              | engine.backward_layer(spec.n_layer, head_grads, 0)))
    reductions = engine.reduction_moments()
    for index in layers:
        moments += _layer_backward(engine, acts, base, index, head_grads + per_layer * (spec.n_layer - 1 - index))
        moments += [_reduction(engine, acts, base, *r) for r in reductions if r[0] == index]
    # an engine's allocations inside other layers hold the peak whatever the layers evaluated
    moments += [_reduction(engine, acts, base, *r) for r in reductions if r[0] not in layers]
    if spec.tied_embeddings and cfg.method is Method.FULL:
        # the embedding's gradient is summed out of place into the tied lm_head's: both live with the sum
        parts = engine.backward_layer(-1, states.gradients, 0)
        moments.append(Moment("embedding backward", back, dict(base, activations=acts.inputs + acts.stream) | parts
                              | {"temporary": 2 * _embedding_grad(spec, cfg)}))
    end = engine.backward_end()
    if end is not None:
        moments.append(Moment("backward end", back, dict(base, activations=acts.inputs + acts.stream) | end))
    return moments


def _layer_backward(engine: Engine, acts: Activations, base: dict[str, int], index: int,
                    grads_above: int) -> list[Moment]:
    cfg = engine.cfg
    walk, layer = _walk(acts, index), index + 1
    # checkpoints keep their own input; an offloaded checkpoint is brought back for its layer
    below = sum(acts.layers[:index + 1 if cfg.grad_ckpt else index]) + acts.restored + acts.inputs
    moments = []
    if cfg.grad_ckpt:  # first the layer's forward runs again, its output's gradient waiting
        recompute = walk.forward_peak(acts.tokens) + walk.pending * acts.tokens
        moments.append(Moment(f"layer {layer} recompute", Phase.BACKWARD, dict(base, activations=below + recompute)
                              | engine.backward_layer(index, grads_above, 0), layer))
    live, new_grads = walk.backward_peak(acts.tokens, offloaded=bool(acts.host) and not cfg.grad_ckpt,
                                         hooked=engine.hooks_gradients)
    moments.append(Moment(f"layer {layer} backward", Phase.BACKWARD, dict(base, activations=below + live)
                          | engine.backward_layer(index, grads_above, new_grads), layer))
    return moments


def _reduction(engine: Engine, acts: Activations, base: dict[str, int], index: int, made: float,
               parts: dict[str, int]) -> Moment:
    """The engine's allocation inside layer `index`'s backward, once `made` of its weight gradients exist: the
    layer's live bytes then (each gradient leaving as it is made), what is saved below it."""
    steps = _walk(acts, index).grad_steps
    total = steps[-1][2] if steps else 0
    at = next((i for i, step in enumerate(steps) if step[2] >= made * total), len(steps) - 1)
    tok, fixed, so_far = steps[at] if steps else (0, 0, 0)
    in_flight = so_far - (steps[at - 1][2] if at else 0)
    below = sum(acts.layers[:index + 1 if engine.cfg.grad_ckpt else index]) + acts.restored + acts.inputs
    return Moment(f"layer {index + 1} gradient reduction", Phase.BACKWARD,
                  dict(base, activations=below + tok * acts.tokens + fixed) | parts
                  | {"gradients": parts["gradients"] + in_flight}, index + 1)


def _embedding_grad(spec: ModelSpec, cfg: TrainConfig) -> int:
    return spec.vocab * spec.hidden * trainable_bytes(cfg) // _shards(cfg)


def _shards(cfg: TrainConfig) -> int:
    return cfg.world_size if cfg.sharding.shards_grads else 1


def _grad_bytes_made(spec: ModelSpec, cfg: TrainConfig, states: ModelStates) -> tuple[int, int]:
    """Gradient bytes (per GPU) one layer adds when its backward completes (the layers' mean, where they differ),
    and those lm_head and the final norm make before the layers; the input embedding's come last (unless tied
    to lm_head)."""
    in_layers, head, embedding = _grad_numels(spec, model_shape(cfg))
    total = max(in_layers + head + embedding, 1)
    share = lambda numel: states.gradients * numel // total  # noqa: E731 - gradients are split as the elements
    return share(in_layers) // spec.n_layer, share(head)


@lru_cache(maxsize=256)
def _grad_numels(spec: ModelSpec, cfg: TrainConfig) -> tuple[int, int, int]:
    """Trainable elements in the layers, in lm_head and the final norm, and in the untied input embedding."""
    in_layers = head = embedding = 0
    for p in ordered_params(spec, cfg):
        if p.trainable and p.layer is not None:
            in_layers += p.numel
        elif p.trainable and p.module in ("embed", "positions") and not spec.tied_embeddings:
            embedding += p.numel
        elif p.trainable:
            head += p.numel
    if flat_unit_grads(cfg):   # FSDP1 keeps the gradient of every element of a layer with an adapter
        in_layers = sum(p.numel for p in ordered_params(spec, cfg) if p.layer is not None)
    return in_layers, head, embedding


def optimizer_moment(engine: Engine, acts: Activations) -> Moment:
    spec, cfg, states = engine.spec, engine.cfg, engine.states
    parts = dict(_states(states, with_grads=True), gathered_weights=0, activations=acts.inputs, logits=0)
    return Moment("optimizer step", Phase.OPTIMIZER_STEP, parts | engine.step(_step_temporaries(spec, cfg, states)))


def _step_temporaries(spec: ModelSpec, cfg: TrainConfig, states: ModelStates) -> int:
    """What the optimizer's step allocates beside its states (`OptimizerRecord.step_temporary`)."""
    kind = record(cfg.optimizer).step_temporary
    if kind == "foreach" and not deepspeed_16bit(cfg) and cfg.offload is Offload.NONE:
        return states.optimizer_states // 2   # sqrt(exp_avg_sq) of every parameter at once: one state's worth
    if kind == "per_tensor":
        # one tensor at a time: the update and its successor (the factored estimate, then -update), fp32,
        # plus fp32 copies of a 16-bit gradient and parameter
        largest = max(numel(shape) for shape, _ in trainable_tensors(spec, cfg))
        return largest * (8 + (8 if trainable_bytes(cfg) < 4 else 0))
    return 0
