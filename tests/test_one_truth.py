"""One definition of "fits", one rule for what can run, and answers that agree with themselves, in every
command: estimate, plan, fits, config and launch."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from profiles.gpus import CATALOG, find_gpu

FITPLAN = str(Path(sys.executable).with_name("fitplan"))


def fitplan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FITPLAN, *args], capture_output=True, text=True, timeout=120)


def run(*args: str, status: int = 0) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == status, result.output
    return json.loads(result.stdout)


def test_estimate_and_plan_use_the_same_margin():
    """A configuration between the usable memory and the card's size fits neither in plan nor in estimate."""
    card = find_gpu("a100-80gb")[0]
    usable = int(0.9 * card.memory_bytes)
    args = ["Llama-3.1-8B", "--method", "lora", "--gpu", "a100-80gb", "--seq-len", "4096"]
    for batch in range(1, 64):
        estimate = run("estimate", *args, "--micro-batch", str(batch))
        if estimate["per_gpu"]["total_bytes"] > usable:
            break
    assert usable < estimate["per_gpu"]["total_bytes"] and estimate["fits"] is False
    plan = run("plan", *args, "--micro-batch", str(batch), "--no-grad-ckpt", status=1)
    assert plan["recommended"] is None and plan["nothing_fits"]["usable_bytes"] == estimate["usable_bytes"] == usable
    fitting = run("estimate", *args, "--micro-batch", str(batch - 1))
    assert fitting["fits"] is True


def test_a_count_in_gpu_is_the_number_of_gpus_everywhere():
    estimate = run("estimate", "Llama-3.1-8B", "--gpu", "h100x8", "--sharding", "zero3")
    assert estimate["config"]["gpus"] == 8 and estimate["gpu"]["count"] == 8
    unsharded = run("estimate", "Llama-3.1-8B", "--gpu", "h100x8")
    assert unsharded["config"]["sharding"] == "ddp"   # several GPUs without sharding run as DDP
    plan = run("plan", "Llama-3.1-8B", "--gpu", "h100x8")
    assert max(p["gpus"] for p in plan["plans"]) == 8


def test_config_fills_unset_options_by_the_plan_search(tmp_path):
    plan = run("plan", "Llama-3.2-1B", "--method", "lora", "--gpu", "RTX 4090")
    best = plan["plans"][plan["recommended"]]
    written = run("config", "Llama-3.2-1B", "--method", "lora", "--gpu", "RTX 4090", "--out", str(tmp_path / "a"))
    config = written["plan"]["config"]
    assert (config["micro_batch"], config["grad_ckpt"], config["sharding"]) == \
        (best["micro_batch"], best["grad_ckpt"], best["sharding"])
    assert written["plan"]["per_gpu"]["total_bytes"] == best["per_gpu"]["total_bytes"]


def test_config_writes_only_what_fits_or_refuses_with_how_far_over(tmp_path):
    """70B full fine-tuning with ZeRO-3 on 8 H100s: the search adds what makes it fit (offload), or refuses."""
    written = run("config", "meta-llama/Llama-2-70b-hf", "--gpu", "h100x8", "--method", "full", "--sharding", "zero3",
                  "--out", str(tmp_path / "a"))
    plan = written["plan"]
    assert plan["per_gpu"]["total_bytes"] <= 0.9 * find_gpu("h100")[0].memory_bytes
    assert plan["config"]["offload"] != "none" or plan["config"]["grad_ckpt"]
    refused = fitplan("config", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--method", "full",
                      "--out", str(tmp_path / "b"))
    assert refused.returncode == 2 and "no plan fits on RTX 4090" in refused.stderr and "GiB over); nearest way out: " in refused.stderr
    assert not (tmp_path / "b").exists()
    forced = fitplan("config", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--method", "full",
                     "--out", str(tmp_path / "b"), "--force")
    assert forced.returncode == 0 and "Written anyway (forced)" in forced.stderr
    assert (tmp_path / "b" / "plan.json").exists()


def test_offload_without_sharding_is_one_rule():
    """Offload needs ZeRO or FSDP: plan and config choose a ZeRO stage (on one GPU too), estimate refuses."""
    plan = run("plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--method", "full", "--offload", "optimizer")
    assert plan["plans"] and {p["sharding"] for p in plan["plans"]} <= {"zero2", "zero3"}
    result = fitplan("estimate", "Llama-3.1-8B", "--offload", "optimizer")
    assert result.returncode == 2 and "unsupported: --offload optimizer needs DeepSpeed ZeRO or FSDP" in result.stderr


@pytest.mark.parametrize("args", [("Llama-2-70b-hf", "--gpu", "h100x8"), ("Llama-3.1-8B", "--gpu", "h100x8",
                                  "--seq-len", "8192"), ("Llama-3.2-1B", "--gpu", "v100-32gb"),
                                  ("Llama-3.2-1B", "--gpu", "RTX 4090")])
def test_the_reason_agrees_with_the_table(args):
    data = run("plan", *args)
    chosen = data["plans"][data["recommended"]]
    qlora = [p["tokens_per_s"] for p in data["plans"] if p["method"] == "qlora"]
    if "faster than QLoRA" in data["reason"]:
        assert chosen["tokens_per_s"] >= max(qlora)
    if chosen["method"] == "lora" and qlora and max(qlora) > chosen["tokens_per_s"]:
        assert "QLoRA would be" in data["reason"]


