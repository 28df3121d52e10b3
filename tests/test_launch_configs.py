"""plan.json and the emitted launcher configs, each loaded back by the library that consumes it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch import emit, planfile
from planner.search import with_global_batch
from planner.params import count_params, target_modules
from launch.runner import smaller_micro_batch
from planner.config import TrainConfig
from planner.enums import Sharding
from planner.sharding import EngineSettings
from common.errors import FitplanError, InputError
from profiles.models import from_name

FIXTURES = Path(__file__).parent / "test_launch_fixtures"
MIXED_PRECISIONS = {"no", "fp16", "bf16", "fp8"}  # what `accelerate launch --mixed_precision` accepts
TWO_NODES = emit.MultiNode("10.0.0.1", 29555, 1)

CASES = {
    "single-gpu-lora": (TrainConfig(method="lora", micro_batch=4), emit.MultiNode()),
    "8gpu-zero3-offload": (TrainConfig(method="full", gpus=8, sharding="zero3", offload="params",
                                       precision="bf16-mixed", micro_batch=2, grad_accum=4), emit.MultiNode()),
    "fsdp": (TrainConfig(method="full", gpus=4, sharding="fsdp", offload="params", grad_ckpt=True), emit.MultiNode()),
    "2node-zero2": (TrainConfig(gpus=8, nodes=2, sharding="zero2", micro_batch=2, grad_accum=2,
                                precision="fp16-mixed"), TWO_NODES),
    "ddp": (TrainConfig(gpus=2, sharding="ddp", precision="bf16-mixed", micro_batch=8), emit.MultiNode()),
    "fsdp1-lora": (TrainConfig(method="lora", gpus=4, sharding="fsdp1", precision="bf16-mixed"), emit.MultiNode()),
    "fsdp1-shard-grad-op": (TrainConfig(method="lora", gpus=2, sharding="fsdp1", engine=EngineSettings(
        fsdp_reshard_after_forward=False, fsdp_backward_prefetch="BACKWARD_POST")), emit.MultiNode()),
}
DISTRIBUTED = {"single-gpu-lora": "NO", "8gpu-zero3-offload": "DEEPSPEED", "fsdp": "FSDP",
               "2node-zero2": "DEEPSPEED", "ddp": "MULTI_GPU", "fsdp1-lora": "FSDP", "fsdp1-shard-grad-op": "FSDP"}


def plan_dict(config: TrainConfig | None = None) -> dict:
    return planfile.build_plan("meta-llama/Llama-3.1-8B", {"kind": "catalog", "path": None}, config or TrainConfig())


# -- plan.json ----------------------------------------------------------------------------------------

def test_plan_round_trips(tmp_path):
    config = TrainConfig(method="qlora", micro_batch=2, grad_accum=8, gpus=2, sharding="ddp")
    path = planfile.write_plan(tmp_path / "plan.json", plan_dict(config))
    plan = planfile.read_plan(path)
    assert planfile.plan_config(plan) == config
    assert plan["config"]["global_batch"] == 2 * 8 * 2
    assert plan["hardware"] == {"gpu": None, "memory_bytes": None, "gpus_per_node": 2, "nodes": 1}
    assert plan["version"] == planfile.PLAN_VERSION and plan["launcher"] == "accelerate"


def test_version_1_fixture_still_reads():
    plan = planfile.read_plan(FIXTURES / "plan_v1.json")
    config = planfile.plan_config(plan)
    assert (config.sharding, config.world_size, config.grad_accum) == ("zero2", 16, 2)
    assert plan["per_gpu"]["peak_phase"] == "backward"


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(version=2), "plan version 2"),
    (lambda p: p.pop("model"), "lacks model"),
    (lambda p: p["config"].pop("seq_len"), "lacks config.seq_len"),
    (lambda p: p["hardware"].pop("nodes"), "lacks hardware.nodes"),
    (lambda p: p.update(launcher="slurm"), "invalid launcher"),
    (lambda p: p["config"].update(global_batch=3), "global_batch 3"),
    (lambda p: p["config"].update(method="dpo"), "invalid config"),
])
def test_bad_plans_fail_in_one_sentence(tmp_path, change, message):
    plan = json.loads((FIXTURES / "plan_v1.json").read_text())
    change(plan)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InputError, match=message) as err:
        planfile.read_plan(tmp_path / "plan.json")
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_not_json_is_a_user_error(tmp_path):
    (tmp_path / "plan.json").write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        planfile.read_plan(tmp_path / "plan.json")


def test_existing_files_need_force_and_writes_leave_no_temp_files(tmp_path):
    path = planfile.write_plan(tmp_path / "plan.json", plan_dict())
    with pytest.raises(InputError, match="pass --force"):
        planfile.write_plan(path, plan_dict(TrainConfig(micro_batch=2)))
    planfile.write_plan(path, plan_dict(TrainConfig(micro_batch=2)), force=True)
    assert planfile.plan_config(planfile.read_plan(path)).micro_batch == 2
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


# -- emitted configs, loaded back by Accelerate and DeepSpeed ---------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_accelerate_config_loads_and_holds_sane_values(tmp_path, case):
    from accelerate.commands.config.config_args import ClusterConfig
    config, nodes = CASES[case]
    paths = emit.write_configs(tmp_path, config, nodes)
    loaded = ClusterConfig.from_yaml_file(paths["accelerate"])
    # ClusterConfig accepts nonsense values: check what it does not
    assert type(loaded.num_processes) is int and loaded.num_processes == config.gpus * config.nodes
    assert type(loaded.num_machines) is int and loaded.num_machines == config.nodes
    assert 0 <= loaded.machine_rank < loaded.num_machines
    assert loaded.distributed_type.value == DISTRIBUTED[case]
    if DISTRIBUTED[case] == "DEEPSPEED":
        assert loaded.mixed_precision is None  # accelerate refuses it next to a deepspeed_config_file
        assert Path(loaded.deepspeed_config["deepspeed_config_file"]) == paths["deepspeed"]
        assert paths["deepspeed"].is_absolute() and paths["deepspeed"].exists()
    else:
        assert loaded.mixed_precision in MIXED_PRECISIONS
        assert "deepspeed" not in paths
    if config.nodes > 1:
        assert loaded.main_process_ip == "10.0.0.1" and loaded.main_process_port == 29555
        assert loaded.deepspeed_config["deepspeed_multinode_launcher"] == "standard"


@pytest.mark.parametrize("case", [c for c in CASES if DISTRIBUTED[c] == "DEEPSPEED"])
def test_deepspeed_json_validates_with_deepspeed(tmp_path, case, deepspeed_world):
    from deepspeed.runtime.config import DeepSpeedConfig
    config, nodes = CASES[case]
    paths = emit.write_configs(tmp_path, config, nodes)
    deepspeed_world(config.world_size)
    ds = DeepSpeedConfig(json.loads(paths["deepspeed"].read_text()))
    assert ds.zero_optimization_stage == emit.ZERO_STAGES[config.sharding]
    assert ds.train_micro_batch_size_per_gpu == config.micro_batch
    assert ds.gradient_accumulation_steps == config.grad_accum
    assert ds.train_batch_size == config.micro_batch * config.grad_accum * config.world_size
    assert ds.gradient_clipping == emit.GRADIENT_CLIPPING
    assert ds.bfloat16_config.enabled == (config.precision in ("bf16-true", "bf16-mixed"))
    assert ds.float16_config.enabled == (config.precision == "fp16-mixed")


def test_zero3_offload_puts_optimizer_and_params_on_cpu(tmp_path, deepspeed_world):
    from deepspeed.runtime.config import DeepSpeedConfig
    config, _ = CASES["8gpu-zero3-offload"]
    deepspeed_world(8)
    ds = DeepSpeedConfig(emit.deepspeed_config(config))
    assert ds.zero_config.offload_optimizer.device == "cpu" and ds.zero_config.offload_optimizer.pin_memory
    assert ds.zero_config.offload_param.device == "cpu" and ds.zero_config.offload_param.pin_memory
    assert ds.zero_config.gather_16bit_weights_on_model_save
    assert emit.deepspeed_config(config)["optimizer"]["type"] == "AdamW"  # DeepSpeed's CPU Adam, not torch's


def launcher_env(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file` gives the training processes (its own code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as prepare
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, defaults, precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare.prepare_deepspeed_cmd_env(args)[1]
    if args.use_fsdp or args.multi_gpu:
        return prepare.prepare_multi_gpu_env(args)
    return prepare.prepare_simple_launcher_cmd_env(args)[1]


@pytest.mark.parametrize("case", CASES)
def test_launcher_plugins_accept_the_environment_accelerate_launch_builds(tmp_path, monkeypatch, case):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    config, nodes = CASES[case]
    paths = emit.write_configs(tmp_path, config, nodes)
    env = launcher_env(paths["accelerate"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if DISTRIBUTED[case] == "DEEPSPEED":  # fails if the YAML set fields the DeepSpeed JSON owns
        plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == emit.ZERO_STAGES[config.sharding]
        assert plugin.gradient_accumulation_steps == config.grad_accum
    elif config.sharding is Sharding.FSDP:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
        assert type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy"
        assert plugin.activation_checkpointing and plugin.state_dict_type.name == "FULL_STATE_DICT"
    elif config.sharding is Sharding.FSDP1:   # the plugin runs what the planner models, not Accelerate's defaults
        plugin, engine = FullyShardedDataParallelPlugin(), config.engine
        strategy = "FULL_SHARD" if engine.fsdp_reshard_after_forward else "SHARD_GRAD_OP"
        assert plugin.fsdp_version == 1 and plugin.sharding_strategy.name == strategy
        assert plugin.backward_prefetch.name == engine.fsdp_backward_prefetch
        assert plugin.use_orig_params is engine.fsdp_use_orig_params and plugin.auto_wrap_policy is not None
    else:
        assert env["ACCELERATE_MIXED_PRECISION"] == emit.MIXED_PRECISION[config.precision]


@pytest.mark.parametrize("config, nodes, message", [
    (TrainConfig(nodes=2), emit.MultiNode(), "--main-process-ip"),
    (TrainConfig(nodes=2), emit.MultiNode("10.0.0.1", 29500, 2), "--machine-rank"),
    (TrainConfig(offload="optimizer"), emit.MultiNode(), "--offload optimizer needs"),
    (TrainConfig(gpus=2, sharding="zero2", offload="params"), emit.MultiNode(), "zero3"),
])
def test_unlaunchable_layouts_are_refused(tmp_path, config, nodes, message):
    with pytest.raises(FitplanError, match=message):
        emit.write_configs(tmp_path, config, nodes)
    assert not list(tmp_path.iterdir())


def test_config_files_are_refused_together_without_force(tmp_path):
    config, _ = CASES["8gpu-zero3-offload"]
    emit.write_configs(tmp_path, config)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="--force"):
        emit.write_configs(tmp_path, config.with_(micro_batch=1))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    emit.write_configs(tmp_path, config.with_(micro_batch=1), force=True)
    assert json.loads((tmp_path / emit.DEEPSPEED_NAME).read_text())["train_micro_batch_size_per_gpu"] == 1


# -- options, targets, re-planning -----------------------------------------------------------------

def test_global_batch_sets_accumulation():
    config = with_global_batch(TrainConfig(micro_batch=2, gpus=4), 64)
    assert (config.micro_batch, config.grad_accum, config.world_size) == (2, 8, 4)
    assert with_global_batch(TrainConfig(micro_batch=2, gpus=4), 12).grad_accum == 2   # rounded up to 16


def test_lora_targets_map_roles_to_module_names():
    llama = from_name("meta-llama/Llama-3.1-8B")
    assert target_modules(llama, ("attn",)) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert target_modules(llama, ("q", "v", "down_proj")) == ["q_proj", "v_proj", "down_proj"]
    assert len(target_modules(llama, ("all-linear",))) == 7
    with pytest.raises(InputError, match="not a linear layer"):
        target_modules(llama, ("qkv_proj",))


@pytest.mark.parametrize("model, names", [
    ("openai-community/gpt2", ["c_attn", "c_proj", "c_fc"]),   # no gate: the alias skips roles a model lacks
    ("Qwen/Qwen3-30B-A3B", ["q_proj", "k_proj", "v_proj", "o_proj"]),   # fused 3-D experts: peft cannot adapt them
    ("microsoft/Phi-3-mini-4k-instruct", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])])
def test_all_linear_names_what_the_planner_counts(model, names):
    """One resolver for the recipe and the planner: the adapters counted are on exactly these modules."""
    spec = from_name(model)
    assert target_modules(spec, ("all-linear",)) == names
    adapted = [lin for lin in spec.linears() if lin.module in names]
    assert count_params(spec, TrainConfig(lora_r=8)).adapters == \
        spec.n_layer * sum(8 * (lin.d_in + lin.d_out) for lin in adapted)


@pytest.mark.parametrize("micro, accum, gpus, expected", [
    (8, 1, 1, (4, 2)), (4, 2, 2, (2, 4)), (6, 1, 1, (3, 2)), (3, 2, 1, (2, 3)), (1, 4, 1, None)])
def test_smaller_micro_batch_keeps_the_global_batch(micro, accum, gpus, expected):
    config = TrainConfig(micro_batch=micro, grad_accum=accum, gpus=gpus)
    smaller = smaller_micro_batch(config)
    assert (smaller and (smaller.micro_batch, smaller.grad_accum)) == (expected or None)
    if smaller:
        assert planfile.global_batch(smaller) == planfile.global_batch(config)
