"""Exact mode (`estimate --trace`, `plan --trace`): the traced answer is the harness's measurement in the
estimate JSON shape, close to the analytic model; configs only transformers knows are traced; a trace that
cannot run names the op and falls back to the analytic model."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.calibration import overhead_for
from cli.main import cli
from planner.config import TrainConfig
from planner.memory import COMPONENTS
from measure.trace import Progress, describe_failure, op_name
from profiles.hf_config import SUPPORTED_TYPES, hf_config_dict
from profiles.models import from_name
from cli_checks import run_main

TINY = dict(n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)
CARD = "RTX 4090"
# Architectures fitplan's analytic model does not know, but transformers builds (tiny configs).
OPT = dict(model_type="opt", hidden_size=128, num_attention_heads=4, num_hidden_layers=2, ffn_dim=256,
           vocab_size=500, word_embed_proj_dim=128, max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
           pad_token_id=1)
MPT = dict(model_type="mpt", d_model=128, n_heads=4, n_layers=2, vocab_size=500, expansion_ratio=4, max_seq_len=128)


def write_config(folder: Path, name: str, config: dict) -> str:
    path = folder / name / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A shrunk catalog model (Llama-3.1-8B's architecture, 2 small layers) as a local config.json."""
    spec = from_name("meta-llama/Llama-3.1-8B", **TINY)
    return write_config(tmp_path_factory.mktemp("models"), "tiny-llama", hf_config_dict(spec))


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


# --- a model the analytic model knows: the trace IS the harness ------------------------------------------
@pytest.mark.parametrize("options, close", [(["--method", "lora"], True), (["--method", "full"], True),
                                            (["--method", "qlora", "--grad-ckpt"], True),
                                            (["--method", "lora", "--lora-targets", "q,v"], True),
                                            (["--method", "lora", "--precision", "bf16-mixed"], True)])
def test_trace_is_the_harness_measurement_and_close_to_the_analytic_model(tiny_llama, options, close):
    from measure.harness import measure
    from planner.model_input import resolve_model
    from cli.options import config_from_options

    data = invoke("estimate", tiny_llama, "--seq-len", "64", "--gpu", CARD, "--trace", "--json", *options)
    parsed = {options[i].lstrip("-").replace("-", "_"): options[i + 1] for i in range(0, len(options) - 1, 2)
              if not options[i + 1].startswith("--")}
    cfg = config_from_options({"seq_len": 64, "grad_ckpt": True if "--grad-ckpt" in options else None, **parsed})
    m = measure(resolve_model(tiny_llama).spec, cfg)
    per_gpu = data["per_gpu"]
    overhead = overhead_for(data["gpu"]["name"])

    assert data["source"] == "trace"
    assert per_gpu["allocated_peak_bytes"] == m.allocated_peak_bytes
    assert per_gpu["components"] == {c: m.components.get(c, 0) for c in COMPONENTS}
    assert sum(per_gpu["components"].values()) == per_gpu["allocated_peak_bytes"]
    assert per_gpu["peak_phase"] == m.peak_phase
    assert per_gpu["phases"] == m.phase_peaks
    assert (data["params_total"], data["params_trainable"]) == (m.params_total, m.params_trainable)
    # the overheads a CPU cannot see come from the calibration, as in the analytic path
    assert per_gpu["reserved_peak_bytes"] == overhead.reserved(m.allocated_peak_bytes)
    assert per_gpu["cuda_context_bytes"] == overhead.context_bytes
    assert per_gpu["total_bytes"] == per_gpu["reserved_peak_bytes"] + per_gpu["cuda_context_bytes"]
    assert data["calibration"] == overhead.source
    assert data["fits"] is True and data["config"]["seq_len"] == 64
    assert all(note in data["notes"] for note in m.notes)

    analytic = invoke("estimate", tiny_llama, "--seq-len", "64", "--gpu", CARD, "--json", *options)
    assert data["analytic"]["per_gpu"] == analytic["per_gpu"]
    assert data["analytic"]["params_total"] == analytic["params_total"] == data["params_total"]
    expected = 100 * (analytic["per_gpu"]["allocated_peak_bytes"] / m.allocated_peak_bytes - 1)
    assert data["difference_pct"] == pytest.approx(expected, abs=1e-3)
    if close:
        assert abs(data["difference_pct"]) <= 3.0


