"""`fitplan models` and `fitplan fits`: every catalog entry listed, the fits matrix agreeing with the
planner and the memory model, and snapshots of both tables."""
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from cli.commands.plan import plan_json
from cli.main import cli
from cli.commands.fits import fits_dict, fits_table
from cli.commands.models import models_table, select, variant_of
from planner.config import TrainConfig
from planner.memory import estimate
from planner.search import total_bytes, usable_bytes
from planner.hardware import catalog_hardware
from profiles import models as catalog_module
from profiles.gpus import find_gpu
from profiles.models import catalog, from_name
from test_search import options

CELL_KEYS = {"fits", "micro_batch", "total_bytes", "sharding", "grad_ckpt"}


def invoke_json(*args: str):
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def rtx4090_fits() -> dict:
    return invoke_json("fits", "--gpu", "RTX 4090")


# --- models ----------------------------------------------------------------------------------------
def test_models_json_lists_every_catalog_entry():
    data = invoke_json("models")
    specs = list(catalog())
    assert [row["model"] for row in data] == [spec.name for spec in specs]
    for row, spec in zip(data, specs):
        assert row["params"] == spec.params
        assert (row["family"], row["n_layer"], row["hidden"], row["n_head"], row["n_kv_head"], row["vocab"]) == \
               (spec.family, spec.n_layer, spec.hidden, spec.n_head, spec.n_kv_head, spec.vocab)
        assert (row["n_experts"], row["experts_per_token"]) == (spec.n_experts, spec.experts_per_token)
        assert row["tied_embeddings"] is spec.tied_embeddings


def test_models_json_llama2_7b_numbers():
    row = next(r for r in invoke_json("models") if r["model"] == "meta-llama/Llama-2-7b-hf")
    assert row["params"] == 6738415616
    assert (row["n_layer"], row["hidden"], row["n_head"], row["n_kv_head"], row["vocab"]) == (32, 4096, 32, 32, 32000)
    assert row["variant_of"] is None


def test_models_table_has_a_row_per_entry():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    names = [line.split()[0] for line in lines[1:-1]]
    assert names == [spec.name for spec in catalog()]
    assert lines[-1].startswith(f"{len(names)} models.")


def test_models_family_filter():
    data = invoke_json("models", "--family", "Qwen3-MoE")
    assert [row["model"] for row in data] == ["Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-235B-A22B"]
    assert all(row["n_experts"] == 128 and row["experts_per_token"] == 8 for row in data)


def test_models_table_snapshot():
    specs = [from_name(name) for name in ("Llama-2-7b-hf", "gemma-2b", "Qwen3-30B-A3B", "gpt2")]
    assert models_table(specs) == "\n".join([
        "Model                     Family     Params  Layers  Hidden  Heads/KV   Vocab  Tied  MoE    Year  Licence",
        "meta-llama/Llama-2-7b-hf  llama-2    6.74 B      32    4096     32/32   32000  no    -      2023  llama2, gated",
        "google/gemma-2b           gemma      2.51 B      18    2048       8/1  256000  yes   -      2024  gemma, gated",
        "Qwen/Qwen3-30B-A3B        qwen3-moe  30.5 B      48    2048      32/4  151936  no    128/8  2025  apache-2.0",
        "openai-community/gpt2     gpt-2      0.12 B      12     768     12/12   50257  yes   -      2019  mit",
        "4 models. Params: billions. MoE: experts / experts per token. Year: released. Licence: the Hub's tag; "
        "gated: the Hub asks for an access request first.",
    ])


def test_models_json_gives_release_terms_and_notes():
    rows = {row["model"]: row for row in invoke_json("models")}
    assert all(isinstance(row["released"], int) and row["licence"] for row in rows.values())
    scout = rows["meta-llama/Llama-4-Scout-17B-16E"]
    assert (scout["released"], scout["gated"], scout["licence"]) == (2025, True, "llama4")
    assert (rows["openai/gpt-oss-20b"]["gated"], rows["openai/gpt-oss-20b"]["licence"]) == (False, "apache-2.0")
    assert "dequantize=True" in rows["openai/gpt-oss-120b"]["note"] and "bf16" in rows["openai/gpt-oss-120b"]["note"]
    assert rows["meta-llama/Llama-2-7b-hf"]["note"] is None


