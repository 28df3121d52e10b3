"""Per-GPU memory of one training configuration, phase by phase.

Memory peaks in one phase, it is not a sum: at the end of the forward pass (weights, optimizer states,
every saved activation, the loss's fp32 logits), during the backward pass (activations being freed while
gradients appear, the logits' gradients first) or at the optimizer step (weights, gradients, states and
the step's temporaries). Each phase is a dict of the components named in the JSON contract; the peak is
the largest phase, and its components are what is live then. Step 2 is modelled: optimizer states exist.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planner.activations import (LayerSaved, attention_kernel, final_norm_saved, head_walk_cache, layer_saved,
                                  layer_walk_cache, sdpa_needs_mask, stream_bytes)
from planner.loss import LossHead, loss_head
from planner.config import TrainConfig
from planner.enums import ActivationOffload, Attention, Loss, Method, Offload, Phase, Precision
from planner.optimizers import record
from planner.params import ParamCounts, count_params, numel, trainable_tensors
from planner.states import ModelStates, deepspeed_16bit, model_states, trainable_bytes
from profiles.spec import ModelSpec

COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer_states", "master_weights",
              "activations", "logits", "temporary")
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
    key = (spec, cfg.method, cfg.precision, cfg.optimizer, cfg.lora_r, cfg.lora_targets, cfg.double_quant,
           cfg.gpus, cfg.nodes, cfg.sharding, cfg.offload, total_params)  # what model states depend on
    if key not in _STATES:
        counts = count_params(spec, cfg, total_params)
        _STATES[key] = counts, model_states(spec, cfg, counts)
    counts, states = _STATES[key]
    acts = Activations.of(spec, cfg)
    phases = {
        Phase.FORWARD: _forward(cfg, states, acts),
        Phase.BACKWARD: _backward(spec, cfg, counts, states, acts),
        Phase.OPTIMIZER_STEP: _optimizer_step(spec, cfg, states, acts),
    }
    return Estimate(spec=spec, cfg=cfg, counts=counts, states=states, phases=phases, host_activations=acts.host)


# Parameters and model states, the same for every micro-batch and sequence length
_STATES: dict[tuple, tuple[ParamCounts, ModelStates]] = {}


def clear_caches() -> None:
    """Forget every cached state and walk (for timing a cold search)."""
    _STATES.clear()
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
    mask: int                  # the b x s x s causal mask, alive through the forward
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
        return cls(tokens=n, layers=[0] * spec.n_layer if offloaded else layers, first=first, rest=rest,
                   head=_head_on_gpu(spec, cfg, loss_head(spec, cfg, n), n), inputs=3 * n * INDEX_BYTES, stream=stream, mask=_mask(spec, cfg),
                   autocast_cache=_autocast_cache(spec, cfg), restored=stream if offloaded and cfg.grad_ckpt else 0,
                   host=offloaded)


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
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED) and not deepspeed_16bit(cfg)
    if not mixed or cfg.method is not Method.FULL:
        return 0  # adapters' copies are small; frozen weights are cast anew for each use, not cached
    return 2 * spec.n_layer * sum(lin.experts * lin.d_in * lin.d_out for lin in spec.linears())


def _mask(spec: ModelSpec, cfg: TrainConfig) -> int:
    """The b x 1 x s x s causal mask the model builds for the forward: in the embeddings' dtype for eager
    attention, boolean for SDPA when it needs one (a sliding window, Falcon)."""
    if attention_kernel(spec, cfg) is Attention.EAGER:
        return cfg.micro_batch * cfg.seq_len**2 * stream_bytes(cfg)
    return cfg.micro_batch * cfg.seq_len**2 if sdpa_needs_mask(spec, cfg) else 0


def _states(states: ModelStates, with_grads: bool) -> dict[str, int]:
    out = states.as_components()
    if not with_grads:
        out["gradients"] = 0
    return out


def _forward(cfg: TrainConfig, states: ModelStates, acts: Activations) -> dict[str, int]:
    """The larger of the loss computation (everything saved plus the fp32 logits) and the last layer's
    forward (its transient results on top of everything saved). A checkpointed forward saves nothing
    inside layers: its transients show up again, larger, when backward recomputes the layer."""
    base = dict(_states(states, with_grads=False), temporary=states.gathered)
    at_loss = dict(base, activations=sum(acts.layers) + acts.head.saved + acts.inputs, logits=acts.head.forward)
    if cfg.grad_ckpt:   # checkpointed layers save no weight copies; autocast's cache keeps them
        at_loss["temporary"] += acts.autocast_cache
    # the layer's input lives on as its residual, beside what the layer makes (a checkpointed layer under
    # no_grad keeps nothing for backward: its transients show up again, larger, when backward recomputes it)
    # offloaded saved tensors leave as they are saved: a layer then holds only what it still computes with
    layer = acts.rest.forward_peak(acts.tokens, keeps_saved=not (cfg.grad_ckpt or acts.host))
    in_layer = dict(base, activations=sum(acts.layers[:-1]) + acts.stream + layer + acts.mask + acts.inputs, logits=0)
    if cfg.grad_ckpt:
        in_layer["temporary"] += acts.autocast_cache
    return max((at_loss, in_layer), key=lambda m: sum(m.values()))


def _backward(spec: ModelSpec, cfg: TrainConfig, counts: ParamCounts, states: ModelStates,
              acts: Activations) -> dict[str, int]:
    """The larger of the loss's backward (logit gradients) and the backward of the top or bottom layer:
    activations fall and gradients rise linearly in between, so one of the ends holds the most."""
    base = _states(states, with_grads=False)
    at_loss = dict(base, activations=sum(acts.layers) + acts.head.saved + acts.inputs,
                   logits=acts.head.backward, temporary=states.gathered)
    kept, back = acts.head.kept, acts.restored   # a plain loop's logits; an offloaded checkpoint brought back
    layer_grads = _layer_grad_bytes(spec, counts, states)
    # the input embedding's gradient appears only after the first layer's backward (unless tied to lm_head)
    embedding = 0 if spec.tied_embeddings or cfg.method is not Method.FULL else _embedding_grad(spec, cfg)
    head_grads = states.gradients - layer_grads * spec.n_layer - embedding
    moments = [at_loss]
    if acts.head.norm_backward:   # a fused loss hands the final norm its gradient: the norm's backward runs
        moments.append(dict(base, gradients=head_grads, activations=sum(acts.layers) + acts.inputs
                            + acts.head.norm_backward, logits=kept, temporary=states.gathered))
    for index, layer in ((spec.n_layer - 1, acts.rest), (0, acts.first)):
        below = sum(acts.layers[:index + 1 if cfg.grad_ckpt else index])  # checkpoints keep their own input
        grads_above = head_grads + layer_grads * (spec.n_layer - 1 - index)
        live, new_grads = layer.backward_peak(acts.tokens, offloaded=bool(acts.host) and not cfg.grad_ckpt)
        moments.append(dict(base, gradients=grads_above + new_grads, activations=below + back + live + acts.inputs,
                            logits=kept, temporary=states.gathered))
        if cfg.grad_ckpt:  # first the layer's forward runs again, its output's gradient waiting
            recompute = layer.forward_peak(acts.tokens) + layer.pending * acts.tokens
            moments.append(dict(base, gradients=grads_above, activations=below + back + recompute + acts.inputs,
                                logits=kept, temporary=states.gathered))
    if spec.tied_embeddings and cfg.method is Method.FULL:
        # the embedding's gradient is summed out of place into the tied lm_head's: both live with the sum
        tied = _embedding_grad(spec, cfg)
        moments.append(dict(base, gradients=states.gradients, activations=acts.inputs + acts.stream, logits=kept,
                            temporary=states.gathered + 2 * tied))
    return max(moments, key=lambda m: sum(m.values()))


def _embedding_grad(spec: ModelSpec, cfg: TrainConfig) -> int:
    return spec.vocab * spec.hidden * trainable_bytes(cfg) // _shards(cfg)


def _shards(cfg: TrainConfig) -> int:
    return cfg.world_size if cfg.sharding.shards_grads else 1


def _layer_grad_bytes(spec: ModelSpec, counts: ParamCounts, states: ModelStates) -> int:
    """Gradient bytes one layer adds when its backward completes (per GPU)."""
    per_layer = counts.adapters // spec.n_layer if counts.adapters else counts.largest_layer
    return states.gradients * per_layer // max(counts.trainable, 1)


def _optimizer_step(spec: ModelSpec, cfg: TrainConfig, states: ModelStates, acts: Activations) -> dict[str, int]:
    out = _states(states, with_grads=True)
    out["activations"] = acts.inputs
    out["logits"] = 0
    out["temporary"] = _step_temporaries(spec, cfg, states)
    return out


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
