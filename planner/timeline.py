"""Memory over one training step, moment by moment: the data behind `estimate --plot` and the page's picture.

`planner.memory` evaluates only the moments that can hold a phase's peak (`peak_layers`: the top, second and
bottom layers). The timeline asks it for the same moments of every layer, in the order they run: memory
rises layer by layer through the forward, peaks around the loss, falls through the backward while gradients
rise, and ends at the optimizer step. Its highest moment in each phase is that phase's total in the
estimate, so the highest of all is the allocated peak (tests/test_timeline.py holds this over many
configurations).

Pure data: no torch, no drawing.
"""
from __future__ import annotations

from planner.enums import Phase
from planner.memory import (COMPONENTS, Activations, Estimate, Moment, backward_moments, engine_of, forward_moments,
                            highest, optimizer_moment)

Point = Moment   # a moment of the timeline


def timeline(est: Estimate) -> list[Moment]:
    """Every moment of one training step of `est`, in the order they happen."""
    spec, cfg = est.spec, est.cfg
    engine, acts = engine_of(spec, cfg, est.counts.total), Activations.of(spec, cfg)
    start = (dict.fromkeys(COMPONENTS, 0) | engine.states.as_components() | {"gradients": 0, "activations": acts.inputs}
             | engine.resident())
    layers = list(range(spec.n_layer))
    return [Moment("start", Phase.FORWARD, start),
            *forward_moments(engine, acts, layers),
            *backward_moments(engine, acts, layers[::-1]),
            optimizer_moment(engine, acts)]


def peak_index(points: list[Moment]) -> int:
    """The index of the highest moment (the earliest of equals: where the memory is first needed)."""
    return points.index(highest(points))