def test_paged_optimizer_states_leave_the_allocated_peak(tiny_llama):
    from measure.harness import measure
    from planner.model_input import resolve_model

    data = invoke("estimate", tiny_llama, "--seq-len", "64", "--method", "full", "--optimizer", "paged_adamw",
                  "--trace", "--json")
    m = measure(resolve_model(tiny_llama).spec, TrainConfig(method="full", optimizer="paged_adamw", seq_len=64))
    per_gpu = data["per_gpu"]
    assert m.paged_bytes > 0
    assert per_gpu["paged_bytes"] == m.paged_bytes
    assert per_gpu["allocated_peak_bytes"] == m.allocated_peak_bytes - m.paged_bytes
    assert per_gpu["components"]["optimizer_states"] == m.components["optimizer_states"] - m.paged_bytes
    assert sum(per_gpu["components"].values()) == per_gpu["allocated_peak_bytes"]
    assert per_gpu["total_bytes"] == per_gpu["reserved_peak_bytes"] + per_gpu["cuda_context_bytes"] + m.paged_bytes


def test_text_output_shows_the_source_and_the_analytic_difference(tiny_llama):
    result = CliRunner().invoke(cli, ["estimate", tiny_llama, "--seq-len", "64", "--trace"])
    assert result.exit_code == 0, result.output
    assert "source: trace" in result.stdout
    assert "analytic model: allocated" in result.stdout and "% of the trace" in result.stdout


def test_sharded_configurations_are_not_traced_but_estimated(tiny_llama):
    data = invoke("estimate", tiny_llama, "--seq-len", "64", "--method", "full", "--gpus", "2", "--sharding",
                  "zero3", "--trace", "--json")
    assert data["source"].startswith("analytic (not traced: sharding zero3")
    assert data["per_gpu"] == invoke("estimate", tiny_llama, "--seq-len", "64", "--method", "full", "--gpus", "2",
                                     "--sharding", "zero3", "--json")["per_gpu"]


# --- architectures only transformers knows ------------------------------------------------------------
def built_counts(config: dict) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    data = dict(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data))
    return sum(p.numel() for p in model.parameters())


def test_unknown_family_config_gets_a_traced_answer(tmp_path, monkeypatch, capsys):
    assert "opt" not in SUPPORTED_TYPES
    path = write_config(tmp_path, "tiny-opt", OPT)
    code, _, err = run_main(monkeypatch, capsys, "estimate", path, "--json")   # the analytic model refuses it
    assert code == 2 and "'opt'" in err and "Traceback" not in err

    data = invoke("estimate", path, "--seq-len", "64", "--gpu", CARD, "--trace", "--json")
    per_gpu = data["per_gpu"]
    assert data["source"] == "trace" and data["model"] == "tiny-opt"
    assert data["analytic"] is None and data["difference_pct"] is None
    assert data["params_total"] == built_counts(OPT)
    assert 0 < data["params_trainable"] < data["params_total"]
    assert per_gpu["allocated_peak_bytes"] > 0 and per_gpu["peak_phase"] in ("forward", "backward", "optimizer_step")
    assert sum(per_gpu["components"].values()) == per_gpu["allocated_peak_bytes"]
    assert per_gpu["components"]["adapters"] > 0 and per_gpu["components"]["optimizer_states"] > 0
    assert per_gpu["total_bytes"] == per_gpu["reserved_peak_bytes"] + per_gpu["cuda_context_bytes"]
    assert any("'opt' is not in fitplan's analytic model" in note for note in data["notes"])


def test_unknown_family_with_named_lora_modules(tmp_path):
    path = write_config(tmp_path, "tiny-opt", OPT)
    data = invoke("estimate", path, "--seq-len", "32", "--lora-r", "8", "--lora-targets", "q_proj,v_proj",
                  "--trace", "--json")
    # r * (d_in + d_out) for q_proj and v_proj (128 x 128) in 2 layers
    assert data["params_trainable"] == 2 * 2 * 8 * (128 + 128)


def test_unknown_family_refuses_target_aliases(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path, "tiny-opt", OPT)
    code, out, err = run_main(monkeypatch, capsys, "estimate", path, "--lora-targets", "q,v", "--trace", "--json")
    assert code == 2 and "aliases" in json.loads(out)["error"] and len(err.strip().splitlines()) == 1


def test_model_without_sdpa_is_traced_with_eager_attention(tmp_path):
    data = invoke("estimate", write_config(tmp_path, "tiny-mpt", MPT), "--seq-len", "32", "--trace", "--json")
    assert data["source"] == "trace" and data["config"]["attn"] == "eager"
    assert any("no SDPA attention" in note for note in data["notes"])