def test_base_models_are_the_catalog_presets_without_their_variants():
    bases = select(catalog(), bases_only=True)
    assert [spec.name for spec in bases] == [spec.name for spec in catalog_module._BASES]
    variants = variant_of(catalog())
    declared = {name: base for base, name, _ in catalog_module._VARIANTS}
    assert variants == declared


@pytest.mark.parametrize("variant, base", [
    ("meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-7b-hf"),
    ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-70B"),
    ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B"),   # its config declares a shorter context only
    ("google/gemma-3-4b-it", "google/gemma-3-4b-pt"),
    ("meta-llama/Llama-3.1-8B", None),                  # same numbers as Llama-3-8B, but its own model
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None),  # a distillation, listed as a model of its own
])
def test_variant_of(variant, base):
    row = next(r for r in invoke_json("models") if r["model"] == variant)
    assert row["variant_of"] == base


# --- fits ------------------------------------------------------------------------------------------
def test_fits_json_shape(rtx4090_fits):
    data = rtx4090_fits
    assert data["gpu"] == {"name": "RTX 4090", "memory_bytes": 25757220864, "count": 1}
    assert data["seq_len"] == 2048
    assert [row["model"] for row in data["models"]] == [spec.name for spec in select(catalog(), bases_only=True)]
    for row in data["models"]:
        assert row["params"] == from_name(row["model"]).params
        for method in ("full", "lora", "qlora"):
            cell = row[method]
            assert CELL_KEYS <= set(cell)
            if cell["fits"]:
                assert cell["micro_batch"] >= 1 and cell["total_bytes"] > 0
                assert cell["sharding"] == "none" and isinstance(cell["grad_ckpt"], bool)
            else:
                assert cell["micro_batch"] is None and cell["total_bytes"] is None


def _cell(data: dict, model: str, method: str) -> dict:
    return next(row for row in data["models"] if row["model"] == model)[method]


def test_on_a_4090_7b_qlora_fits_and_70b_full_does_not(rtx4090_fits):
    assert _cell(rtx4090_fits, "meta-llama/Llama-2-7b-hf", "qlora")["fits"] is True
    assert _cell(rtx4090_fits, "meta-llama/Llama-2-7b-hf", "full")["fits"] is False
    assert _cell(rtx4090_fits, "meta-llama/Llama-2-70b-hf", "full")["fits"] is False
    assert _cell(rtx4090_fits, "meta-llama/Llama-2-70b-hf", "qlora")["fits"] is False
    assert _cell(rtx4090_fits, "openai-community/gpt2", "full")["fits"] is True


def test_a_bigger_model_never_fits_a_bigger_batch(rtx4090_fits):
    sizes = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf")
    for method in ("full", "lora", "qlora"):
        batches = [_cell(rtx4090_fits, name, method)["micro_batch"] or 0 for name in sizes]
        assert batches == sorted(batches, reverse=True)


@pytest.mark.parametrize("model", ["meta-llama/Llama-2-7b-hf", "Qwen/Qwen2.5-1.5B", "microsoft/phi-2"])
def test_fits_agrees_with_the_memory_model(rtx4090_fits, model):
    """Each fitting cell fits in the card less the margin, and one more sequence would not."""
    spec = from_name(model)
    target = catalog_hardware(find_gpu("RTX 4090")[0])
    budget = usable_bytes(target, 0.10)
    for method in ("full", "lora", "qlora"):
        cell = _cell(rtx4090_fits, model, method)
        if not cell["fits"]:
            continue
        cfg = TrainConfig(method=method, precision=cell["precision"], grad_ckpt=cell["grad_ckpt"],
                          micro_batch=cell["micro_batch"])
        assert total_bytes(estimate(spec, cfg), target.card.overhead) == cell["total_bytes"] <= budget
        assert total_bytes(estimate(spec, replace(cfg, micro_batch=cfg.micro_batch + 1)), target.card.overhead) > budget


@pytest.mark.parametrize("model", ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "google/gemma-2b"])
def test_fits_agrees_with_plan(rtx4090_fits, model):
    for method in ("full", "lora", "qlora"):
        cell = _cell(rtx4090_fits, model, method)
        plans = plan_json(model, options(method=method), gpu="RTX 4090")[0]["plans"]
        assert cell["fits"] is bool(plans)
        if plans:
            # plan shows the fastest plan per strategy, not always the one with the largest batch
            assert cell["micro_batch"] >= max(plan["micro_batch"] for plan in plans)


