"""Real training runs of a tiny shrunk Llama on this CPU: LoRA through the CLI, two-process data
parallel, DeepSpeed ZeRO-2, QLoRA with real bitsandbytes, and the recipe's Ctrl-C and OOM endings."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.commands.config import chosen_plan
from launch import planfile, runner
from launch.emit import MultiNode

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
SEQ_LEN = "32"
TEXTS = ["the quick brown fox jumps over the lazy dog", "a memory planner for fine tuning language models",
         "adapters train while the base model stays frozen", "gradient checkpointing trades compute for memory"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """Llama-3.1-8B shrunk to 2 layers x 256 wide, 1000 tokens, with an offline word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from profiles.hf_config import hf_config_dict
    from profiles.models import from_name
    folder = tmp_path_factory.mktemp("tiny-llama")
    spec = from_name("meta-llama/Llama-3.1-8B", n_layer=2, hidden=256, intermediate=512, n_head=4,
                               n_kv_head=2, head_dim=64, vocab=1000)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf_config_dict(spec))).save_pretrained(folder)
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", pad_token="<pad>",
                            eos_token="<eos>").save_pretrained(folder)
    return folder


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def launch(model: Path, out: Path, *args: str, env: dict | None = None) -> dict:
    run([FITPLAN, "launch", str(model), "--seq-len", SEQ_LEN, "--out", str(out), *args], env)
    return json.loads((out / "run_report.json").read_text())


def adapter_keys(out: Path) -> list[str]:
    from safetensors import safe_open
    with safe_open(out / "adapter" / "adapter_model.safetensors", "pt") as f:
        return list(f.keys())


def check_report(report: dict, steps: int, ranks: int) -> None:
    assert report["status"] == "ok" and report["steps"] == steps and len(report["losses"]) == steps
    assert all(math.isfinite(x) and 0 < x < 20 for x in report["losses"])
    measured = report["measured"]
    assert measured["device"] == "cpu" and measured["after_steps"] == min(steps, 3)
    assert len(measured["per_rank"]) == ranks and measured["rss_peak_bytes"] > 0
    assert {"torch", "transformers", "peft", "bitsandbytes", "accelerate"} <= set(report["versions"])
    assert "per_gpu" in report["predicted"] and report["date"]


def test_lora_run_through_the_cli(tiny_llama, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4))
    out = tmp_path / "run"
    report = launch(tiny_llama, out, "--steps", "3", "--micro-batch", "2", "--data", str(data),
                    "--lora-targets", "attn,mlp")
    check_report(report, steps=3, ranks=1)
    assert report["tokens"] == 3 * 2 * int(SEQ_LEN)
    keys = adapter_keys(out)
    for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert sum(module in k for k in keys) == 2 * 2  # lora_A and lora_B in each of 2 layers
    losses = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in losses] == [1, 2, 3]


def test_two_process_data_parallel(tiny_llama, tmp_path):
    out = tmp_path / "run"
    report = launch(tiny_llama, out, "--gpus", "2", "--sharding", "ddp", "--steps", "2", "--micro-batch", "2",
                    "--global-batch", "8", env={"ACCELERATE_USE_CPU": "true"})
    check_report(report, steps=2, ranks=2)
    assert report["tokens"] == 2 * 8 * int(SEQ_LEN)  # both ranks' tokens: global batch 8 per step
    assert adapter_keys(out)


