"""`fitplan plan`: the JSON contract, the table, user mistakes without tracebacks, the registered commands,
and planning that never imports torch, transformers or pynvml."""
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_checks import assert_user_error
from click.testing import CliRunner

from cli.commands.plan import plan_json as plan_result
from cli.main import COMMANDS, cli
from common.errors import InputError
from test_nvml import FakeNvml, LibraryNotFound
from test_search import options

FITPLAN = Path(sys.executable).parent / "fitplan"
LLAMA2_7B = "meta-llama/Llama-2-7b-hf"

TOP_KEYS = {"model", "hardware", "plans", "recommended", "reason", "nothing_fits"}
TOP_EXTRA = {"calibration", "warnings", "usable_bytes", "margin"}  # usable_bytes: what each GPU may use
PLAN_KEYS = {"method", "precision", "optimizer", "micro_batch", "grad_accum", "seq_len", "grad_ckpt", "attn",
             "sharding", "offload", "gpus", "nodes", "per_gpu", "tokens_per_s", "step_time_s", "time_s", "cost_usd",
             "recommended"}
PLAN_EXTRA = {"headroom_bytes", "cpu_bytes", "global_batch", "time_breakdown"}
LORA_KEYS = {"lora_r", "lora_alpha", "lora_targets"}


def plan_json(*args: str, status: int = 0) -> dict:
    result = CliRunner().invoke(cli, ["plan", *args, "--json"])
    assert result.exit_code == status, result.output
    return json.loads(result.output)


def fitplan(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(FITPLAN), *args], capture_output=True, text=True, timeout=60, **kwargs)


# --- The JSON contract -----------------------------------------------------------------------------
def test_plan_json_has_the_contract_keys():
    data = plan_json(LLAMA2_7B, "--gpu", "RTX 4090")
    assert set(data) == TOP_KEYS | TOP_EXTRA
    assert data["hardware"]["source"] == "catalog" and data["hardware"]["nodes"] == 1
    assert data["hardware"]["gpus"] == [{"name": "RTX 4090", "memory_bytes": 25757220864,
                                         "free_bytes": 25757220864}]
    assert data["plans"]
    for plan in data["plans"]:
        extra = LORA_KEYS if plan["method"] in ("lora", "qlora") else set()
        assert set(plan) == PLAN_KEYS | PLAN_EXTRA | extra
        assert {"allocated_peak_bytes", "reserved_peak_bytes", "cuda_context_bytes", "total_bytes", "peak_phase",
                "components"} <= set(plan["per_gpu"])
        assert plan["time_s"] is None and plan["cost_usd"] is None  # no --tokens
    assert isinstance(data["recommended"], int)
    assert [p["recommended"] for p in data["plans"]].count(True) == 1
    assert data["plans"][data["recommended"]]["recommended"] is True
    assert isinstance(data["reason"], str) and data["reason"].endswith(".")
    assert data["nothing_fits"] is None


def test_tokens_give_time_and_cost():
    data = plan_json(LLAMA2_7B, "--gpu", "RTX 4090", "--tokens", "10000000")
    for plan in data["plans"]:
        assert plan["time_s"] == pytest.approx(10_000_000 / plan["tokens_per_s"], rel=0.01)
        assert plan["cost_usd"] > 0


@pytest.mark.parametrize("tokens, epochs, time, cost", [("1000", "1", "<1 min", "<$0.01"),
                                                       ("2e9", "1", " h", "$"), ("1e18", "1e6", "e+", "e+")])
def test_time_and_cost_read_well_at_any_size(tokens, epochs, time, cost):
    """Under a minute and under a cent say so; absurd sizes stay in their column; every row has every column."""
    result = CliRunner().invoke(cli, ["plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--tokens", tokens, "--epochs", epochs])
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("method"))
    header, rows = lines[start], lines[start + 1:lines.index("", start)]
    assert header.split()[-5:] == ["need/GPU", "headroom", "tok/s", "time", "cost"] and "seq" in header.split()
    for row in rows:
        cells = row.replace("*", " ", 1).split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        assert len(cells) == len(header.split()) and len(row) <= len(header) + 2, (header, row)
        assert time in cells[-2] and cost in cells[-1] and len(cells[-1]) <= 12, row


