"""`estimate --from FILE` and `plan --from FILE`: the configs people already have (tests/fixtures/from/, modelled on
the tools' own examples) map to the TrainConfig the tools would run, field by field; keys are reported as read,
ignored or unknown; contradictions are one-sentence errors; the command line overrides the files; and the answer
is the same as `estimate` with the mapped options spelled out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_checks import run_main

from cli.commands.estimate import estimate_json
from cli.options import config_from_options, read_from
from planner.config import TrainConfig
from planner.enums import (ActivationOffload, Attention, Batching, Loop, Loss, Method, Offload, Optimizer,
                           Precision, Sharding)
from planner.foreign.api import read_files
from planner.hardware import hardware_from_catalog
from planner.sharding import EngineSettings

FIX = Path(__file__).parent / "fixtures" / "from"
OPTIONS = ("method", "precision", "optimizer", "attn", "sharding", "offload", "micro_batch", "seq_len", "grad_ckpt",
           "lora_r", "lora_alpha", "lora_targets", "gpus", "margin", "nodes")
ALL_LINEAR = ("all-linear",)
LLAMA3_LINEARS = ("gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj")


def fixture(name: str) -> str:
    return str(FIX / name)


def mapped(*names: str, model: str | None = None, given: set[str] = frozenset(), **typed):
    """(the TrainConfig, what --from read) of fixture files, as `estimate` builds it, with options `typed`."""
    options = {**{k: None for k in OPTIONS}, "nodes": 1, "no_double_quant": False, **typed}
    files = read_from(model, options, tuple(fixture(n) for n in names), set(given) | set(typed))
    return config_from_options(files.options, **files.fallback), files


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, *args)


def run_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err = run(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


# --- every fixture maps to the TrainConfig its tool would run ------------------------------------------------
EXPECTED = {
    "axolotl QLoRA FSDP 70B": (
        ("axolotl_qlora_fsdp_70b.yaml",), None, "meta-llama/Meta-Llama-3-70B", ["axolotl"],
        TrainConfig(method=Method.QLORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW_FUSED,
                    micro_batch=1, seq_len=512, grad_ckpt=True, attn=Attention.FLASH, lora_r=8, lora_alpha=16,
                    lora_targets=ALL_LINEAR, double_quant=True, gpus=1, nodes=1, sharding=Sharding.FSDP1,
                    offload=Offload.PARAMS, grad_accum=4,
                    engine=EngineSettings(fsdp_reshard_after_forward=True, fsdp_backward_prefetch="NONE",
                                          fsdp_use_orig_params=False),
                    loss=Loss.STANDARD, liger_kernels=False, batching=Batching.PADDED, loop=Loop.TRAINER,
                    activation_offload=ActivationOffload.NONE)),
    "axolotl LoRA 1B, sample packing and Liger": (
        ("axolotl_lora_1b_packing_liger.yaml",), None, "meta-llama/Llama-3.2-1B", ["axolotl"],
        TrainConfig(method=Method.LORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW_8BIT,
                    micro_batch=2, seq_len=2048, grad_ckpt=True, attn=Attention.FLASH, lora_r=16, lora_alpha=32,
                    lora_targets=LLAMA3_LINEARS, double_quant=True, gpus=1, nodes=1, sharding=Sharding.NONE,
                    offload=Offload.NONE, grad_accum=2, engine=EngineSettings(), loss=Loss.LIGER, liger_kernels=True,
                    batching=Batching.PACKED, loop=Loop.TRAINER, activation_offload=ActivationOffload.NONE)),
    "axolotl full fine-tune with DeepSpeed ZeRO-3": (
        ("axolotl_full_zero3.yaml", "zero3_bf16.json"), None, "meta-llama/Llama-3.1-8B", ["axolotl", "deepspeed"],
        TrainConfig(method=Method.FULL, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW, micro_batch=1,
                    seq_len=8192, grad_ckpt=True, attn=Attention.FLASH, gpus=1, nodes=1, sharding=Sharding.ZERO3,
                    offload=Offload.NONE, grad_accum=8,
                    # "auto": hidden^2, 0.9 hidden^2 and 10 hidden of Llama-3.1-8B (hidden 4096)
                    engine=EngineSettings(reduce_bucket_size=4096**2, prefetch_bucket_size=int(0.9 * 4096**2),
                                          param_persistence_threshold=40960, max_live_parameters=0,
                                          max_reuse_distance=0, overlap_comm=True, contiguous_gradients=True),
                    loss=Loss.STANDARD, liger_kernels=False, batching=Batching.PACKED, loop=Loop.TRAINER)),
    "LLaMA-Factory LoRA SFT with DeepSpeed ZeRO-2": (
        ("llamafactory_lora_sft_ds2.yaml", "ds_z2_config.json"), None, "meta-llama/Meta-Llama-3-8B-Instruct",
        ["llama-factory", "deepspeed"],
        TrainConfig(method=Method.LORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW_FUSED,
                    micro_batch=1, seq_len=2048, grad_ckpt=True, attn=Attention.SDPA, lora_r=8, lora_alpha=16,
                    lora_targets=ALL_LINEAR, gpus=1, nodes=1, sharding=Sharding.ZERO2, offload=Offload.NONE,
                    grad_accum=2,
                    engine=EngineSettings(reduce_bucket_size=500_000_000, allgather_bucket_size=500_000_000,
                                          overlap_comm=False, contiguous_gradients=True),
                    loss=Loss.STANDARD, liger_kernels=False, batching=Batching.PADDED, loop=Loop.TRAINER)),
    "LLaMA-Factory QLoRA": (
        ("llamafactory_qlora.yaml",), None, "meta-llama/Meta-Llama-3-8B-Instruct", ["llama-factory"],
        TrainConfig(method=Method.QLORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.PAGED_ADAMW_8BIT,
                    micro_batch=4, seq_len=4095, grad_ckpt=True, attn=Attention.FLASH, lora_r=16, lora_alpha=16,
                    lora_targets=("q_proj", "v_proj"), double_quant=True, gpus=1, nodes=1, sharding=Sharding.NONE,
                    grad_accum=8, loss=Loss.LIGER, liger_kernels=True, batching=Batching.PACKED,
                    loop=Loop.TRAINER)),
    "TRL SFTConfig with packing, Liger and checkpointing": (
        ("trl_sft_config.json",), "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B", ["trl"],
        TrainConfig(method=Method.LORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW_FUSED,
                    micro_batch=4, seq_len=4096, grad_ckpt=True, attn=Attention.FLASH, lora_r=32, lora_alpha=64,
                    lora_targets=ALL_LINEAR, gpus=1, nodes=1, sharding=Sharding.NONE, grad_accum=4,
                    loss=Loss.LIGER, liger_kernels=True, batching=Batching.PACKED, loop=Loop.TRAINER)),
    "TRL SFTConfig with an Accelerate FSDP YAML": (
        ("trl_sft_config.json", "accelerate_fsdp.yaml"), "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B",
        ["trl", "accelerate"],
        TrainConfig(method=Method.LORA, precision=Precision.BF16_TRUE, optimizer=Optimizer.ADAMW_FUSED,
                    micro_batch=4, seq_len=4096, grad_ckpt=True, attn=Attention.FLASH, lora_r=32, lora_alpha=64,
                    lora_targets=ALL_LINEAR, gpus=8, nodes=1, sharding=Sharding.FSDP, grad_accum=4,
                    engine=EngineSettings(fsdp_reshard_after_forward=True),
                    loss=Loss.LIGER, liger_kernels=True, batching=Batching.PACKED, loop=Loop.TRAINER)),
    "Accelerate FSDP YAML alone": (
        ("accelerate_fsdp.yaml",), "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B", ["accelerate"],
        TrainConfig(precision=Precision.BF16_MIXED, grad_ckpt=True, gpus=8, nodes=1, sharding=Sharding.FSDP,
                    engine=EngineSettings(fsdp_reshard_after_forward=True))),
    "DeepSpeed ZeRO-3 JSON with auto values": (
        ("deepspeed_zero3_auto.json",), "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B", ["deepspeed"],
        # Qwen2.5-7B: hidden 3584; DeepSpeed's own AdamW; optimizer states offloaded
        TrainConfig(optimizer=Optimizer.ADAMW, sharding=Sharding.ZERO3, offload=Offload.OPTIMIZER,
                    engine=EngineSettings(reduce_bucket_size=3584**2, prefetch_bucket_size=int(0.9 * 3584**2),
                                          param_persistence_threshold=35840, max_live_parameters=10**9,
                                          max_reuse_distance=10**9, overlap_comm=True, contiguous_gradients=True))),
}


@pytest.mark.parametrize("case", EXPECTED)
def test_each_config_maps_to_the_train_config_its_tool_runs(case):
    names, model, model_name, formats, expected = EXPECTED[case]
    cfg, files = mapped(*names, model=model)
    assert files.model == model_name
    assert [f["format"] for f in files.section["files"]] == formats
    for field in TrainConfig.__dataclass_fields__:
        assert getattr(cfg, field) == getattr(expected, field), field
    assert cfg == expected


def test_the_training_config_names_the_deepspeed_json_it_uses(tmp_path):
    """Named but not given: read from beside the config when it is there, else planned from its name."""
    cfg, files = mapped("axolotl_full_zero3.yaml")
    assert cfg.sharding is Sharding.ZERO3 and cfg.engine == EngineSettings()
    assert any("not here: planned from its name" in n for n in files.section["notes"])
    (tmp_path / "deepspeed_configs").mkdir()
    (tmp_path / "deepspeed_configs" / "zero3_bf16.json").write_text((FIX / "zero3_bf16.json").read_text())
    (tmp_path / "train.yaml").write_text((FIX / "axolotl_full_zero3.yaml").read_text())
    files = read_from(None, {"nodes": 1}, (str(tmp_path / "train.yaml"),), set())
    assert files.fallback["engine"].reduce_bucket_size == 4096**2
    assert [f["format"] for f in files.section["files"]] == ["axolotl", "deepspeed"]


def test_deepspeed_inline_in_trainer_arguments(tmp_path):
    args = {"per_device_train_batch_size": 2, "output_dir": "out", "bf16": True, "optim": "adamw_torch",
            "deepspeed": {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
                          "train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"}}}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(args))
    files = read_from("meta-llama/Llama-3.2-1B", {"nodes": 1}, (str(path),), set())
    cfg = config_from_options(files.options, **files.fallback)
    assert (cfg.sharding, cfg.offload, cfg.micro_batch, cfg.method) == (Sharding.ZERO2, Offload.OPTIMIZER, 2,
                                                                         Method.FULL)
    assert files.section["files"] == [{"path": str(path), "format": "transformers"}]
    assert files.section["mapped"]["sharding"] == [str(path), "deepspeed.zero_optimization.stage"]


# --- precision: each tool's rule ---------------------------------------------------------------------------
PRECISION_CASES = [
    ("axolotl", {"base_model": "x", "bf16": "auto"}, None),                 # open: bf16-true, fp16 on old cards
    ("axolotl", {"base_model": "x", "bfloat16": True}, Precision.BF16_TRUE),
    ("axolotl", {"base_model": "x", "fp16": True, "bf16": "auto"}, Precision.FP16_MIXED),
    ("llama-factory", {"stage": "sft", "finetuning_type": "full", "bf16": True}, Precision.BF16_MIXED),
    ("llama-factory", {"stage": "sft", "finetuning_type": "full", "bf16": True, "pure_bf16": True},
     Precision.BF16_TRUE),
    ("llama-factory", {"stage": "sft", "finetuning_type": "lora", "bf16": True}, Precision.BF16_TRUE),
    ("trl", {"dataset_text_field": "text", "bf16": True}, Precision.BF16_MIXED),          # SFTTrainer loads float32
    ("trl", {"dataset_text_field": "text", "bf16": True, "model_init_kwargs": {"dtype": "bfloat16"}},
     Precision.BF16_TRUE),
    ("trl", {"dataset_text_field": "text", "bf16": False, "fp16": False}, Precision.FP32),
    ("transformers", {"per_device_train_batch_size": 1, "bf16": True}, Precision.BF16_TRUE),
]


@pytest.mark.parametrize("tool,data,precision", PRECISION_CASES)
def test_precision_follows_each_tools_rule(tmp_path, tool, data, precision):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    m = read_files([str(path)])
    assert m.files == [(str(path), tool)]
    if precision is None:
        assert "precision" not in m.values and m.defaults["precision"][0] is Precision.BF16_TRUE
    else:
        assert m.values["precision"].value is precision


# --- keys reported ----------------------------------------------------------------------------------------------
def test_ignored_and_unknown_keys_are_reported(monkeypatch, capsys, tmp_path):
    text = (FIX / "axolotl_lora_1b_packing_liger.yaml").read_text() + "lora_droput: 0.1\nmicro_batchsize: 4\n"
    path = tmp_path / "axolotl.yaml"
    path.write_text(text)
    data = run_json(monkeypatch, capsys, "estimate", "--from", str(path))
    section = data["from"]
    assert set(section) >= {"files", "mapped", "ignored", "unknown", "notes"}
    assert section["unknown"] == [[str(path), "lora_droput"], [str(path), "micro_batchsize"]]
    ignored = {key for _, key in section["ignored"]}
    assert {"learning_rate", "datasets", "wandb_project", "num_epochs", "lr_scheduler"} <= ignored
    assert section["mapped"]["micro_batch"] == [str(path), "micro_batch_size"]
    assert section["mapped"]["loss"] == [str(path), "liger_fused_linear_cross_entropy"]
    code, out, err = run(monkeypatch, capsys, "estimate", "--from", str(path))
    assert code == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith(f"read from {path} (axolotl): mapped ") and first.endswith(
        "unknown 2: lora_droput, micro_batchsize")


def test_keys_that_change_memory_unmodelled_are_named(tmp_path):
    path = tmp_path / "lf.yaml"
    path.write_text("model_name_or_path: meta-llama/Llama-3.2-1B\nstage: dpo\nfinetuning_type: lora\n"
                    "use_dora: true\ncutoff_len: 1024\n")
    m = read_files([str(path)])
    assert set(m.unmodelled) == {"stage", "use_dora"}
    assert any("stage" in n and "does not model" in n for n in m.notes)


# --- contradictions are errors naming both keys and files --------------------------------------------------
def write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return str(path)


def test_bf16_and_fp16_both_on_is_an_error(monkeypatch, capsys, tmp_path):
    path = write(tmp_path, "a.yaml", "base_model: meta-llama/Llama-3.2-1B\nbf16: true\nfp16: true\n")
    code, out, err = run(monkeypatch, capsys, "estimate", "--from", path, "--json")
    assert code == 2 and err.count("\n") == 1
    assert f"bf16 in {path}" in err and f"fp16 in {path}" in err
    assert json.loads(out) == {"error": err.strip().removeprefix("error: ")}


def test_micro_batch_in_two_files_is_an_error_unless_the_command_line_settles_it(monkeypatch, capsys, tmp_path):
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}})
    args = ["estimate", "Qwen/Qwen2.5-1.5B", "--from", fixture("trl_sft_config.json"), "--from", ds]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert "per_device_train_batch_size in" in err and "says 4" in err
    assert f"train_micro_batch_size_per_gpu in {ds} says 2" in err and "--micro-batch" in err
    data = run_json(monkeypatch, capsys, *args, "--micro-batch", "2")
    assert data["config"]["micro_batch"] == 2
    assert any(n.startswith("--micro-batch 2 overrides") for n in data["from"]["notes"])


def test_zero3_against_fsdp_is_an_error(monkeypatch, capsys, tmp_path):
    train = write(tmp_path, "args.json", {"per_device_train_batch_size": 1, "output_dir": "o", "fsdp": True,
                                          "fsdp_config": {"version": 2}})
    ds = write(tmp_path, "ds.json", {"zero_optimization": {"stage": 3}})
    code, _, err = run(monkeypatch, capsys, "estimate", "meta-llama/Llama-3.2-1B", "--from", train, "--from", ds)
    assert code == 2
    assert f"fsdp_config.version in {train} says fsdp" in err and f"zero_optimization.stage in {ds} says zero3" in err


def test_precision_of_launcher_and_training_config_must_agree(monkeypatch, capsys, tmp_path):
    acc = write(tmp_path, "acc.yaml", "distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: fp16\n")
    code, _, err = run(monkeypatch, capsys, "estimate", "--from", fixture("axolotl_lora_1b_packing_liger.yaml"),
                       "--from", acc)
    assert code == 2 and "bf16 in" in err and f"mixed_precision in {acc} says fp16-mixed" in err
    acc = write(tmp_path, "acc2.yaml", "distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: bf16\n")
    data = run_json(monkeypatch, capsys, "estimate", "--from", fixture("axolotl_lora_1b_packing_liger.yaml"),
                    "--from", acc)
    assert data["config"]["precision"] == "bf16-true" and data["config"]["gpus"] == 2
    assert data["config"]["sharding"] == "ddp"


def test_a_value_fitplan_cannot_model_is_an_error_unless_overridden(monkeypatch, capsys, tmp_path):
    path = write(tmp_path, "a.yaml", "base_model: meta-llama/Llama-3.2-1B\noptimizer: lion_8bit\n")
    code, _, err = run(monkeypatch, capsys, "estimate", "--from", path)
    assert code == 2 and "lion_8bit" in err and "--optimizer" in err
    data = run_json(monkeypatch, capsys, "estimate", "--from", path, "--optimizer", "adamw")
    assert data["config"]["optimizer"] == "adamw"


@pytest.mark.parametrize("text,says", [
    ("- a\n- b\n", "not a mapping of settings"),
    ("base_model: [\n", "is not valid YAML"),
    ("{\"a\": NaN}", "JSON cannot carry"),
    ("base_model: meta-llama/Llama-3.2-1B\nmicro_batch_size: lots\n", "micro_batch_size in"),
    ("base_model: meta-llama/Llama-3.2-1B\nfsdp_config: 5\nadapter: lora\n", "fsdp_config in"),
    ("base_model: unknown-org/unknown-model\nadapter: lora\n", "base_model in"),
    ("learning_rate: 0.1\nseed: 3\n", "Name the model"),
    ("nothing_any_tool_reads: 1\n", "has no keys of axolotl"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
    ("!!python/object/apply:os.system ['true']\n", "is not valid YAML"),
])
def test_bad_files_end_in_one_sentence(monkeypatch, capsys, tmp_path, text, says):
    path = write(tmp_path, "bad.yaml", text)
    code, out, err = run(monkeypatch, capsys, "estimate", "--from", path, "--json")
    assert code == 2 and "Traceback" not in out + err and err.count("\n") == 1, err
    assert says in err
    json.loads(out)


def test_an_unknown_hub_id_names_it(monkeypatch, capsys, tmp_path):
    path = write(tmp_path, "a.yaml", "base_model: someone/no-such-model-7b\nadapter: lora\n")
    code, _, err = run(monkeypatch, capsys, "plan", "--from", path, "--gpu", "RTX 4090")
    assert code == 2 and f"base_model in {path}" in err and "someone/no-such-model-7b" in err


# --- the command line overrides the files; plan keeps what the files set ----------------------------------
def test_command_line_overrides_the_files():
    cfg, files = mapped("axolotl_lora_1b_packing_liger.yaml", micro_batch=8, seq_len=4096, grad_ckpt=False,
                        method="qlora")
    assert (cfg.micro_batch, cfg.seq_len, cfg.grad_ckpt, cfg.method) == (8, 4096, False, Method.QLORA)
    notes = files.section["notes"]
    assert any(n.startswith("--micro-batch 8 overrides micro_batch_size in") and n.endswith("(2).") for n in notes)
    assert any(n.startswith("--no-grad-ckpt overrides gradient_checkpointing") for n in notes)
    assert cfg.lora_r == 16 and cfg.optimizer is Optimizer.ADAMW_8BIT   # the rest still from the file


def test_model_on_the_command_line_overrides_the_files():
    cfg, files = mapped("axolotl_lora_1b_packing_liger.yaml", model="meta-llama/Llama-3.2-3B")
    assert files.model == "meta-llama/Llama-3.2-3B"
    assert any("overrides base_model" in n for n in files.section["notes"])


def test_plan_varies_only_what_the_files_leave_open(monkeypatch, capsys):
    data = run_json(monkeypatch, capsys, "plan", "--from", fixture("axolotl_lora_1b_packing_liger.yaml"),
                    "--gpu", "RTX 4090x2")
    assert data["recommended"] is not None and data["plans"]
    for plan in data["plans"]:
        assert (plan["method"], plan["precision"], plan["micro_batch"], plan["seq_len"], plan["grad_ckpt"]) == (
            "lora", "bf16-true", 2, 2048, True)
        assert plan["micro_batch"] * plan["grad_accum"] * plan["gpus"] == 2 * 2 * 2   # accumulation 2 on 2 GPUs
    assert {p["sharding"] for p in data["plans"]} > {"ddp"}   # the engine is open: searched
    assert data["from"]["files"] == [{"path": fixture("axolotl_lora_1b_packing_liger.yaml"), "format": "axolotl"}]


def test_plan_with_a_command_line_option(monkeypatch, capsys):
    data = run_json(monkeypatch, capsys, "plan", "--from", fixture("llamafactory_qlora.yaml"), "--gpu", "RTX 4090",
                    "--micro-batch", "1", "--seq-len", "1024")
    assert {(p["method"], p["micro_batch"], p["seq_len"]) for p in data["plans"]} == {("qlora", 1, 1024)}


# --- estimate --from is estimate with the options spelled out ----------------------------------------------
@pytest.mark.parametrize("case", [c for c in EXPECTED if not c.startswith("axolotl QLoRA FSDP")])
def test_estimate_from_is_estimate_of_the_mapped_config(monkeypatch, capsys, case):
    names, model, model_name, _, expected = EXPECTED[case]
    args = ["estimate", *([model] if model else []), *sum((["--from", fixture(n)] for n in names), []),
            "--gpu", "h100x8" if expected.gpus == 8 else "h100"]
    data = run_json(monkeypatch, capsys, *args)
    data.pop("from")
    assert data == estimate_json(model_name, expected.with_(gpus=expected.gpus), hardware_from_catalog(
        args[-1], 1, expected.gpus), fixed=frozenset(data["config"]) | {"precision"})


def test_estimate_from_equals_estimate_with_the_options_spelled_out(monkeypatch, capsys):
    from_file = run_json(monkeypatch, capsys, "estimate", "meta-llama/Llama-3.2-1B", "--from",
                         fixture("accelerate_fsdp.yaml"), "--gpu", "h100x8")
    spelled = run_json(monkeypatch, capsys, "estimate", "meta-llama/Llama-3.2-1B", "--gpus", "8", "--sharding",
                       "fsdp", "--grad-ckpt", "--precision", "bf16-mixed", "--gpu", "h100x8")
    assert from_file.pop("from")["files"] == [{"path": fixture("accelerate_fsdp.yaml"), "format": "accelerate"}]
    assert from_file == spelled


def test_qlora_under_fsdp_says_what_the_launcher_cannot_run(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "estimate", "--from", fixture("axolotl_qlora_fsdp_70b.yaml"),
                       "--gpu", "h100x8")
    assert code == 2 and "unsupported: QLoRA" in err
    data = run_json(monkeypatch, capsys, "estimate", "--from", fixture("axolotl_qlora_fsdp_70b.yaml"), "--gpu",
                    "h100x8", "--sharding", "zero2", "--offload", "optimizer")
    assert data["config"]["method"] == "qlora" and data["model"] == "meta-llama/Meta-Llama-3-70B"


def test_a_count_in_gpu_overrides_the_files_gpu_count(monkeypatch, capsys):
    data = run_json(monkeypatch, capsys, "estimate", "meta-llama/Llama-3.2-1B", "--from",
                    fixture("accelerate_fsdp.yaml"), "--gpu", "h100x4")
    assert data["config"]["gpus"] == 4 and data["gpu"]["count"] == 4
    assert any(n.startswith('--gpu "h100x4" overrides num_processes') for n in data["from"]["notes"])
    plan = run_json(monkeypatch, capsys, "plan", "meta-llama/Llama-3.2-1B", "--from", fixture("accelerate_fsdp.yaml"),
                    "--gpu", "h100x8")
    assert {(p["gpus"], p["sharding"], p["precision"]) for p in plan["plans"]} == {(8, "fsdp", "bf16-mixed")}