def test_deepspeed_zero2_two_processes(tiny_llama, tmp_path):
    out = tmp_path / "run"
    report = launch(tiny_llama, out, "--gpus", "2", "--sharding", "zero2", "--steps", "2", "--micro-batch", "2",
                    "--global-batch", "8")
    check_report(report, steps=2, ranks=2)
    assert json.loads((out / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 2
    assert report["param_bytes_by_dtype"].keys() == {"bfloat16"}  # DeepSpeed's bf16 mode casts the module
    assert adapter_keys(out)


def test_qlora_with_real_bitsandbytes_as_plain_python(tiny_llama, tmp_path):
    out = tmp_path / "run"
    run([FITPLAN, "config", str(tiny_llama), "--method", "qlora", "--seq-len", SEQ_LEN, "--micro-batch", "2",
         "--out", str(out)])
    run([sys.executable, "-m", "launch.recipe", "--plan", str(out / "plan.json"), "--steps", "2"])
    report = json.loads((out / "run_report.json").read_text())
    check_report(report, steps=2, ranks=1)
    assert report["config"]["method"] == "qlora"
    assert report["param_bytes_by_dtype"]["uint8"] == 2 * 589824 // 2  # NF4: half a byte per linear weight
    assert adapter_keys(out)


def test_ctrl_c_through_the_cli_saves_and_exits_130(tiny_llama, tmp_path):
    """Ctrl-C as a terminal sends it: SIGINT to fitplan's process group, once training is under way."""
    import signal
    import time
    out = tmp_path / "run"
    cmd = [FITPLAN, "launch", str(tiny_llama), "--seq-len", SEQ_LEN, "--steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    losses = out / "losses.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if losses.exists() and len(losses.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"] == "interrupted" and report["steps"] >= 5
    assert adapter_keys(out) and "interrupted; what was trained is saved" in stderr


# -- the recipe's endings, in this process --------------------------------------------------------

@pytest.fixture
def recipe_plan(tiny_llama, tmp_path):
    from accelerate.state import AcceleratorState
    plan, _ = chosen_plan(str(tiny_llama), None, None, None, False, {"seq_len": 16, "micro_batch": 2})
    runner.write_run_folder(tmp_path, plan, MultiNode(), force=False)
    yield tmp_path / planfile.PLAN_NAME
    AcceleratorState._reset_state(True)


def test_ctrl_c_saves_the_adapter_and_exits_130(recipe_plan, monkeypatch):
    from launch import recipe
    step = recipe.one_step

    def interrupted_second_step(run, *args):
        if run.step == 1:
            raise KeyboardInterrupt
        return step(run, *args)
    monkeypatch.setattr(recipe, "one_step", interrupted_second_step)
    assert recipe.main(["--plan", str(recipe_plan), "--steps", "5"]) == recipe.INTERRUPTED_EXIT
    report = json.loads((recipe_plan.parent / "run_report.json").read_text())
    assert report["status"] == "interrupted" and report["steps"] == 1
    assert (recipe_plan.parent / "adapter" / "adapter_model.safetensors").exists()


def _torch_oom():
    import torch
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _chained(cause: BaseException) -> Exception:
    err = RuntimeError("the engine failed to set up its buffers")
    err.__cause__ = cause
    return err


OOMS = {  # the ways a GPU OOM reaches the recipe
    "torch": _torch_oom,
    "cuda runtime": lambda: RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later"),
    "cublas": lambda: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "raised from one": lambda: _chained(RuntimeError("CUDA error: out of memory")),
}


@pytest.mark.parametrize("oom", OOMS.values(), ids=OOMS.keys())
def test_oom_in_first_steps_reports_and_exits_3(recipe_plan, monkeypatch, oom):
    from launch import recipe

    def out_of_memory(*args):
        raise oom()
    monkeypatch.setattr(recipe, "one_step", out_of_memory)
    monkeypatch.delenv("FITPLAN_OOM_FILE", raising=False)
    assert recipe.main(["--plan", str(recipe_plan), "--steps", "5"]) == runner.OOM_EXIT
    report = json.loads((recipe_plan.parent / "run_report.json").read_text())
    assert report["status"] == "oom" and report["oom_step"] == 1 and report["phase"] == "training"
    assert report["error"] == str(oom()).splitlines()[0]
    assert (recipe_plan.parent / runner.OOM_SIGNAL).exists()


def test_a_crash_that_mentions_memory_elsewhere_is_not_an_oom():
    from launch.recipe import is_out_of_memory
    assert not is_out_of_memory(RuntimeError("expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("memory-efficient attention needs a mask"))


def test_padded_texts_run_their_longest_batch_first(tiny_llama, tmp_path):
    from launch import recipe
    data = tmp_path / "data.txt"
    data.write_text("short text\nmemory\nadapters train\nthe quick brown fox jumps over the lazy dog\n")
    plan, _ = chosen_plan(str(tiny_llama), None, None, None, False, {"seq_len": 8, "micro_batch": 2})
    args = recipe.parse_args(["--plan", "unused", "--data", str(data), "--no-pack", "--steps", "2"])
    steps, batches = recipe.make_batches(recipe.Run(args, plan, planfile.plan_config(plan), tmp_path), 1000)
    first, second = list(batches)
    assert steps == 2 and first["input_ids"].shape == (2, 8)
    assert first["tokens"] == 2 + 8 and second["tokens"] == 2 + 1  # the long line, cut to seq_len 8, comes first
    assert first["labels"][0, 2:].eq(-100).all() and first["attention_mask"][0, 2:].eq(0).all()
