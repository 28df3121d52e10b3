"""Whatever a user types or points at, the CLI answers with output or one sentence: no traceback, exit 0, 1
(plan: nothing fits) or 2, and valid JSON on stdout with --json. Generated options and config.json files."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from hypothesis import event, given
from hypothesis import strategies as st

from cli.main import main
from profiles.hf_config import hf_config_dict
from profiles.models import from_name

# Mostly plausible values, so the generated runs reach the planner; sometimes hostile ones.
NUMBERS = st.one_of(st.integers(1, 64), st.integers(1, 64), st.integers(-3, 70000),
                    st.sampled_from(["nan", "inf", "-inf", "1e45", "9" * 400, "0", "-1", "2.5", "20M", "1e9", "",
                                     " ", "abc", "0x10", "0.3", "0.95"]))
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
CHOICES = {
    "--method": ["full", "lora", "qlora", "auto", "LoRA", "sgd"], "--precision": ["bf16-true", "fp16-mixed", "fp8"],
    "--optimizer": ["adamw", "adamw8bit", "paged_adamw8bit", "sgd", "adafactor", "lion"],
    "--sharding": ["none", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp1", "tp"],
    "--offload": ["none", "optimizer", "params", "disk"], "--attn": ["sdpa", "flash", "eager", "xformers"],
    "--gpu": ["RTX 4090", "h100x8", "h100x-1", "h100x1.5", "t4", "v100-16gb", "a100-80gbx99999", "gtx 9999",
              "8xA100 40GB", " ".join(["h100"] * 20), "rtx3060", "a10g"],
    "--lora-targets": ["q,v", "all-linear", "mlp", "nope", ",,,", "c_attn", "experts.gate_up_proj"],
    "--loss": ["standard", "liger", "cce", "fused"], "--loop": ["trainer", "plain", "eager"],
    "--activation-offload": ["none", "all", "checkpoints", "disk"],
}
TRAIN_NUMERIC = ["--micro-batch", "--seq-len", "--lora-r", "--lora-alpha", "--gpus", "--nodes", "--margin"]
TRAIN_FLAGS = ["--grad-ckpt", "--no-grad-ckpt", "--no-double-quant"]
PER_COMMAND = {   # numeric options, choices and flags each command takes beyond the training ones
    "plan": (["--tokens", "--epochs", "--global-batch"], {"--prefer": ["speed", "memory", "quality", "cheap"],
                                                          "--interconnect": ["nvlink", "pcie,ethernet", "ib,ib", "", "x"]}),
    "config": (["--global-batch", "--machine-rank", "--main-process-port"], {}),
    "launch": (["--global-batch", "--steps", "--lr", "--oom-retries"], {}),
    "estimate": (["--grad-accum"], {}),
}
MODELS = ["meta-llama/Llama-3.2-1B", "gpt2", "Qwen3-30B-A3B", "mistralai/Mixtral-8x7B-v0.1", "Llama-3.1-8B",
          "Qwen/Qwen2.5-0.5B", "{config}", "{config}", "{config}"]
BAD_MODELS = ["not-a-model", "x" * 300, "./missing/config.json", "/dev/null", "/proc/self/status", "", "\x01"]
CARDS = ["RTX 4090", "h100x8", "t4", "v100-16gb", "8xA100 40GB", "rtx3060", "a10g", "a100-80gb"]   # most runs get a card


def option_lists(command: str):
    numeric_names, extra_choices = PER_COMMAND[command]
    choices = {**CHOICES, **extra_choices}
    choice = st.sampled_from(sorted(choices)).flatmap(lambda flag: st.sampled_from(choices[flag]).map(lambda v: [flag, v]))
    numeric = st.tuples(st.sampled_from(TRAIN_NUMERIC + numeric_names), NUMBERS).map(lambda pair: [pair[0], str(pair[1])])
    flag = st.sampled_from(TRAIN_FLAGS).map(lambda f: [f])
    junk = st.tuples(st.sampled_from(["--method", "--gpu", "--lora-targets", "--seq-len"]), TEXT).map(list)
    part = st.one_of(choice, choice, numeric, numeric, flag, junk)
    return st.lists(part, max_size=5).map(lambda parts: sum(parts, []))


PLAUSIBLE = {"--micro-batch": [1, 2, 4, 8], "--seq-len": [256, 1024, 2048, 4096, 8192], "--lora-r": [4, 16, 64],
             "--lora-alpha": [8, 32], "--gpus": [1, 2, 8], "--nodes": [1, 2], "--margin": ["0.05", "0.2"],
             "--tokens": ["20M", "1e9", "5000"], "--epochs": ["0.5", "3"], "--global-batch": [8, 64], "--grad-accum": [1, 4],
             "--steps": [10], "--lr": ["2e-4"], "--oom-retries": [0, 3], "--machine-rank": [0], "--main-process-port": [29500]}


def plausible_options(command: str):
    """Values the command accepts (its own choices, sensible numbers), so the run reaches the planner."""
    from cli.main import COMMANDS
    import importlib
    params = importlib.import_module(COMMANDS[command]).command.params
    choices = {p.opts[0]: list(p.type.choices) for p in params if hasattr(p.type, "choices") and p.opts[0] != "--method"}
    choices["--method"] = ["full", "lora", "qlora", "auto"]
    numbers = {flag: values for flag, values in PLAUSIBLE.items() if any(flag in p.opts for p in params)}
    pool = {**choices, **numbers, "--gpu": CARDS}
    part = st.sampled_from(sorted(pool)).flatmap(lambda f: st.sampled_from(pool[f]).map(lambda v: [f, str(v)]))
    flag = st.sampled_from(TRAIN_FLAGS).map(lambda f: [f])
    return st.lists(st.one_of(part, part, part, flag), max_size=4).map(lambda parts: sum(parts, []))


def fits_options():
    gpu = st.sampled_from(CHOICES["--gpu"]).map(lambda g: ["--gpu", g])
    rest = st.lists(st.one_of(st.tuples(st.sampled_from(["--seq-len", "--margin"]), NUMBERS).map(
        lambda p: [p[0], str(p[1])]), st.sampled_from(["llama-3", "gemma-2", "nope"]).map(lambda f: ["--family", f])),
        max_size=2).map(lambda parts: sum(parts, []))
    return st.tuples(gpu, rest).map(lambda pair: pair[0] + ["--family", "llama-3"] + pair[1])


def config_files():
    """config.json dicts: a real one with keys replaced by values of the wrong type or size, or garbage."""
    base = hf_config_dict(from_name("Llama-3.2-1B", n_layer=2))
    wrong = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**7), st.floats(allow_nan=False),
                      st.sampled_from([4.0, 0, -1, 10**30, [], {}, "4096", [1, 2], {"a": 1}, 10**9]), TEXT)
    mutated = st.dictionaries(st.sampled_from(sorted(base)), wrong, max_size=4).map(lambda d: {**base, **d})
    text_part = st.sampled_from([{"model_type": "gemma3", "text_config": "oops"}, {"model_type": ["llama"]},
                                 {"model_type": "bloom"}, [], "config", 5])
    return st.one_of(mutated, text_part)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    old = sys.argv
    sys.argv = ["fitplan", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def invocations():
    """Mostly a real model on a real card, so most runs reach the planner; sometimes anything."""
    model = st.one_of(st.sampled_from(MODELS), st.sampled_from(MODELS), st.sampled_from(MODELS), st.sampled_from(BAD_MODELS))
    gpu = st.one_of(*[st.sampled_from(CARDS).map(lambda g: ["--gpu", g])] * 4, st.just([]),
                    st.sampled_from(CHOICES["--gpu"]).map(lambda g: ["--gpu", g]))
    trained = st.sampled_from(["estimate", "plan", "config", "launch"]).flatmap(lambda command: st.tuples(
        st.just(command), model, st.one_of(plausible_options(command), option_lists(command)), gpu))
    fits = st.tuples(st.just("fits"), st.just(None), fits_options(), st.just([]))
    return st.one_of(trained, trained, trained, fits)


@given(invocation=invocations(), config=config_files(), as_json=st.booleans())
def test_any_invocation_ends_in_output_or_one_sentence(invocation, config, as_json):
    command, model, options, gpu = invocation
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        model_arg = [str(path) if model == "{config}" else model] if model else []
        argv = [command, *model_arg, *options, *gpu]
        if command in ("config", "launch"):
            argv += ["--out", str(Path(folder) / "run")] + (["--dry-run"] if command == "launch" else [])
        code, out, err = run(argv + (["--json"] if as_json else []))
        written = sorted(p.name for p in (Path(folder) / "run").glob("*"))
    event(f"{command} exit {code}")   # --hypothesis-show-statistics: how many runs reached an answer
    assert code in (0, 1, 2), (argv, code, err)
    assert written == [] or (command == "config" and code == 0 and "plan.json" in written), (argv, written)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    if as_json and (out or code == 2):
        json.loads(out)


def mutated(base: dict, depth: int = 2):
    """`base` with some values (at any depth up to `depth`) replaced by wrong ones, or removed."""
    wrong = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20), st.floats(allow_nan=False), TEXT,
                      st.sampled_from([[], {}, [1], {"a": 1}, "x" * 500]))
    keys = sorted(base)
    change = st.dictionaries(st.sampled_from(keys), st.one_of(wrong, st.just("<drop>")), max_size=3)
    nested = [key for key in keys if isinstance(base[key], dict)] if depth > 1 else []

    def apply(changes, inner):
        out = {**base, **inner}
        out.update({k: v for k, v in changes.items() if v != "<drop>"})
        return {k: v for k, v in out.items() if changes.get(k) != "<drop>"}
    inner = st.fixed_dictionaries({}, optional={key: mutated(base[key], depth - 1) for key in nested})
    return st.tuples(change, inner).map(lambda pair: apply(*pair))


def a_plan() -> dict:
    from launch import planfile
    from planner.config import TrainConfig
    return planfile.build_plan("meta-llama/Llama-3.2-1B", {"kind": "catalog", "path": None},
                               TrainConfig(micro_batch=2, grad_accum=2))


@given(plan=mutated(a_plan()), as_json=st.booleans())
def test_any_plan_file_is_launched_or_refused(plan, as_json):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plan.json"
        path.write_text(json.dumps(plan))
        code, out, err = run(["launch", "--plan", str(path), "--dry-run"] + (["--json"] if as_json else []))
    assert code in (0, 2) and "Traceback" not in out + err, err
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err


@given(report=mutated(__import__("test_calibrate").run_report(), depth=3))
def test_any_run_report_is_calibrated_or_refused(report):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run_report.json"
        path.write_text(json.dumps(report))
        os.environ["FITPLAN_CALIBRATION"] = str(Path(folder) / "profile.json")
        try:
            code, out, err = run(["calibrate", str(path), "--dry-run", "--json"])
        finally:
            del os.environ["FITPLAN_CALIBRATION"]
    assert code in (0, 2) and "Traceback" not in out + err, err
    json.loads(out)


# --- --from FILE: training configs of the tools, mutated or made up ---------------------------------------------
FROM_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "from").iterdir())
FROM_KEYS = ["base_model", "adapter", "load_in_4bit", "load_in_8bit", "micro_batch_size", "gradient_accumulation_steps",
             "batch_size", "sequence_len", "bf16", "fp16", "bfloat16", "optimizer", "optim", "gradient_checkpointing",
             "activation_offloading", "sample_packing", "plugins", "liger_fused_linear_cross_entropy", "lora_r",
             "lora_target_modules", "lora_target_linear", "deepspeed", "fsdp", "fsdp_config", "fsdp_version",
             "model_name_or_path", "stage", "finetuning_type", "quantization_bit", "cutoff_len", "lora_target",
             "flash_attn", "per_device_train_batch_size", "packing", "max_length", "peft_config", "model_init_kwargs",
             "use_peft", "dataset_text_field", "distributed_type", "num_processes", "num_machines", "mixed_precision",
             "deepspeed_config", "zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size"]
FROM_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 10**6), st.floats(allow_nan=True), TEXT,
    st.sampled_from(["auto", "true", "cpu", "nvme", "FSDP", "DEEPSPEED", "MULTI_GPU", "qlora", "lora", "full", "all",
                     "full_shard auto_wrap offload", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B", "fa2",
                     "adamw_torch_fused", "paged_adamw_8bit", "lion_8bit", "bfloat16", "zero3.json", "/dev/zero",
                     "axolotl.integrations.liger.LigerPlugin", [], {}, ["q_proj", "lm_head"], {"stage": 3},
                     {"version": 2, "offload_params": True}, {"r": 4, "target_modules": "all-linear"},
                     {"zero_stage": 3, "offload_param_device": "cpu"}, {"stage": 9}]))


def _fixture_data(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text())


def from_documents():
    """A fixture with values replaced or dropped at any depth; the tools' keys with made-up values; or text."""
    fixtures = st.sampled_from(FROM_FIXTURES).flatmap(lambda p: mutated(_fixture_data(p), depth=3))
    made_up = st.dictionaries(st.sampled_from(FROM_KEYS), FROM_VALUES, max_size=8)
    text = st.one_of(TEXT, st.sampled_from(["- a\n- b\n", "a: &x [*x]\n", "a: b: c\n", "{", "[" * 300, "\x00",
                                            "base_model: !!binary aGk=\n", "? [a]\n: b\n", "1: 2\n", "",
                                            "micro_batch_size: " + "9" * 5000 + "\n", "warmup: 2001-02-30\n"]))
    return st.one_of(fixtures, fixtures, made_up, text)


