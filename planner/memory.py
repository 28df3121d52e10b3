"""Per-GPU memory of one training configuration, phase by phase.

Memory peaks in one phase, it is not a sum: at the end of the forward pass (weights, optimizer states,
every saved activation, the loss's fp32 logits), during the backward pass (activations being freed while
gradients appear, the logits' gradients first) or at the optimizer step (weights, gradients, states and
the step's temporaries). Each phase is a dict of the components named in the JSON contract; the peak is
the largest phase, and its components are what is live then. Step 2 is modelled: optimizer states exist.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.activations import (context, eager_scores_bytes, layer_saved, linear, norm, stream_bytes,
                                  Tensor)
from planner.config import TrainConfig
from planner.enums import Method, Optimizer, Phase, Precision
from planner.params import ParamCounts, count_params, trainable_tensors
from planner.states import ModelStates, deepspeed_16bit, model_states, trainable_bytes
from profiles.models import ModelSpec

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
        return self.states.cpu


def estimate(spec: ModelSpec, cfg: TrainConfig, total_params: int | None = None) -> Estimate:
    counts = count_params(spec, cfg, total_params)
    states = model_states(spec, cfg, counts)
    acts = Activations.of(spec, cfg)
    phases = {
        Phase.FORWARD: _forward(states, acts),
        Phase.BACKWARD: _backward(spec, cfg, states, acts),
        Phase.OPTIMIZER_STEP: _optimizer_step(spec, cfg, states, acts),
    }
    return Estimate(spec=spec, cfg=cfg, counts=counts, states=states, phases=phases)


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one micro-batch on one GPU."""
    tokens: int
    layers: list[int]          # saved per layer (its checkpointed input alone with checkpointing)
    full_layer: int            # one layer's full saved set (recomputed under checkpointing)
    widest: int                # widest intermediate tensor of a layer
    head: int                  # final norm and lm_head inputs
    stream: int                # one hidden-state tensor
    logits_forward: int        # logits live at the loss's peak in the forward pass
    logits_saved: int          # logits saved for backward (the log-softmax output)
    logits_backward: int       # logits and their gradients at the loss's backward
    inputs: int                # input_ids, labels and the loss's shifted labels
    dequant: int               # QLoRA: one layer's weight dequantized to 16 bit for its matmul

    @classmethod
    def of(cls, spec: ModelSpec, cfg: TrainConfig) -> "Activations":
        n = cfg.micro_batch * cfg.seq_len
        eager = eager_scores_bytes(spec, cfg, cfg.seq_len) * n
        first = layer_saved(spec, cfg, first=True).bytes(n) + eager
        rest_layer = layer_saved(spec, cfg)
        rest, widest = rest_layer.bytes(n) + eager, rest_layer.widest
        stream = n * spec.hidden * stream_bytes(cfg)
        layers = [first] + [rest] * (spec.n_layer - 1)
        if cfg.grad_ckpt:
            layers = [stream] * spec.n_layer  # each checkpointed layer keeps only its input
        logit_bytes = _logit_bytes(cfg)
        v = n * spec.vocab
        fp32_copy = 0 if logit_bytes == 4 else 4 * v
        return cls(tokens=n, layers=layers, full_layer=rest, widest=widest * n, head=_head_saved(spec, cfg) * n,
                   stream=stream, logits_forward=logit_bytes * v + fp32_copy + 4 * v, logits_saved=4 * v,
                   logits_backward=12 * v, inputs=3 * n * INDEX_BYTES, dequant=_dequant_bytes(spec, cfg))

    @property
    def saved(self) -> int:
        return sum(self.layers) + self.head + self.logits_saved


def _logit_bytes(cfg: TrainConfig) -> int:
    """lm_head output dtype: fp32 when its weight is fp32 and no autocast, else 16 bit."""
    if cfg.method is Method.QLORA and not deepspeed_16bit(cfg):
        return 4
    return 4 if cfg.precision is Precision.FP32 else 2


def _head_saved(spec: ModelSpec, cfg: TrainConfig) -> int:
    ctx = context(spec, cfg)
    x = Tensor(spec.hidden, stream_bytes(cfg), grad=True)
    linear(ctx, norm(ctx, spec, x), spec.vocab, "lm_head")
    return ctx.total


def _dequant_bytes(spec: ModelSpec, cfg: TrainConfig) -> int:
    if cfg.method is not Method.QLORA:
        return 0
    return max(lin.d_in * lin.d_out for lin in spec.linears() if lin.experts == 1) * 2


def _states(states: ModelStates, with_grads: bool) -> dict[str, int]:
    out = states.as_components()
    if not with_grads:
        out["gradients"] = 0
    return out


def _forward(states: ModelStates, acts: Activations) -> dict[str, int]:
    """The loss computation at the end of the forward pass: everything saved plus the fp32 logits."""
    out = _states(states, with_grads=False)
    out["activations"] = sum(acts.layers) + acts.head + acts.inputs
    out["logits"] = acts.logits_forward
    out["temporary"] = states.gathered
    return out


def _backward(spec: ModelSpec, cfg: TrainConfig, states: ModelStates, acts: Activations) -> dict[str, int]:
    """The larger of the loss's backward (logit gradients) and the backward of each layer."""
    base = _states(states, with_grads=False)
    at_loss = dict(base, activations=sum(acts.layers) + acts.head + acts.inputs,
                   logits=acts.logits_backward, temporary=states.gathered)
    best = at_loss
    layer_grads = _layer_grad_bytes(spec, cfg, states)
    head_grads = states.gradients - layer_grads * spec.n_layer
    for index in reversed(range(spec.n_layer)):
        live = sum(acts.layers[:index + 1]) + (acts.full_layer if cfg.grad_ckpt else 0)
        moment = dict(base, gradients=head_grads + layer_grads * (spec.n_layer - index),
                      activations=live + acts.inputs, logits=0,
                      temporary=states.gathered + acts.dequant + 2 * acts.stream + 2 * acts.widest)
        if sum(moment.values()) > sum(best.values()):
            best = moment
    return best


def _layer_grad_bytes(spec: ModelSpec, cfg: TrainConfig, states: ModelStates) -> int:
    """Gradient bytes one layer adds when its backward completes (per GPU)."""
    from planner.params import layer_params, lora_params
    if cfg.uses_adapters:
        per_layer = lora_params(spec, cfg) // spec.n_layer
    else:
        per_layer = layer_params(spec)
    total = (lora_params(spec, cfg) if cfg.uses_adapters else spec.params)
    return states.gradients * per_layer // max(total, 1)


def _optimizer_step(spec: ModelSpec, cfg: TrainConfig, states: ModelStates, acts: Activations) -> dict[str, int]:
    out = _states(states, with_grads=True)
    out["activations"] = acts.inputs
    out["logits"] = 0
    out["temporary"] = _step_temporaries(spec, cfg, states)
    return out


def _step_temporaries(spec: ModelSpec, cfg: TrainConfig, states: ModelStates) -> int:
    """torch's foreach AdamW allocates sqrt(exp_avg_sq) for every parameter at once: one state's worth."""
    if cfg.optimizer is Optimizer.ADAMW and not deepspeed_16bit(cfg) and cfg.offload.value == "none":
        return states.optimizer_states // 2
    if cfg.optimizer is Optimizer.ADAFACTOR:
        largest = max(numel for numel, _ in trainable_tensors(spec, cfg))
        return 3 * largest * 4  # per tensor: fp32 grad, fp32 param copy and the update
    return 0
