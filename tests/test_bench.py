"""`fitplan bench`: the matrix, the cache key, the report writer, and a CI subset of the accuracy benchmark
(shrunk catalog presets measured with the harness here, the planner within 3% of each measurement)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from benchmarks import bench
from benchmarks.bench import (COMPONENTS, PHASES, cache_key, csv_columns, load_cached, make_row, read_csv,
                              save_cached, summary_line, write_outputs)
from benchmarks.matrix import HALVES, BenchConfig, family, matrix, select
from planner.config import TrainConfig
from planner.memory import estimate
from profiles.spec import ModelSpec
from profiles.models import from_name

TOLERANCE = 0.03


# -- CI subset: real accuracy checks on shrunk presets -------------------------------------------------
TINY = dict(n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=2000)
SPECS = {
    "llama": dict(name="meta-llama/Llama-3.1-8B"),
    "gemma": dict(name="google/gemma-2b", n_kv_head=1),                 # tied embeddings, GeGLU, MQA
    "qwen3": dict(name="Qwen/Qwen3-4B"),                                # tied, per-head q/k norms
    "phi2": dict(name="microsoft/phi-2", hidden=320, intermediate=1280, head_dim=80, n_kv_head=4),  # partial rotary
    "qwen3moe": dict(name="Qwen/Qwen3-30B-A3B", n_experts=8, experts_per_token=2, moe_intermediate=128),
    "mixtral": dict(name="mistralai/Mixtral-8x7B-v0.1", moe_intermediate=512),
    "gpt2": dict(name="openai-community/gpt2", intermediate=1024, n_kv_head=4),   # tied, learned positions
    # one full-width layer, short sequences: the NF4 weight dequantized (fp32, then its bf16 copy) during
    # the checkpoint recompute is the peak
    "mistral-layer": dict(name="mistralai/Mistral-7B-v0.1", n_layer=1, hidden=4096, intermediate=14336,
                          n_head=32, n_kv_head=8, head_dim=128, vocab=32000),
}
CI_CASES = [
    ("llama", dict(method="full", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=256)),
    ("llama", dict(method="lora", precision="bf16-mixed", optimizer="adamw", micro_batch=2, seq_len=256,
                   grad_ckpt=True)),
    ("llama", dict(method="qlora", precision="bf16-true", optimizer="adamw", micro_batch=1, seq_len=512,
                   grad_ckpt=True)),
    ("gemma", dict(method="lora", precision="bf16-true", optimizer="sgd", micro_batch=4, seq_len=128)),
    ("gemma", dict(method="full", precision="bf16-mixed", optimizer="adamw", micro_batch=1, seq_len=256,
                   grad_ckpt=True)),
    ("qwen3", dict(method="qlora", precision="bf16-mixed", optimizer="sgd", micro_batch=2, seq_len=256,
                   double_quant=False)),
    ("phi2", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=256, attn="eager")),
    ("qwen3moe", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=128)),
    ("mixtral", dict(method="full", precision="bf16-true", optimizer="sgd", micro_batch=1, seq_len=256,
                     grad_ckpt=True)),
    ("gpt2", dict(method="full", precision="bf16-mixed", optimizer="adamw", micro_batch=2, seq_len=256)),
    ("gpt2", dict(method="lora", precision="fp32", optimizer="adamw", micro_batch=2, seq_len=256, attn="eager")),
    ("mistral-layer", dict(method="qlora", precision="bf16-mixed", optimizer="adamw", micro_batch=2, seq_len=128,
                           grad_ckpt=True)),
    # the later axes: a fused loss (no logits), a plain loop (logits kept through backward), offloading, fused AdamW
    ("mistral-layer", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=128,
                           loss="liger")),
    ("qwen3", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=256,
                   grad_ckpt=True, loss="cce")),
    ("llama", dict(method="lora", precision="bf16-mixed", optimizer="adamw", micro_batch=2, seq_len=256,
                   loop="plain")),
    ("mistral-layer", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=128,
                           activation_offload="all")),
    ("gemma", dict(method="lora", precision="bf16-true", optimizer="adamw", micro_batch=2, seq_len=256,
                   activation_offload="all")),
    ("llama", dict(method="full", precision="bf16-true", optimizer="adamw_fused", micro_batch=2, seq_len=256)),
]


def tiny_spec(key: str) -> ModelSpec:
    overrides = dict(SPECS[key])
    return from_name(overrides.pop("name"), **{**TINY, **overrides})


@pytest.mark.parametrize("key,changes", CI_CASES, ids=[f"{k}-" + "-".join(str(v) for v in c.values())
                                                       for k, c in CI_CASES])
def test_planner_within_3_percent_of_the_measurement(key, changes):
    from measure.harness import measure
    spec, cfg = tiny_spec(key), TrainConfig(**changes)
    measured = measure(spec, cfg, steps=2, device="fake")
    predicted = estimate(spec, cfg)
    error = predicted.allocated_peak_bytes / measured.allocated_peak_bytes - 1
    assert abs(error) <= TOLERANCE, (
        f"{spec.short_name} {cfg.method.value}: predicted {predicted.allocated_peak_bytes} B "
        f"({predicted.peak_phase.value}), measured {measured.allocated_peak_bytes} B ({measured.peak_phase}): "
        f"{100 * error:+.2f}%")


# -- the matrix ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def configs() -> list[BenchConfig]:
    return matrix()


def test_matrix_size_and_unique_ids(configs):
    assert len(configs) >= 160
    assert len({c.id for c in configs}) == len(configs)


def test_matrix_covers_families_methods_and_settings(configs):
    specs = {c.model: from_name(c.model) for c in configs}
    assert len({s.family for s in specs.values()}) >= 8
    assert any(s.is_moe for s in specs.values()) and any(s.tied_embeddings for s in specs.values())
    sizes = [s.params for s in specs.values()]
    assert min(sizes) < 1.5e9 and max(sizes) > 65e9
    assert {c.method for c in configs} == {"full", "lora", "qlora"}
    assert {"bf16-true", "bf16-mixed", "fp32"} <= {c.precision for c in configs}
    assert {"adamw", "sgd", "adamw8bit", "adafactor"} <= {c.optimizer for c in configs}
    assert {c.grad_ckpt for c in configs} == {True, False}
    assert {c.double_quant for c in configs if c.method == "qlora"} == {True, False}
    assert min(c.micro_batch for c in configs) == 1 and max(c.micro_batch for c in configs) == 16
    assert min(c.seq_len for c in configs) == 256 and max(c.seq_len for c in configs) == 8192
    assert sum(c.attn == "sdpa" for c in configs) > len(configs) / 2
    eager_only = {m for m, s in specs.items() if s.attn_softcap is not None or s.is_mla}  # see matrix()
    eager = [c for c in configs if c.attn == "eager" and c.model not in eager_only]
    assert eager and max(c.seq_len for c in eager) <= 512


def test_matrix_keeps_70b_full_fine_tuning_short(configs):
    for c in configs:
        if from_name(c.model).params > 60e9 and c.method == "full":
            assert c.seq_len <= 512


def test_every_config_builds_and_is_predicted(configs):
    for c in configs:
        e = estimate(from_name(c.model), c.train_config())
        assert e.allocated_peak_bytes > 0


def test_halves_are_balanced_and_drawn_from_the_id(configs):
    for half in HALVES:
        share = sum(c.half == half for c in configs) / len(configs)
        assert 0.35 < share < 0.65
        for method in ("full", "lora", "qlora"):
            assert any(c.half == half and c.method == method for c in configs)
    # a config's id and half depend on its fields only: pinned, so that a tune/holdout split never moves
    assert BenchConfig("meta-llama/Llama-3.2-1B", "full", "bf16-true", "adamw", 4, 1024, False).id == "6225209e7fe7"
    assert BenchConfig("meta-llama/Llama-3.2-1B", "full", "bf16-true", "adamw", 4, 1024, False).half == "tune"
    assert BenchConfig("google/gemma-2-2b", "full", "fp32", "sgd", 1, 512, False, "eager").half == "holdout"


def test_matrix_is_the_same_in_another_process():
    code = ("from benchmarks.matrix import matrix; import json; "
            "print(json.dumps([[c.id, c.half] for c in matrix()]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == [[c.id, c.half] for c in matrix()]


def test_select_filters(configs):
    assert {family(c) for c in select(configs, families=["LLAMA-3"])} == {"llama-3"}
    picked = select(configs, methods=["qlora"], half="holdout", limit=5)
    assert len(picked) == 5 and all(c.method == "qlora" and c.half == "holdout" for c in picked)
    assert select(configs, ids=[configs[3].id[:8]]) == [configs[3]]


# -- the cache -----------------------------------------------------------------------------------------
CONFIG = BenchConfig("meta-llama/Llama-3.2-1B", "lora", "bf16-true", "adamw", 1, 512, False)
VERSIONS = {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.50.2",
            "harness": "abc123"}


def test_cache_key_changes_with_any_version_config_or_model():
    key = cache_key(CONFIG, VERSIONS)
    assert key == cache_key(CONFIG, dict(VERSIONS))
    for lib in VERSIONS:
        assert cache_key(CONFIG, {**VERSIONS, lib: "other"}) != key
    assert cache_key(BenchConfig(**{**CONFIG.to_dict(), "seq_len": 1024}), VERSIONS) != key
    spec = bench.spec_fields(CONFIG)
    assert cache_key(CONFIG, VERSIONS, {**spec, "n_layer": spec["n_layer"] + 1}) != key


def test_versions_name_the_libraries_and_the_harness_source():
    vers = bench.versions()
    assert set(vers) == {"torch", "transformers", "peft", "bitsandbytes", "harness"}
    assert re.fullmatch(r"[0-9a-f]{12}", vers["harness"])


def test_cached_measurement_is_used_only_under_its_key(tmp_path):
    key = cache_key(CONFIG, VERSIONS)
    save_cached(tmp_path, CONFIG, key, VERSIONS, {"allocated_peak_bytes": 1})
    assert load_cached(tmp_path, CONFIG, key) == {"allocated_peak_bytes": 1}
    assert load_cached(tmp_path, CONFIG, cache_key(CONFIG, {**VERSIONS, "torch": "2.14.0"})) is None
    assert [p.name for p in tmp_path.iterdir()] == [f"{CONFIG.id}.json"]   # no temporary files left
    (tmp_path / f"{CONFIG.id}.json").write_text("{truncated")
    assert load_cached(tmp_path, CONFIG, key) is None


# -- the report writer ---------------------------------------------------------------------------------
def synthetic_results() -> list[dict]:
    """Rows for five matrix configs with made-up measurements; the last one failed to measure."""
    rows = []
    for i, (c, error) in enumerate(zip(matrix()[:5], [0.0, 0.01, -0.05, 0.2, None])):
        if error is None:
            rows.append(make_row(c, None, None, error="RuntimeError: boom"))
            continue
        comps = dict.fromkeys(COMPONENTS, 0) | {"weights": 1_000_000 * (i + 1), "activations": 500_000}
        peak = sum(comps.values())
        m = {"allocated_peak_bytes": peak, "peak_phase": "backward", "components": comps,
             "phase_peaks": {"forward": peak - 1, "backward": peak, "optimizer_step": peak // 2},
             "params_total": 10, "params_trainable": 5, "seconds": 1.5, "notes": []}
        pred_comps = dict(comps, activations=comps["activations"] + round(error * peak))
        phases = {p: dict(pred_comps) for p in PHASES}
        p = {"allocated_peak_bytes": sum(pred_comps.values()), "peak_phase": "backward", "components": pred_comps,
             "phases": phases, "params_total": 10, "params_trainable": 5}
        rows.append(make_row(c, m, p))
    return rows


def test_report_files_columns_and_summary(tmp_path):
    rows = synthetic_results()
    meta = {"date": "2025-01-01", "versions": VERSIONS, "python": "3.11", "wall_seconds": 60, "measure_seconds": 6}
    write_outputs(rows, tmp_path, meta, ["QLoRA: 224 decoder linears replaced", "QLoRA: 160 decoder linears replaced"])
    with open(tmp_path / "bench.csv", newline="") as f:
        reader = csv.DictReader(f)
        data = list(reader)
    assert reader.fieldnames == csv_columns()
    expected = {"id", "half", "family", "model", "method", "precision", "optimizer", "micro_batch", "seq_len",
                "grad_ckpt", "attn", "double_quant", "measured_peak_bytes", "measured_phase", "predicted_peak_bytes",
                "predicted_phase", "error_pct", "seconds"}
    expected |= {f"{side}_{c}" for c in COMPONENTS for side in ("measured", "predicted")}
    assert expected <= set(reader.fieldnames)
    assert len(data) == 5 and data[4]["status"] == "failed" and data[4]["error_message"] == "RuntimeError: boom"
    assert [float(r["error_pct"]) for r in data[:4]] == pytest.approx([0, 1, -5, 20], abs=1e-3)

    line = summary_line(rows)
    assert re.fullmatch(r"4 configurations: median \|error\| 3\.00%, max \|error\| 20\.00%, "
                        r"under-predicted by >2%: 1 \(tune: \d configurations, .*; holdout: \d configurations, .*\)",
                        line), line
    report = (tmp_path / "REPORT.md").read_text()
    assert line in report and "2025-01-01" in report and "transformers 5.24.0" in report
    for section in ("Statistics by half", "Worst 10", "Error by family", "Error by method", "Error by component",
                    "Failures", "Notes"):
        assert f"## {section}" in report
    assert report.count("QLoRA: N decoder linears replaced") == 1
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert summary_line(read_csv(tmp_path / "bench.csv")) == line   # the report can be rebuilt from the CSV


# -- the command, end to end on one real matrix config ------------------------------------------------
def test_bench_command_measures_once_then_uses_the_cache(tmp_path):
    from cli.commands.bench import command
    small = min(matrix(), key=lambda c: (from_name(c.model).params, c.method != "full"))
    args = ["--ids", small.id, "--out", str(tmp_path)]
    first = CliRunner().invoke(command, args)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("1 configurations: median |error|")
    cached = json.loads((tmp_path / "cache" / f"{small.id}.json").read_text())
    assert cached["versions"] == bench.versions() and cached["measurement"]["allocated_peak_bytes"] > 0
    second = CliRunner().invoke(command, args)
    assert second.exit_code == 0 and second.stdout == first.stdout
    assert read_csv(tmp_path / "bench.csv")[0]["cached"] is True


def test_bench_sharded_section_reports_every_rank(tmp_path):
    """`fitplan bench --sharded-only` writes the per-rank comparison of the committed sharded measurements."""
    from benchmarks import sharded
    from cli.main import cli
    result = CliRunner().invoke(cli, ["bench", "--sharded-only", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)["sharded"][0]
    records = json.loads(sharded.OUT.read_text())["records"]
    ranks = sum(len(r["ranks"]) for r in records if r["status"] == "measured")
    assert f"{ranks} ranks" in line and "under-predicted by >2%: 0" in line
    with (tmp_path / "sharded.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ranks and {r["engine"] for r in rows} == set(sharded.ENGINES)
    assert all(abs(float(r["error_pct"])) <= sharded.WITHIN for r in rows)
    assert (tmp_path / "sharded.png").stat().st_size > 0 and line in (tmp_path / "SHARDED.md").read_text()


def test_repredict_reads_the_committed_measurements_and_writes_nothing(tmp_path):
    """`fitplan bench --repredict` predicts bench.csv's measurements again: every measured row, no file written."""
    from cli.main import cli
    import shutil
    shutil.copy(bench.RESULTS / "bench.csv", tmp_path / "bench.csv")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["bench", "--repredict", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)["summary"]
    assert line.startswith(f"{len(bench.measured(read_csv(tmp_path / 'bench.csv')))} configurations")
    assert "under-predicted by >2%: 0" in line and sorted(p.name for p in tmp_path.iterdir()) == before