def test_an_unsupported_combination_says_why_in_plan_and_fits():
    data = run("plan", "mistralai/Mixtral-8x7B-v0.1", "--gpu", "a100-80gb", "--method", "qlora", status=1)
    assert data["reason"].startswith("unsupported: Mixtral-8x7B-v0.1 is a mixture-of-experts model")
    assert data["nothing_fits"]["unsupported"] == data["reason"]
    cell = run("fits", "--gpu", "a100-80gb", "--family", "mixtral")["models"][0]["qlora"]
    assert cell["fits"] is False and cell["unsupported"].startswith("unsupported:")


def test_nothing_fits_tries_cheaper_states_and_the_cheapest_bigger_card():
    args = ("Llama-3.2-1B", "--method", "full", "--precision", "bf16-mixed")
    suggestions = run("plan", *args, "--gpu", "RTX 4090", status=1)["nothing_fits"]["suggestions"]
    assert "8-bit AdamW states fit (--optimizer adamw8bit)." in suggestions
    assert "bf16-true fits (--precision bf16-true)." in suggestions
    cheapest = next(s for s in suggestions if s.startswith("The cheapest bigger card"))
    named = find_gpu(cheapest.split(": ")[1].split(",")[0])[0]
    assert run("plan", *args, "--gpu", named.key)["recommended"] is not None
    for spec in CATALOG:   # every cheaper card with more memory than the 4090 fails the same plan
        if spec.price_usd_per_hour < named.price_usd_per_hour and spec.memory_bytes > find_gpu("RTX 4090")[0].memory_bytes:
            assert run("plan", *args, "--gpu", spec.key, status=1)["recommended"] is None, spec.name


def test_nothing_fits_suggests_the_fused_loss_where_the_logits_tip_it():
    """At 16k tokens a 128k vocabulary's logits are what does not fit: the fused loss is offered, and it fits."""
    args = ("Llama-3.2-1B", "--method", "lora", "--seq-len", "16384", "--micro-batch", "2", "--gpu", "RTX 4090")
    suggestions = run("plan", *args, status=1)["nothing_fits"]["suggestions"]
    assert "Liger's fused cross-entropy fits (--loss liger)." in suggestions
    assert run("plan", *args, "--loss", "liger")["recommended"] is not None


def test_fp32_is_not_planned_with_flash_attention():
    """FlashAttention-2 takes fp16 and bf16 only: an fp32 plan with --attn flash would fail at its first step."""
    for command in ("estimate", "plan"):
        switched = run(command, "Llama-3.2-1B", "--gpu", "a100-80gb", "--precision", "fp32", "--attn", "flash")
        config = switched["config"] if command == "estimate" else switched["plans"][switched["recommended"]]
        assert config["attn"] == "sdpa" and any("no fp32 kernels" in w for w in switched["warnings"]), command


def test_cards_without_a_feature_refuse_or_switch_with_a_word():
    refused = fitplan("plan", "Llama-3.2-1B", "--gpu", "t4", "--precision", "bf16-true")
    assert refused.returncode == 1 and "T4 has no bf16; use --precision fp16-mixed" in refused.stdout
    switched = run("plan", "Llama-3.2-1B", "--gpu", "t4", "--attn", "flash", "--seq-len", "200000", status=1)
    assert any("cannot run FlashAttention-2" in w for w in switched["warnings"])
    assert any("longer than the 131,072 positions" in w for w in switched["warnings"])
    estimate = run("estimate", "Llama-3.2-1B", "--gpu", "v100-16gb")
    assert estimate["config"]["precision"] == "fp16-mixed" and "has no bf16" in estimate["warnings"][0]


@pytest.mark.parametrize("args", [("Llama-3.1-8B", "--gpu", "h100x8", "--seq-len", "8192"),
                                  ("Llama-2-70b-hf", "--gpu", "h100x8"), ("Qwen/Qwen2.5-0.5B", "--gpu", "a10g")])
def test_the_reason_quotes_the_tables_numbers_and_names(args):
    """Every tokens/s the reason quotes is one the table shows, to the unit; engines are named as people write them."""
    table = CliRunner().invoke(cli, ["plan", *args]).stdout
    rows = [line.split() for line in table.splitlines() if line.strip().startswith(("*", "full", "lora", "qlora"))]
    speeds = {row[-3] for row in rows}
    data = run("plan", *args)
    quoted = re.findall(r"\(([\d,]+) against ([\d,]+) tokens/s\)", data["reason"])
    assert all(number in speeds for pair in quoted for number in pair), (data["reason"], speeds)
    assert not re.search(r"\b(ZERO\d|LORA|QLORA)\b", data["reason"]), data["reason"]


def test_config_and_launch_refuse_what_cannot_run_forced_or_not(tmp_path):
    for extra in ([], ["--force"]):
        result = fitplan("config", "Llama-3.2-1B", "--gpu", "RTX 4090", "--offload", "optimizer", "--sharding", "none",
                         "--out", str(tmp_path / "a"), *extra)
        assert result.returncode == 2 and "unsupported: --offload optimizer needs DeepSpeed ZeRO" in result.stderr
    assert not (tmp_path / "a").exists()
    result = fitplan("launch", "mistralai/Mixtral-8x7B-v0.1", "--gpu", "a100-80gb", "--method", "qlora", "--dry-run")
    assert result.returncode == 2 and "error: unsupported: Mixtral-8x7B-v0.1 is a mixture-of-experts" in result.stderr
    text = fitplan("plan", "mistralai/Mixtral-8x7B-v0.1", "--gpu", "a100-80gb", "--method", "qlora")
    assert text.returncode == 1 and "\n  unsupported: Mixtral-8x7B-v0.1" in text.stdout