def test_unbuildable_unknown_config_is_one_sentence(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path, "mystery", {"model_type": "no_such_model_type", "hidden_size": 64})
    code, out, err = run_main(monkeypatch, capsys, "estimate", path, "--trace", "--json")
    assert code == 2 and "Traceback" not in err
    message = json.loads(out)["error"]
    assert "no_such_model_type" in message and "Tracing mystery" in message
    assert err.strip().splitlines() == [f"error: {message}"]


# --- failures -----------------------------------------------------------------------------------------
def test_data_dependent_op_falls_back_to_the_analytic_model_and_names_op_and_module(tiny_llama, monkeypatch):
    from transformers.models.llama import modeling_llama

    original = modeling_llama.LlamaMLP.forward

    def reads_a_value(self, x):
        if x.sum().item() > 0:   # data-dependent: fake tensors have no values
            pass
        return original(self, x)

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", reads_a_value)
    data = invoke("estimate", tiny_llama, "--seq-len", "64", "--trace", "--json")
    source = data["source"]
    assert source.startswith("analytic (trace failed: DataDependentOutputException on op aten._local_scalar_dense")
    assert "layers.0.mlp (LlamaMLP)" in source and source.endswith(")")
    assert data["trace_error"] in source
    analytic = invoke("estimate", tiny_llama, "--seq-len", "64", "--json")
    assert data["per_gpu"] == analytic["per_gpu"] and data["params_total"] == analytic["params_total"]


def test_failure_of_the_harness_falls_back_with_its_message(tiny_llama, monkeypatch):
    import torch
    from torch._subclasses.fake_tensor import UnsupportedOperatorException

    def no_fake_kernel(*args, **kwargs):
        raise UnsupportedOperatorException(torch.ops.aten.linalg_eigh.default)

    monkeypatch.setattr("measure.harness.measure", no_fake_kernel)
    data = invoke("estimate", tiny_llama, "--seq-len", "64", "--trace", "--json")
    assert data["source"].startswith("analytic (trace failed: UnsupportedOperatorException on op "
                                     "aten.linalg_eigh.default")


def test_failure_without_an_analytic_model_is_one_sentence(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::_fancy_kernel' with arguments from the 'Meta' backend.")

    monkeypatch.setattr("measure.harness.measure_hf_config", broken)
    code, out, err = run_main(monkeypatch, capsys, "estimate", write_config(tmp_path, "tiny-opt", OPT),
                              "--trace", "--json")
    message = json.loads(out)["error"]
    assert code == 2 and "op aten._fancy_kernel" in message and "analytic model cannot stand in" in message
    assert len(err.strip().splitlines()) == 1


def test_op_names_and_descriptions():
    assert op_name(RuntimeError("Could not run 'aten::foo.bar' with arguments")) == "aten.foo.bar"
    assert op_name(ValueError("nothing here")) is None
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = NotImplementedError("aten.baz.default has no meta kernel")
    assert op_name(wrapped) == "aten.baz.default"
    assert describe_failure(ValueError("bad config. More text")) == "ValueError: bad config"


# --- plan --trace ---------------------------------------------------------------------------------------
def test_plan_trace_confirms_the_recommended_plan(tiny_llama):
    data = invoke("plan", tiny_llama, "--gpu", CARD, "--seq-len", "64", "--trace", "--json")
    chosen = data["plans"][data["recommended"]]
    trace = data["trace"]
    assert trace["source"] == "trace"
    for key in ("method", "precision", "optimizer", "micro_batch", "seq_len", "grad_ckpt", "attn"):
        assert trace["config"][key] == chosen[key]
    assert trace["plan_total_bytes"] == chosen["per_gpu"]["total_bytes"]
    assert trace["confirms_plan"] is True
    assert abs(trace["difference_pct"]) <= 3.0


# --- progress and imports ---------------------------------------------------------------------------------
def test_progress_shows_only_for_slow_traces():
    import time
    quick, slow = io.StringIO(), io.StringIO()
    with Progress("tracing x", stream=quick, delay=5):
        pass
    with Progress("tracing y", stream=slow, delay=0.01):
        time.sleep(0.1)
    assert quick.getvalue() == ""
    assert slow.getvalue().startswith("tracing y ...") and " done in " in slow.getvalue()
    assert slow.getvalue().endswith(" s\n")


def test_without_the_training_libraries_trace_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from measure import trace
    real = importlib.util.find_spec
    monkeypatch.setattr(trace.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    code, out, err = run_main(monkeypatch, capsys, "estimate", "Llama-3.2-1B", "--trace", "--json")
    assert code == 2 and "pip install 'fitplan[train]'" in err and "needs torch" in err
    assert json.loads(out)["error"].startswith("--trace runs the real training step")