def test_fits_on_eight_cards_shards_with_zero3():
    data = invoke_json("fits", "--gpu", "h100x8", "--family", "llama-2")
    assert data["gpu"]["count"] == 8
    assert [row["model"] for row in data["models"]] == [
        "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf"]
    full_70b = _cell(data, "meta-llama/Llama-2-70b-hf", "full")
    assert full_70b["fits"] is True and full_70b["sharding"] == "zero3" and full_70b["grad_ckpt"] is True
    memory = data["gpu"]["memory_bytes"]
    for row in data["models"]:
        for method in ("full", "lora", "qlora"):
            assert row[method]["fits"] and row[method]["total_bytes"] <= 0.9 * memory


def test_fits_all_adds_the_variants():
    short = invoke_json("fits", "--gpu", "RTX 4090", "--family", "llama-2")
    full = invoke_json("fits", "--gpu", "RTX 4090", "--family", "llama-2", "--all")
    assert [row["model"] for row in short["models"]] == [
        "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf"]
    assert len(full["models"]) == 6 and "meta-llama/Llama-2-7b-chat-hf" in [r["model"] for r in full["models"]]
    chat = next(row for row in full["models"] if row["model"] == "meta-llama/Llama-2-7b-chat-hf")
    base = next(row for row in full["models"] if row["model"] == "meta-llama/Llama-2-7b-hf")
    assert {k: v for k, v in chat.items() if k != "model"} == {k: v for k, v in base.items() if k != "model"}


def test_shorter_sequences_and_a_smaller_margin_fit_more():
    base = _cell(invoke_json("fits", "--gpu", "RTX 4090", "--family", "llama-2"), "meta-llama/Llama-2-7b-hf", "qlora")
    short = _cell(invoke_json("fits", "--gpu", "RTX 4090", "--family", "llama-2", "--seq-len", "512"),
                  "meta-llama/Llama-2-7b-hf", "qlora")
    wide = _cell(invoke_json("fits", "--gpu", "RTX 4090", "--family", "llama-2", "--margin", "0.5"),
                 "meta-llama/Llama-2-7b-hf", "qlora")
    assert short["micro_batch"] > base["micro_batch"]
    assert (wide["micro_batch"] or 0) < base["micro_batch"]


def test_fits_table_snapshot():
    specs = [from_name(name) for name in ("Llama-2-7b-hf", "Llama-2-70b-hf", "gpt2")]
    target = catalog_hardware(find_gpu("RTX 4090")[0])
    table = fits_table(fits_dict(specs, target, 2048, 0.10))
    assert table == "\n".join([
        "Catalog models on RTX 4090 (24.0 GiB), 2048 tokens, 10% margin: largest micro-batch per method",
        "",
        "Model                      Params  full       lora       qlora",
        "meta-llama/Llama-2-7b-hf   6.74 B  N/A        4 (ckpt)   8 (ckpt)",
        "meta-llama/Llama-2-70b-hf  69.0 B  N/A        N/A        N/A",
        "openai-community/gpt2      0.12 B  15 (ckpt)  15 (ckpt)  15 (ckpt)",
        "",
        "N/A: does not fit. unsupported: the libraries cannot train it (see --json for why). "
        "ckpt: activation checkpointing; offload: CPU offload (ZeRO-3).",
    ])


def test_fits_table_marks_offload():
    target = catalog_hardware(find_gpu("h100")[0], gpus_per_node=8)
    table = fits_table(fits_dict([from_name("Llama-2-70b-hf")], target, 2048, 0.10))
    row = table.splitlines()[3]
    assert row.startswith("meta-llama/Llama-2-70b-hf  69.0 B  ") and "(ckpt, offload params)" in row


def test_fits_without_gpu_is_a_usage_error():
    result = CliRunner().invoke(cli, ["fits"])
    assert result.exit_code != 0 and "--gpu" in result.output


def test_unknown_family_is_one_sentence():
    result = CliRunner().invoke(cli, ["fits", "--gpu", "RTX 4090", "--family", "nope"])
    assert result.exit_code != 0
    assert "Unknown model family 'nope'" in str(result.exception)
