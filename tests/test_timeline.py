"""The timeline (planner/timeline.py) is the estimate moment by moment: the highest moment of each phase is
that phase's total in planner/memory.py, so the highest of all is the allocated peak, over many models and
configurations (checkpointing, QLoRA, every sharding engine, offload, each precision and optimizer)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from common.errors import FitplanError
from planner.api import runnable
from planner.config import TrainConfig
from planner.enums import Attention, Method, Offload, Optimizer, Phase, Precision, Sharding
from planner.memory import COMPONENTS, Estimate, estimate
from planner.model_input import ResolvedModel
from planner.timeline import Point, peak_index, timeline
from profiles.models import catalog, from_name

MODELS = ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-7B",
          "google/gemma-2-9b", "openai-community/gpt2", "tiiuae/falcon-7b", "mistralai/Mixtral-8x7B-v0.1",
          "microsoft/Phi-3-mini-4k-instruct", "allenai/OLMo-2-1124-7B"]
SETUPS = [  # (method, grad_ckpt, sharding, gpus, offload, precision)
    ("lora", False, "none", 1, "none", "bf16-true"),
    ("lora", True, "none", 1, "none", "bf16-mixed"),
    ("qlora", False, "none", 1, "none", "bf16-true"),
    ("qlora", True, "ddp", 2, "none", "bf16-true"),
    ("qlora", True, "zero2", 4, "none", "fp16-mixed"),
    ("full", False, "none", 1, "none", "bf16-true"),
    ("full", True, "zero3", 8, "none", "bf16-mixed"),
    ("full", True, "zero2", 2, "optimizer", "bf16-mixed"),
    ("full", True, "fsdp", 4, "params", "bf16-true"),
    ("full", False, "fsdp1", 2, "none", "fp32"),
    ("lora", True, "zero3", 8, "none", "bf16-true"),
    ("lora", True, "fsdp", 4, "none", "bf16-true"),
]


def estimate_of(model: str, **fields) -> Estimate | None:
    """The estimate of a configuration the libraries run (None for one they cannot)."""
    spec = from_name(model) if isinstance(model, str) else model
    try:
        cfg = runnable(ResolvedModel(spec, "catalog"), TrainConfig(**fields))
        return estimate(spec, cfg)
    except FitplanError:
        return None


def highest(points: list[Point]) -> Point:
    return points[peak_index(points)]


def assert_timeline_is_the_estimate(est: Estimate) -> None:
    points = timeline(est)
    for phase in Phase:
        top = highest([p for p in points if p.phase is phase])
        assert top.total == sum(est.phases[phase].values()), (phase, top.step, top.total, est.phases[phase])
    peak = highest(points)
    assert peak.total == est.allocated_peak_bytes
    assert peak.phase is est.peak_phase
    assert peak.components == est.components


@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("model", MODELS)
def test_the_highest_moment_is_the_allocated_peak(model, setup):
    method, grad_ckpt, sharding, gpus, offload, precision = setup
    for micro_batch, seq_len in ((1, 512), (4, 2048)):
        est = estimate_of(model, method=method, grad_ckpt=grad_ckpt, sharding=sharding, gpus=gpus, offload=offload,
                          precision=precision, micro_batch=micro_batch, seq_len=seq_len)
        if est is not None:
            assert_timeline_is_the_estimate(est)


SPECS = [spec for spec in catalog() if spec.n_layer > 1]


@given(spec=st.sampled_from(SPECS), method=st.sampled_from(Method), precision=st.sampled_from(Precision),
       optimizer=st.sampled_from(Optimizer), micro_batch=st.integers(1, 32), seq_len=st.sampled_from([16, 128, 1024, 4096, 16384]),
       grad_ckpt=st.booleans(), attn=st.sampled_from(Attention), sharding=st.sampled_from(Sharding),
       gpus=st.sampled_from([1, 2, 8]), offload=st.sampled_from(Offload), lora_r=st.sampled_from([4, 16, 64]))
def test_any_configuration(spec, **fields):
    est = estimate_of(spec, **fields)
    if est is not None:
        assert_timeline_is_the_estimate(est)


GAP = dict(method="lora", precision="fp16-mixed", grad_ckpt=True, micro_batch=4, seq_len=64)


def test_the_second_layer_can_hold_the_backward_peak():
    """The bottom layer walks lighter under LoRA, so when gradients rise faster than checkpoints fall the
    second layer's backward holds the most: the estimate evaluates it."""
    est = estimate_of("meta-llama/Llama-2-13b-hf", **GAP)
    top = highest(timeline(est))
    assert (top.layer, top.total) == (2, est.allocated_peak_bytes)


def test_the_step_runs_in_order():
    est = estimate_of("meta-llama/Llama-3.2-1B", method="full", grad_ckpt=True)
    points, n = timeline(est), est.spec.n_layer
    phases = [p.phase for p in points]
    assert phases == sorted(phases, key=list(Phase).index)
    assert [p.layer for p in points if p.step.endswith("forward") and p.layer] == list(range(1, n + 1))
    assert [p.layer for p in points if p.step.endswith(" backward") and p.layer] == list(range(n, 0, -1))
    steps = [p.step for p in points]
    assert all(steps.index(f"layer {i} recompute") + 1 == steps.index(f"layer {i} backward") for i in range(1, n + 1))
    assert steps[0] == "start" and steps[-1] == "optimizer step"
    assert "embedding backward" in steps   # Llama-3.2-1B ties its embedding to lm_head


def test_no_recomputation_without_checkpointing():
    est = estimate_of("meta-llama/Llama-3.1-8B", method="lora")
    steps = [p.step for p in timeline(est)]
    assert not any(s.endswith("recompute") for s in steps)
    assert len(steps) == 1 + 32 + 1 + 1 + 32 + 1   # start, forward, loss, loss backward, backward, step


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_model_states_hold_and_gradients_only_grow_through_the_backward(method):
    est = estimate_of("meta-llama/Llama-3.1-8B", method=method, grad_ckpt=True)
    points = timeline(est)
    for name in ("weights", "quant_constants", "adapters", "optimizer_states", "master_weights"):
        assert {p.components[name] for p in points} == {getattr(est.states, name)}
    backward = [p.components["gradients"] for p in points if p.phase is Phase.BACKWARD and p.layer]
    assert backward == sorted(backward)
    assert all(set(p.components) == set(COMPONENTS) and min(p.components.values()) >= 0 for p in points)


def test_the_json_names_every_moment():
    from planner.api import evaluate
    from planner.hardware import hardware_from_catalog
    from planner.serialize import timeline_dict
    data = timeline_dict(evaluate("meta-llama/Llama-3.1-8B", TrainConfig(method=Method.QLORA, grad_ckpt=True),
                                  hardware_from_catalog("RTX 4090")))
    json.dumps(data)
    line = data["timeline"]
    assert line["components"] == list(COMPONENTS)
    assert all(p["allocated_bytes"] == sum(p["components"].values()) for p in line["points"])
    peak = line["points"][line["peak"]["index"]]
    assert peak["allocated_bytes"] == line["peak"]["allocated_bytes"] == data["per_gpu"]["allocated_peak_bytes"]
    assert line["peak"]["phase"] == data["per_gpu"]["peak_phase"]
