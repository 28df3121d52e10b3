"""Memory over one training step, moment by moment: the data behind `estimate --plot` and the page's picture.

`planner.memory` evaluates only the moments that can hold a phase's peak (the last layer's forward, the
loss, the top and bottom layers' backward and recomputation, the optimizer step). The timeline applies the
same formulas, to the same quantities (`Activations.of`, `LayerSaved.forward_peak` / `backward_peak`, the
per-layer gradients, the model states), to every layer in the order they run: memory rises layer by layer
through the forward, peaks around the loss, falls through the backward while gradients rise, and ends at the
optimizer step. Its highest moment in each phase is that phase's total in the estimate, so the highest of
all is the allocated peak (tests/test_timeline.py holds this over many configurations).

One known exception, for memory.py to fix: memory.py evaluates the backward of the top and the bottom layer
only, assuming a straight line between; the bottom layer walks lighter (under LoRA its input needs no
gradient), so when gradients grow faster per layer than checkpoints shrink (checkpointing with adapters and
short sequences, or sharded gradients), the line peaks at the second layer, above both ends. The timeline
shows that moment (up to ~10 % above the estimate in small cases); the estimate misses it.

Pure data: no torch, no drawing.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.enums import Method, Phase
from planner.memory import COMPONENTS, Activations, Estimate
from planner.activations import LayerSaved
from planner.states import trainable_bytes


@dataclass(frozen=True)
class Point:
    """One moment of the step: what it is, its phase and the bytes live then, by component (per GPU)."""

    step: str
    phase: Phase
    components: dict[str, int]
    layer: int | None = None   # 1-based transformer layer, None outside the layers

    @property
    def total(self) -> int:
        return sum(self.components.values())


def timeline(est: Estimate) -> list[Point]:
    """Every moment of one training step of `est`, in the order they happen."""
    acts = Activations.of(est.spec, est.cfg)
    return [*_forward(est, acts), *_backward(est, acts), _optimizer_step(est)]


def peak_index(points: list[Point]) -> int:
    """The highest moment (the earliest of equals: where the memory is first needed)."""
    return max(range(len(points)), key=lambda i: (points[i].total, -i))


def _point(est: Estimate, step: str, phase: Phase, layer: int | None = None, **parts: int) -> Point:
    """A moment: the model states (gradients only as given) plus `parts`, every component named."""
    components = dict.fromkeys(COMPONENTS, 0)
    components |= {**est.states.as_components(), "gradients": 0, "temporary": est.states.gathered}
    components |= parts
    return Point(step, phase, components, layer)


def _layer_walk(est: Estimate, acts: Activations, index: int) -> LayerSaved:
    """The walk memory.py applies to layer `index` (0-based): `first` for the bottom one, `rest` for the
    others and always for the top one."""
    return acts.first if index == 0 and est.spec.n_layer > 1 else acts.rest


def _forward(est: Estimate, acts: Activations) -> list[Point]:
    """Start, each layer's forward, then the loss."""
    n, grad_ckpt, fwd = est.spec.n_layer, est.cfg.grad_ckpt, Phase.FORWARD
    points = [_point(est, "start", fwd, activations=acts.inputs)]
    for i in range(n):
        if grad_ckpt:  # each checkpoint keeps its input; the layer's transients count where backward recomputes it
            cached = acts.autocast_cache * (i + 1) // n   # autocast's weight copies accumulate layer by layer
            points.append(_point(est, f"layer {i + 1} forward", fwd, i + 1, activations=sum(acts.layers[:i + 1])
                                 + acts.inputs, temporary=est.states.gathered + cached))
            continue
        held = _layer_walk(est, acts, i).forward_peak(acts.tokens)
        # the layer's input lives on as its residual, beside what the layer makes
        points.append(_point(est, f"layer {i + 1} forward", fwd, i + 1, activations=sum(acts.layers[:i])
                             + acts.stream + held + acts.mask + acts.inputs))
    at_loss = sum(acts.layers) + acts.head + acts.inputs
    cache = acts.autocast_cache if grad_ckpt else 0
    points.append(_point(est, "loss", fwd, activations=at_loss, logits=acts.logits_forward,
                         temporary=est.states.gathered + cache))
    return points


def _backward(est: Estimate, acts: Activations) -> list[Point]:
    """The loss's backward, then each layer from the top down (recomputed first under checkpointing), then
    a tied embedding's gradient."""
    spec, cfg, back = est.spec, est.cfg, Phase.BACKWARD
    points = [_point(est, "loss backward", back, activations=sum(acts.layers) + acts.head + acts.inputs,
                     logits=acts.logits_backward)]
    per_layer, head = layer_gradient_bytes(est), head_gradient_bytes(est)
    for i in reversed(range(spec.n_layer)):
        walk = _layer_walk(est, acts, i)
        below = sum(acts.layers[:i + 1 if cfg.grad_ckpt else i])   # checkpoints keep their own input
        above = head + per_layer * (spec.n_layer - 1 - i)
        if cfg.grad_ckpt:  # the layer's forward runs again, its output's gradient waiting
            recompute = walk.forward_peak(acts.tokens) + walk.pending * acts.tokens
            points.append(_point(est, f"layer {i + 1} recompute", back, i + 1, gradients=above,
                                 activations=below + recompute + acts.inputs))
        live, new = walk.backward_peak(acts.tokens)
        points.append(_point(est, f"layer {i + 1} backward", back, i + 1, gradients=above + new,
                             activations=below + live + acts.inputs))
    if spec.tied_embeddings and cfg.method is Method.FULL:
        # the embedding's gradient is summed out of place into the tied lm_head's: both live with the sum
        points.append(_point(est, "embedding backward", back, gradients=est.states.gradients,
                             activations=acts.inputs + acts.stream,
                             temporary=est.states.gathered + 2 * embedding_gradient_bytes(est)))
    return points


def _optimizer_step(est: Estimate) -> Point:
    return Point("optimizer step", Phase.OPTIMIZER_STEP, dict(est.phases[Phase.OPTIMIZER_STEP]))


def layer_gradient_bytes(est: Estimate) -> int:
    """Gradient bytes per GPU one layer adds when its backward completes (memory.py's rule)."""
    counts = est.counts
    per_layer = counts.adapters // est.spec.n_layer if counts.adapters else counts.largest_layer
    return est.states.gradients * per_layer // max(counts.trainable, 1)


def embedding_gradient_bytes(est: Estimate) -> int:
    """The input embedding's gradient per GPU (full fine-tuning)."""
    shards = est.cfg.world_size if est.cfg.sharding.shards_grads else 1
    return est.spec.vocab * est.spec.hidden * trainable_bytes(est.cfg) // shards


def head_gradient_bytes(est: Estimate) -> int:
    """Gradients that exist before the layers' backward: lm_head's and the final norm's; the input embedding's
    appears only after the first layer's backward (unless it is tied to lm_head)."""
    spec, cfg = est.spec, est.cfg
    embedding = 0 if spec.tied_embeddings or cfg.method is not Method.FULL else embedding_gradient_bytes(est)
    return est.states.gradients - layer_gradient_bytes(est) * spec.n_layer - embedding