def test_a_count_of_cards_is_the_hardware():
    data = plan_json(LLAMA2_7B, "--gpu", "h100x8")
    assert len(data["hardware"]["gpus"]) == 8
    assert all(plan["gpus"] in (1, 2, 4, 8) for plan in data["plans"])


def test_nothing_fits_json():
    data = plan_json("meta-llama/Llama-3.1-405B", "--gpu", "RTX 4090", status=1)
    assert data["plans"] == [] and data["recommended"] is None
    assert set(data["nothing_fits"]) >= {"min_total_bytes", "suggestions"}
    assert data["nothing_fits"]["suggestions"]


def test_nothing_fits_exits_one_and_says_what_would():
    result = fitplan("plan", "meta-llama/Llama-3.1-405B", "--gpu", "RTX 4090")
    assert result.returncode == 1
    assert "Nothing fits" in result.stdout and result.stderr == ""


def test_plan_table_marks_the_recommended_plan():
    result = CliRunner().invoke(cli, ["plan", LLAMA2_7B, "--gpu", "RTX 3060"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{LLAMA2_7B} on 1 x RTX 3060")
    starred = [line for line in lines if line.lstrip().startswith("* ")]
    assert starred[0].split()[1] == "qlora"
    assert "* recommended:" in result.output


# --- User mistakes ---------------------------------------------------------------------------------
MISTAKES = {
    "unknown model": (["plan", "no-such-model", "--gpu", "RTX 4090"], "Unknown model"),
    "micro-batch 0": (["plan", LLAMA2_7B, "--gpu", "RTX 4090", "--micro-batch", "0"], "--micro-batch"),
    "lora rank beyond the layer": (["plan", LLAMA2_7B, "--gpu", "RTX 4090", "--lora-r", "100000"], "--lora-r"),
    "unknown method": (["plan", LLAMA2_7B, "--gpu", "RTX 4090", "--method", "foo"], "--method"),
    "unknown sharding": (["plan", LLAMA2_7B, "--gpu", "h100x8", "--sharding", "zero9"], "--sharding"),
    "unknown gpu": (["plan", LLAMA2_7B, "--gpu", "RTX 9999"], "RTX 9999"),
    "two gpu counts": (["plan", LLAMA2_7B, "--gpu", "h100x8", "--gpus", "4"], "--gpus"),
    "unknown prefer": (["plan", LLAMA2_7B, "--gpu", "RTX 4090", "--prefer", "cheap"], "--prefer"),
    "unknown command": (["plna", LLAMA2_7B], "plna"),
}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_is_one_sentence_on_stderr(mistake, as_json):
    args, says = MISTAKES[mistake]
    result = fitplan(*args, *(["--json"] if as_json else []))
    assert_user_error(result, says, as_json)


def test_malformed_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    result = fitplan("plan", str(path), "--gpu", "RTX 4090", "--json")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not valid JSON" in json.loads(result.stdout)["error"]


def test_without_gpu_and_without_nvml_says_to_use_gpu():
    with pytest.raises(InputError, match="--gpu"):
        plan_result(LLAMA2_7B, options(), nvml=FakeNvml([], init_error=LibraryNotFound()))


def test_without_gpu_on_this_machine_says_to_use_gpu():
    from planner.nvml import probe
    if probe().gpus:
        pytest.skip("this machine has a GPU")
    for as_json in (False, True):
        result = fitplan("plan", LLAMA2_7B, *(["--json"] if as_json else []))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "No NVIDIA GPU was found" in lines[0] and "--gpu" in lines[0]
        if as_json:
            assert "--gpu" in json.loads(result.stdout)["error"]


# --- The command group -----------------------------------------------------------------------------
def test_help_lists_the_registered_commands():
    result = fitplan("--help")
    assert result.returncode == 0
    listed = result.stdout.split("Commands:")[1].split()
    for name in ("plan", "estimate", "fits", "gpus", "models", "env", "config", "launch"):
        assert name in listed


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_registered_command_has_help(name):
    command = cli.get_command(click.Context(cli), name)
    if command is None:
        pytest.skip(f"{COMMANDS[name]} is not installed")
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "--json" in result.output or name in ("launch",)
