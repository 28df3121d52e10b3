"""The plan search and recommendation, without the CLI: the choices the field's rules of thumb make,
micro-batch bisection against the memory model itself, and what the user fixed staying fixed."""
from dataclasses import replace

import pytest

from cli.commands.plan import plan_json
from cli.options import request_from_options
from planner.config import TrainConfig
from planner.enums import Method, Sharding
from planner.memory import estimate
from planner.model_input import resolve_model
from planner.search import Request, make_plan, max_micro_batch, total_bytes, usable_bytes
from planner.hardware import catalog_hardware
from profiles.gpus import find_gpu
from profiles.models import from_name
from test_nvml import FakeCard, FakeNvml, MiB


def plan_model(model, options, **request) -> dict:
    return plan_json(model, options, **request)[0]


LLAMA2_7B = "meta-llama/Llama-2-7b-hf"


def options(**changes) -> dict:
    """What the plan command hands the planner when only `changes` were given on the command line."""
    out = dict(method=None, precision=None, optimizer=None, attn=None, sharding=None, offload=None,
               micro_batch=None, seq_len=None, grad_ckpt=None, lora_r=None, lora_alpha=None, lora_targets=None,
               no_double_quant=False, gpus=None, nodes=1)
    return {**out, **changes}


def card(name: str, count: int = 1):
    spec, _ = find_gpu(name)
    return catalog_hardware(spec, gpus_per_node=count)


def recommended(data: dict) -> dict:
    assert data["recommended"] is not None, data["nothing_fits"]
    return data["plans"][data["recommended"]]


# --- What gets recommended ------------------------------------------------------------------------
def test_7b_on_a_12gb_card_recommends_qlora():
    data = plan_model(LLAMA2_7B, options(), gpu="RTX 3060")
    assert recommended(data)["method"] == "qlora"
    assert data["nothing_fits"] is None


def test_7b_on_a_24gb_card_lora_fits_too():
    data = plan_model(LLAMA2_7B, options(), gpu="RTX 4090")
    methods = {p["method"] for p in data["plans"]}
    assert "lora" in methods
    assert recommended(data)["method"] == "lora"  # LoRA when it fits: faster than QLoRA


def test_70b_full_fine_tuning_on_8_h100_shards():
    data = plan_model("meta-llama/Llama-2-70b-hf", options(method="full"), gpu="h100x8")
    best = recommended(data)
    assert best["method"] == "full"
    assert best["sharding"] in ("zero3", "fsdp") or best["offload"] != "none"
    assert best["gpus"] == 8
    memory = data["hardware"]["gpus"][0]["memory_bytes"]
    assert best["per_gpu"]["total_bytes"] < memory
    for plan in data["plans"]:
        assert plan["per_gpu"]["total_bytes"] < memory
        assert plan["method"] == "full"


def test_405b_on_one_4090_fits_nothing_and_says_what_would():
    data = plan_model("meta-llama/Llama-3.1-405B", options(), gpu="RTX 4090")
    assert data["plans"] == []
    assert data["recommended"] is None
    nothing = data["nothing_fits"]
    assert nothing["min_total_bytes"] > data["hardware"]["gpus"][0]["memory_bytes"]
    assert nothing["suggestions"] and all(isinstance(s, str) and s for s in nothing["suggestions"])


@pytest.mark.parametrize("model, gpu, fixed", [
    ("meta-llama/Llama-3.1-405B", "RTX 4090", {}),
    (LLAMA2_7B, "RTX 3060", {"method": "full"}),
    (LLAMA2_7B, "RTX 4090", {"grad_ckpt": False}),        # what the user fixed stays fixed here too
    (LLAMA2_7B, "RTX 4090", {"micro_batch": 64}),
])
def test_when_nothing_fits_the_smallest_plan_does_not_fit_either(model, gpu, fixed):
    """"Nothing fits: the smallest plan needs X" must not name an X that fits in what is usable."""
    data = plan_model(model, options(**fixed), gpu=gpu)
    assert data["plans"] == []
    nothing = data["nothing_fits"]
    assert nothing["min_total_bytes"] > nothing["usable_bytes"]


# --- Micro-batch bisection and gradient accumulation ------------------------------------------------
@pytest.mark.parametrize("model, gpu, method, ckpt", [
    (LLAMA2_7B, "RTX 4090", Method.QLORA, True),
    (LLAMA2_7B, "RTX 4090", Method.LORA, True),
    ("Qwen/Qwen2.5-1.5B", "RTX 4090", Method.LORA, False),
    ("Qwen/Qwen2.5-0.5B", "a100-80gb", Method.FULL, True),
    ("openai-community/gpt2", "h100", Method.FULL, False),
])
def test_bisection_finds_the_largest_micro_batch_that_fits(model, gpu, method, ckpt):
    spec = resolve_model(model).spec
    target = card(gpu)
    req = Request(spec=spec, base=TrainConfig(), fixed=frozenset())
    cfg = TrainConfig(method=method, grad_ckpt=ckpt)
    best = max_micro_batch(req, cfg, target)
    budget = usable_bytes(target, req.margin)

    def needs(b: int) -> int:
        return total_bytes(estimate(spec, replace(cfg, micro_batch=b)), target.card.overhead)

    assert best >= 1
    assert needs(best) <= budget < needs(best + 1)


