"""Real sharded training on two CPU ranks (gloo), each engine launched from the configs fitplan emits, with the
recipe's per-rank memory tracking on (launch/sharded_memory.py). One run per engine, shared by the tests."""
from __future__ import annotations

import json

import pytest

from launch import sharded_memory
from measure.tracker import PHASES
from planner.config import TrainConfig
from profiles.models import from_name

LLAMA = "meta-llama/Llama-3.1-8B"
TINY = dict(n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)
RUNS = {"ddp-lora": ("ddp", "lora"), "zero2-full": ("zero2", "full"), "zero3-lora": ("zero3", "lora"),
        "fsdp-full": ("fsdp", "full"), "fsdp1-lora": ("fsdp1", "lora")}
RANKS_AGREE = 0.03     # symmetric ranks differ only by DeepSpeed's boundary params and FSDP1's adapter placement


def config(sharding: str, method: str) -> TrainConfig:
    engine = sharded_memory.scaled_engine(from_name(LLAMA), from_name(LLAMA, **TINY))
    return TrainConfig(method=method, sharding=sharding, seq_len=64, engine=engine)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sharded")


@pytest.fixture(scope="module")
def runs(workdir) -> dict:
    spec = from_name(LLAMA, **TINY)
    return {name: sharded_memory.measure_sharded(spec, config(*how), processes=2, workdir=workdir)
            for name, how in RUNS.items()}


def test_the_planner_follows_each_rank(runs):
    """The CI subset of the sharded benchmark: the planner's allocated peak against each rank of these runs."""
    from planner.memory import estimate
    from benchmarks.sharded import UNDER, WITHIN
    spec = from_name(LLAMA, **TINY)
    for name, run in runs.items():
        cfg = config(*RUNS[name]).with_(gpus=2)
        planned = estimate(spec, cfg).allocated_peak_bytes
        for rank in run.ranks:
            error = 100 * (planned / rank["peak_bytes"] - 1)
            assert -UNDER <= error <= WITHIN, (name, rank["rank"], planned, rank["peak_bytes"], f"{error:+.2f}%")


def component(rank: dict, name: str, at: str = "end_of_step_components") -> int:
    return rank[at][name]


def test_every_rank_reports_every_phase_of_the_engine_asked_for(runs):
    for name, run in runs.items():
        assert [r["rank"] for r in run.ranks] == [0, 1], name
        for rank in run.ranks:
            assert rank["engine"] == RUNS[name][0] and rank["load"]["peak_bytes"] > 0
            assert [s["step"] for s in rank["steps"]] == [1, 2] and rank["measured_step"] == 2
            assert all(step["phase_peaks"][p] > 0 for step in rank["steps"] for p in PHASES), name
            assert sum(rank["components"].values()) == rank["peak_bytes"], name   # every byte has a component


def test_the_ranks_of_a_symmetric_run_agree(runs):
    for name, run in runs.items():
        first, second = (r["peak_bytes"] for r in run.ranks)
        assert abs(first - second) <= RANKS_AGREE * max(first, second), name
        assert run.ranks[0]["end_of_step_components"]["weights"] == run.ranks[1]["end_of_step_components"]["weights"]


@pytest.mark.parametrize("name", ["zero3-lora", "fsdp-full", "fsdp1-lora"])
def test_sharded_parameters_are_half_of_the_model_on_two_ranks(runs, name):
    for rank in runs[name].ranks:
        held = component(rank, "weights") + component(rank, "adapters")
        unsharded = 2 * rank["params"]["numel"]   # bf16-true (fp32 adapters add a little: below the upper bound)
        assert 0.45 <= held / unsharded <= 0.56, (name, held, unsharded)


def test_zero2_optimizer_states_are_half_of_ddp_per_trainable_parameter(runs):
    def per_trainable(run) -> float:
        rank = run.ranks[0]
        return component(rank, "optimizer_states") / rank["params"]["trainable_numel"]
    assert per_trainable(runs["zero2-full"]) == pytest.approx(per_trainable(runs["ddp-lora"]) / 2, rel=0.02)


def test_the_engines_own_buffers_are_seen(runs):
    ddp, zero2 = runs["ddp-lora"].ranks[0], runs["zero2-full"].ranks[0]
    # DDP's Reducer allocates its buckets in C++: they sum to the trainable gradients (fp32 adapters here)
    assert component(ddp, "comm_buffers") == component(ddp, "adapters")
    # ZeRO-2 with overlap_comm: two IPG buckets of reduce_bucket_size bf16 elements while backward runs
    buckets = 2 * 2 * runs["zero2-full"].config["engine"]["reduce_bucket_size"]
    assert zero2["phase_components"]["backward"]["comm_buffers"] >= buckets
    # FSDP1 + LoRA keeps gradient shards of whole units, frozen weights included (use_orig_params)
    fsdp1 = runs["fsdp1-lora"].ranks[0]
    assert component(fsdp1, "gradients") >= 0.7 * component(fsdp1, "weights")


def test_tracking_off_leaves_the_recipes_outputs_unchanged(runs, workdir):
    tracked = runs["ddp-lora"]
    run_dir = next((workdir / "runs").glob("*-ddp-lora-*"))
    first_adapter = (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    job = sharded_memory.runner.Launch(run_dir, json.loads((run_dir / "plan.json").read_text()),
                                       recipe_args=["--steps", "2"])
    memory = run_dir / sharded_memory.MEMORY_DIR
    for path in memory.iterdir():
        path.unlink()
    sharded_memory.launch(job, memory_dir=None)
    assert sharded_memory.read_losses(run_dir) == tracked.losses and not any(memory.iterdir())
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == first_adapter
