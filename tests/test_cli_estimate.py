"""`fitplan estimate`: the JSON contract of docs/cli.md and docs/json.md, exact counts, and user mistakes that end
in one sentence on stderr (and {"error": ...} with --json), never a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import assert_user_error
from click.testing import CliRunner

from cli.main import cli
from planner.memory import COMPONENTS

FITPLAN = Path(sys.executable).parent / "fitplan"
LLAMA2_7B = "meta-llama/Llama-2-7b-hf"

TOP_KEYS = {"model", "params_total", "params_trainable", "config", "per_gpu", "cpu_bytes"}
PER_GPU_KEYS = {"allocated_peak_bytes", "reserved_peak_bytes", "cuda_context_bytes", "total_bytes", "peak_phase",
                "components"}
# Added to the contract (which allows additions): where the overheads come from, paged optimizer memory,
# and the total of each phase.
TOP_EXTRA = {"calibration", "warnings"}
PER_GPU_EXTRA = {"paged_bytes", "phases", "communicator_bytes"}


def estimate_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def fitplan(*args: str) -> subprocess.CompletedProcess:
    """The installed command, so exit codes and stderr are the real ones (main() handles errors)."""
    return subprocess.run([str(FITPLAN), *args], capture_output=True, text=True, timeout=60)


# --- The JSON contract -----------------------------------------------------------------------------
def test_estimate_json_has_the_contract_keys():
    data = estimate_json(LLAMA2_7B)
    assert set(data) - {"fits", "gpu", "usable_bytes", "margin"} == TOP_KEYS | TOP_EXTRA
    assert set(data["per_gpu"]) == PER_GPU_KEYS | PER_GPU_EXTRA
    assert set(data["per_gpu"]["components"]) == set(COMPONENTS)
    assert len(COMPONENTS) == 11
    assert data["model"] == LLAMA2_7B


def test_llama2_7b_parameter_count_is_exact():
    data = estimate_json(LLAMA2_7B, "--method", "full")
    assert data["params_total"] == 6738415616
    assert data["params_trainable"] == 6738415616


def test_lora_trains_only_the_adapters():
    data = estimate_json(LLAMA2_7B, "--method", "lora", "--lora-r", "8", "--lora-targets", "q,v")
    # r * (d_in + d_out) for q_proj and v_proj (4096 x 4096) in 32 layers
    assert data["params_trainable"] == 32 * 2 * 8 * (4096 + 4096)
    assert data["config"]["lora_r"] == 8 and data["config"]["lora_alpha"] == 16


@pytest.mark.parametrize("args", [
    [],
    ["--method", "full", "--precision", "bf16-mixed", "--micro-batch", "2", "--seq-len", "512"],
    ["--method", "qlora", "--grad-ckpt", "--micro-batch", "4"],
    ["--method", "full", "--gpus", "8", "--sharding", "zero3", "--offload", "optimizer"],
    ["--attn", "eager", "--seq-len", "1024"],
])
def test_components_sum_to_the_allocated_peak(args):
    per_gpu = estimate_json(LLAMA2_7B, *args)["per_gpu"]
    assert sum(per_gpu["components"].values()) == per_gpu["allocated_peak_bytes"]
    assert per_gpu["reserved_peak_bytes"] >= per_gpu["allocated_peak_bytes"]
    assert per_gpu["total_bytes"] == (per_gpu["reserved_peak_bytes"] + per_gpu["cuda_context_bytes"]
                                      + per_gpu["communicator_bytes"])
    assert per_gpu["peak_phase"] in ("forward", "backward", "optimizer_step")
    assert per_gpu["phases"][per_gpu["peak_phase"]] == per_gpu["allocated_peak_bytes"]
    assert all(isinstance(v, int) and v >= 0 for v in per_gpu["components"].values())


def test_config_echoes_every_input_resolved():
    data = estimate_json(LLAMA2_7B, "--method", "qlora", "--micro-batch", "3", "--seq-len", "777")
    cfg = data["config"]
    assert cfg["method"] == "qlora" and cfg["micro_batch"] == 3 and cfg["seq_len"] == 777
    for key in ("precision", "optimizer", "grad_ckpt", "attn", "lora_r", "lora_alpha", "lora_targets",
                "double_quant", "gpus", "nodes", "sharding", "offload"):
        assert key in cfg


def test_full_fine_tuning_config_has_no_lora_fields():
    cfg = estimate_json(LLAMA2_7B, "--method", "full")["config"]
    assert not {"lora_r", "lora_alpha", "lora_targets", "double_quant"} & set(cfg)


def test_a_named_gpu_adds_fits_and_gpu():
    data = estimate_json(LLAMA2_7B, "--method", "qlora", "--grad-ckpt", "--gpu", "RTX 4090")
    assert data["gpu"] == {"name": "RTX 4090", "memory_bytes": 25757220864, "count": 1}
    assert data["fits"] is True and data["margin"] == 0.10
    assert data["usable_bytes"] == int(0.9 * 25757220864) >= data["per_gpu"]["total_bytes"]
    too_big = estimate_json(LLAMA2_7B, "--method", "full", "--gpu", "RTX 4090")
    assert too_big["fits"] is False
    assert too_big["per_gpu"]["total_bytes"] > too_big["usable_bytes"]


def test_without_a_gpu_there_is_no_verdict():
    from planner.nvml import probe
    if probe().gpus:
        pytest.skip("this machine has a GPU, which estimate reports against")
    data = estimate_json(LLAMA2_7B)
    assert "fits" not in data and "gpu" not in data


def test_more_memory_for_a_longer_sequence_and_a_bigger_batch():
    base = estimate_json(LLAMA2_7B)["per_gpu"]["allocated_peak_bytes"]
    assert estimate_json(LLAMA2_7B, "--seq-len", "4096")["per_gpu"]["allocated_peak_bytes"] > base
    assert estimate_json(LLAMA2_7B, "--micro-batch", "2")["per_gpu"]["allocated_peak_bytes"] > base
    assert estimate_json(LLAMA2_7B, "--grad-ckpt")["per_gpu"]["allocated_peak_bytes"] < base


def test_estimate_table_names_every_component():
    result = CliRunner().invoke(cli, ["estimate", LLAMA2_7B, "--gpu", "RTX 4090"])
    assert result.exit_code == 0
    for name in COMPONENTS:
        assert name in result.output
    assert "does NOT fit on RTX 4090" in result.output


# --- User mistakes ---------------------------------------------------------------------------------
def _malformed_config(tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 4096,')
    return str(path)


def _incomplete_config(tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 4096}')
    return str(path)


MISTAKES = {
    "unknown model": (lambda tmp: ["no-such-org/no-such-model"], "Unknown model"),
    "malformed config.json": (lambda tmp: [_malformed_config(tmp)], "not valid JSON"),
    "incomplete config.json": (lambda tmp: [_incomplete_config(tmp)], "lacks"),
    "micro-batch 0": (lambda tmp: [LLAMA2_7B, "--micro-batch", "0"], "--micro-batch"),
    "seq-len 0": (lambda tmp: [LLAMA2_7B, "--seq-len", "0"], "--seq-len"),
    "lora rank beyond the layer": (lambda tmp: [LLAMA2_7B, "--lora-r", "100000"], "--lora-r"),
    "unknown lora target": (lambda tmp: [LLAMA2_7B, "--lora-targets", "q,nonsense"], "nonsense"),
    "unknown method": (lambda tmp: [LLAMA2_7B, "--method", "foo"], "--method"),
    "unknown precision": (lambda tmp: [LLAMA2_7B, "--precision", "fp8"], "--precision"),
    "method auto": (lambda tmp: [LLAMA2_7B, "--method", "auto"], "fitplan plan"),
    "unknown gpu": (lambda tmp: [LLAMA2_7B, "--gpu", "RTX 9999"], "RTX 9999"),
}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_one_sentence_on_stderr(mistake, as_json, tmp_path):
    make_args, says = MISTAKES[mistake]
    result = fitplan("estimate", *make_args(tmp_path), *(["--json"] if as_json else []))
    assert_user_error(result, says, as_json)


def test_a_trace_knows_the_usable_bytes_but_not_the_margin():
    """`estimate --trace --gpu` prints its fit without the margin a trace does not record."""
    from cli.render import fit_sentence
    from common.units import GiB
    data = {"gpu": {"name": "RTX 4090", "memory_bytes": 24 * GiB}, "per_gpu": {"total_bytes": GiB},
            "usable_bytes": 20 * GiB, "fits": True}
    assert fit_sentence(data) == "fits on RTX 4090: needs 1.00 GiB of 20.00 GiB usable (of 24.00 GiB)"


def test_batching_and_liger_kernels_reach_the_estimate():
    def peak(*args: str) -> tuple[str, bool, int]:
        data = estimate_json("meta-llama/Llama-3.1-8B", "--micro-batch", "2", "--seq-len", "4096", *args)
        return data["config"]["batching"], data["config"]["liger_kernels"], data["per_gpu"]["allocated_peak_bytes"]
    fixed, padded, packed, liger = peak(), peak("--batching", "padded"), peak("--batching", "packed"), peak("--liger-kernels")
    assert (fixed[:2], padded[:2], packed[:2], liger[:2]) == (("fixed", False), ("padded", False), ("packed", False),
                                                              ("fixed", True))
    assert padded[2] > fixed[2] and packed[2] > fixed[2]   # SDPA's mask, saved bias and repeat_kv copies
    assert liger[2] < fixed[2]
    flash = [peak("--attn", "flash", "--batching", b)[2] for b in ("fixed", "packed", "padded")]
    assert flash[0] < min(flash[1:])   # packed: position ids and rotary rows; padded: varlen's saved indices


def test_nccl_buffers_count_only_with_more_than_one_process():
    """NCCL allocates its buffers outside torch's allocator once a run has several processes."""
    one = estimate_json(LLAMA2_7B, "--gpu", "h100")["per_gpu"]
    eight = estimate_json(LLAMA2_7B, "--gpu", "h100x8", "--sharding", "ddp")["per_gpu"]
    assert one["communicator_bytes"] == 0 and eight["communicator_bytes"] > 0
    assert eight["total_bytes"] == (eight["reserved_peak_bytes"] + eight["cuda_context_bytes"]
                                    + eight["communicator_bytes"] + eight["paged_bytes"])