def test_bisection_returns_zero_when_one_sequence_does_not_fit():
    spec = resolve_model("meta-llama/Llama-2-70b-hf").spec
    req = Request(spec=spec, base=TrainConfig(), fixed=frozenset())
    assert max_micro_batch(req, TrainConfig(method=Method.FULL), card("RTX 4090")) == 0


def test_bisection_respects_its_limit():
    spec = from_name("gpt2", n_layer=1)
    req = Request(spec=spec, base=TrainConfig(), fixed=frozenset())
    assert max_micro_batch(req, TrainConfig(seq_len=16), card("h100"), limit=7) == 7


def test_grad_accum_fills_the_global_batch():
    spec = resolve_model(LLAMA2_7B).spec
    req = Request(spec=spec, base=TrainConfig(), fixed=frozenset(), global_batch=32)
    cfg = TrainConfig(method=Method.LORA, micro_batch=2, gpus=8, sharding=Sharding.DDP)
    plan = make_plan(req, cfg, card("h100", 8))
    assert plan.cfg.grad_accum == 2
    assert plan.cfg.micro_batch * plan.cfg.world_size * plan.cfg.grad_accum == 32


def test_grad_accum_rounds_up_to_reach_the_global_batch():
    spec = resolve_model(LLAMA2_7B).spec
    req = Request(spec=spec, base=TrainConfig(), fixed=frozenset(), global_batch=30)
    plan = make_plan(req, TrainConfig(micro_batch=4), card("RTX 4090"))
    assert plan.cfg.grad_accum == 8


def test_plans_carry_the_grad_accum_of_the_global_batch():
    data = plan_model(LLAMA2_7B, options(), gpu="h100x8", global_batch=256)
    for plan in data["plans"]:
        assert plan["micro_batch"] * plan["gpus"] * plan["nodes"] * plan["grad_accum"] >= 256
        assert plan["micro_batch"] * plan["gpus"] * plan["nodes"] * (plan["grad_accum"] - 1) < 256


# --- What the user fixed stays fixed ---------------------------------------------------------------
@pytest.mark.parametrize("gpu, fixed, field, value", [
    ("RTX 4090", {"grad_ckpt": False, "seq_len": 512}, "grad_ckpt", False),
    ("RTX 4090", {"grad_ckpt": True}, "grad_ckpt", True),
    ("RTX 4090", {"method": "qlora"}, "method", "qlora"),
    ("RTX 4090", {"micro_batch": 2}, "micro_batch", 2),
    ("RTX 4090", {"seq_len": 512}, "seq_len", 512),
    ("h100x8", {"precision": "bf16-mixed", "method": "full"}, "precision", "bf16-mixed"),
    ("a100-80gb", {"optimizer": "adamw8bit"}, "optimizer", "adamw8bit"),
    ("a100-80gb", {"attn": "eager"}, "attn", "eager"),
    ("h100x8", {"sharding": "zero2"}, "sharding", "zero2"),
    ("h100x8", {"offload": "optimizer"}, "offload", "optimizer"),
])
def test_a_fixed_option_stays_fixed_in_every_plan(gpu, fixed, field, value):
    data = plan_model(LLAMA2_7B, options(**fixed), gpu=gpu)
    assert data["plans"], data["nothing_fits"]
    assert all(plan[field] == value for plan in data["plans"])


def test_request_marks_only_what_was_given_as_fixed():
    req = request_from_options(resolve_model(LLAMA2_7B), options(method="auto", seq_len=1024, grad_ckpt=False))
    assert req.fixed == {"seq_len", "grad_ckpt"}
    assert req.base.seq_len == 1024 and req.base.grad_ckpt is False


# --- Preferences and speeds ------------------------------------------------------------------------
@pytest.mark.parametrize("model, gpu", [(LLAMA2_7B, "RTX 4090"), (LLAMA2_7B, "h100x8"),
                                        ("Qwen/Qwen2.5-0.5B", "a100-80gb")])
def test_prefer_memory_picks_the_smallest_total(model, gpu):
    data = plan_model(model, options(), gpu=gpu, prefer="memory")
    totals = [plan["per_gpu"]["total_bytes"] for plan in data["plans"]]
    assert recommended(data)["per_gpu"]["total_bytes"] == min(totals)
    assert "memory" in data["reason"]


def test_prefer_speed_picks_the_fastest():
    data = plan_model(LLAMA2_7B, options(), gpu="h100x8", prefer="speed")
    speeds = [plan["tokens_per_s"] for plan in data["plans"]]
    assert recommended(data)["tokens_per_s"] == max(speeds)


def test_a_card_missing_from_the_catalog_has_no_speed():
    unknown = FakeCard(name="NVIDIA Mystery Accelerator 9000", total=48 * 1024 * MiB, used=300 * MiB, cc=(8, 9))
    data = plan_model(LLAMA2_7B, options(), nvml=FakeNvml([unknown]))
    assert data["hardware"]["source"] == "nvml"
    assert data["plans"]
    for plan in data["plans"]:
        assert plan["tokens_per_s"] is None and plan["step_time_s"] is None and plan["cost_usd"] is None
    assert any("not in fitplan's catalog" in warning for warning in data["warnings"])


def test_a_catalog_card_has_speeds():
    data = plan_model(LLAMA2_7B, options(), gpu="RTX 4090")
    assert all(plan["tokens_per_s"] > 0 and plan["step_time_s"] > 0 for plan in data["plans"])