def _write_document(folder: Path, doc, as_json: bool) -> Path:
    import yaml
    path = folder / ("train.json" if as_json else "train.yaml")
    if isinstance(doc, str):
        path.write_text(doc)
    else:
        path.write_text(json.dumps(doc) if as_json else yaml.safe_dump(doc))
    return path


@given(doc=from_documents(), as_json_file=st.booleans(), command=st.sampled_from(["estimate", "estimate", "plan"]),
       model=st.sampled_from([None, None, "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B", "nope/nope"]),
       second=st.sampled_from([None, None, "accelerate_fsdp.yaml", "zero3_bf16.json", "deepspeed_zero3_auto.json",
                               "trl_sft_config.json"]),
       options=option_lists("estimate"), as_json=st.booleans())
def test_any_from_file_ends_in_output_or_one_sentence(doc, as_json_file, command, model, second, options, as_json):
    with tempfile.TemporaryDirectory() as folder:
        path = _write_document(Path(folder), doc, as_json_file)
        extra = ["--from", str(Path(__file__).parent / "fixtures" / "from" / second)] if second else []
        argv = [command, *([model] if model else []), "--from", str(path), *extra, *options]
        if command == "plan" and "--gpu" not in options:
            argv += ["--gpu", "RTX 4090"]
        code, out, err = run(argv + (["--json"] if as_json else []))
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in out + err, err
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    if as_json and (out or code == 2):
        json.loads(out)
