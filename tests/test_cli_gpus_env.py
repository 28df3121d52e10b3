"""`fitplan gpus` and `fitplan env`: snapshot tables, JSON, a fake NVML, and no tracebacks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from cli.commands.env import format_env, gather_env
from cli.commands.gpus import format_catalog, format_probe
from planner.nvml import Probe, probe
from profiles.gpus import CATALOG, find_gpu
from test_nvml import GiB, FakeNvml, LibraryNotFound, a100_mig, h100, rtx3060, rtx4090

FITPLAN = Path(sys.executable).parent / "fitplan"


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def machine(monkeypatch):
    """Install a fake pynvml for the machine given by a list of FakeCards (or an init error)."""
    def install(cards, **kwargs):
        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(cards, **kwargs))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


# --- gpus --catalog ---------------------------------------------------------------------------------
def test_catalog_table_snapshot():
    specs = [find_gpu(name)[0] for name in ("4090", "t4", "h100", "a10")]
    assert format_catalog(specs) == "\n".join([
        "Name      Key          Memory  CC   BF16 TFLOP/s  FP16 TFLOP/s  GB/s   $/h  Price basis",
        "RTX 4090  rtx-4090  24.0 GiB   8.9         165.2         165.2  1008  0.34  community cloud",
        "T4        t4        15.0 GiB   7.5           N/A            65   320  0.35  on-demand cloud",
        "H100 SXM  h100-sxm  79.6 GiB   9.0         989.5         989.5  3350  2.99  on-demand cloud",
        "A10       a10       22.5 GiB*  8.6           125           125   600  0.75  on-demand cloud",
        "4 cards. Memory: the total NVML reports; * marks a marketing or assumed size, not a known one.",
        "TFLOP/s: dense tensor cores with FP32 accumulation. $/h: rough mid-2025 price per GPU.",
        'Name a card with --gpu, with a count if you like: --gpu "RTX 4090", --gpu a100-80gb, --gpu h100x8.',
    ])


def test_gpus_catalog_command():
    result = run("gpus", "--catalog")
    assert result.exit_code == 0
    assert result.output == format_catalog(CATALOG) + "\n"
    lines = result.output.splitlines()
    assert len(lines) == 1 + len(CATALOG) + 3
    assert all(any(line.startswith(spec.name + " ") for line in lines) for spec in CATALOG)


def test_gpus_catalog_json():
    result = run("gpus", "--catalog", "--json")
    data = json.loads(result.output)
    assert data["source"] == "catalog" and len(data["gpus"]) == len(CATALOG)
    rtx4090 = next(gpu for gpu in data["gpus"] if gpu["key"] == "rtx-4090")
    assert rtx4090 == {**rtx4090, "name": "RTX 4090", "memory_bytes": 25757220864, "bf16": True,
                       "compute_capability": [8, 9], "bf16_tflops": 165.2, "mem_bandwidth_gbs": 1008.0,
                       "memory_exact": True}


# --- gpus on a (fake) machine -------------------------------------------------------------------------
def test_gpus_table_busy_mixed_machine(machine):
    machine([rtx4090(used=int(10.2 * GiB), pids=[4242, 4243]), rtx3060()])
    result = run("gpus")
    assert result.exit_code == 0
    assert result.output == "\n".join([
        "GPU  Name                       Memory      Free      Used  CC   BF16  TFLOP/s  Procs  MIG  NVLink",
        "  0  NVIDIA GeForce RTX 4090  24.0 GiB  13.8 GiB  10.2 GiB  8.9  yes     165.2      2  N/A  N/A",
        "  1  NVIDIA GeForce RTX 3060  12.0 GiB  11.7 GiB   0.3 GiB  8.6  yes      25.5      0  N/A  N/A",
        "Driver 550.54.15, CUDA 12.4.",
        "warning: GPU 0 has 10.2 GiB in use by 2 other processes; plans use its free memory.",
    ]) + "\n"


def test_gpus_table_mig_and_nvlink_snapshot():
    assert format_probe(probe(FakeNvml([a100_mig()]))) == "\n".join([
        "GPU  Name                     Memory      Free      Used  CC   BF16  TFLOP/s  Procs  MIG     NVLink",
        "  0  NVIDIA A100-SXM4-80GB  80.0 GiB   1.5 GiB  78.5 GiB  8.0  yes       312    N/A  on (2)  N/A",
        "       MIG 3g.40gb          39.2 GiB  39.2 GiB   0.0 GiB",
        "       MIG 3g.40gb          39.2 GiB  39.2 GiB   0.0 GiB",
        "Driver 550.54.15, CUDA 12.4.",
        "warning: GPU 0 has 78.5 GiB in use; plans use its free memory.",
        "warning: GPU 0 is in MIG mode with 2 slices (3g.40gb, 3g.40gb); a training process sees one slice, "
        "and plans use one.",
    ])
    assert format_probe(probe(FakeNvml([h100(i) for i in range(2)]))).splitlines()[1:3] == [
        "  0  NVIDIA H100 80GB HBM3  79.6 GiB  79.1 GiB  0.5 GiB  9.0  yes     989.5      0  off  1",
        "  1  NVIDIA H100 80GB HBM3  79.6 GiB  79.1 GiB  0.5 GiB  9.0  yes     989.5      0  off  0",
    ]


def test_gpus_json_on_a_machine(machine):
    machine([h100()])
    data = json.loads(run("gpus", "--json").output)
    assert data["source"] == "nvml" and data["driver_version"] == "550.54.15" and data["cuda_version"] == "12.4"
    assert data["gpus"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984,
                               "free_bytes": 84968210432, "used_bytes": 552599552, "compute_capability": [9, 0],
                               "bf16": True, "mig_mode": False, "mig_slices": [], "processes": 0,
                               "nvlink_peers": [], "uuid": "GPU-h100-0"}


def test_gpus_without_a_driver_is_an_answer(machine):
    machine([], init_error=LibraryNotFound())
    result = run("gpus")
    assert result.exit_code == 0
    assert result.output == (
        "No NVIDIA GPU was found (no NVIDIA driver is installed: libnvidia-ml.so.1 was not found).\n"
        "`fitplan gpus --catalog` lists the cards fitplan can plan for; name one with --gpu, "
        'e.g. fitplan plan MODEL --gpu "RTX 4090".\n')
    data = json.loads(run("gpus", "--json").output)
    assert data == {"source": "nvml", "gpus": [], "driver_version": None, "cuda_version": None,
                    "error": "no NVIDIA driver is installed: libnvidia-ml.so.1 was not found", "warnings": []}


def test_gpus_with_every_card_failing_keeps_the_warnings():
    text = format_probe(Probe(gpus=[], driver_version="550.54.15", error="none of the 1 GPUs could be read",
                              warnings=["GPU 0 was left out: it could not be opened (Unknown Error)."]))
    assert text.splitlines()[:2] == ["No NVIDIA GPU was found (none of the 1 GPUs could be read).",
                                     "warning: GPU 0 was left out: it could not be opened (Unknown Error)."]


# --- env --------------------------------------------------------------------------------------------
ENV_KEYS = {"fitplan", "python", "os", "packages", "torch", "nvidia", "environment"}


def test_env_json_has_the_keys(machine):
    machine([rtx4090()], driver="560.35.03", cuda=12060)
    data = json.loads(run("env", "--json").output)
    assert set(data) == ENV_KEYS
    assert set(data["packages"]) >= {"torch", "transformers", "accelerate", "peft", "bitsandbytes", "deepspeed"}
    assert set(data["torch"]) == {"version", "cuda_build", "cuda_available"}
    assert data["nvidia"] == {"driver_version": "560.35.03", "cuda_version": "12.6", "error": None, "warnings": [],
                              "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_bytes": 25757220864,
                                        "free_bytes": 25757220864 - 418 * 2**20, "compute_capability": [8, 9]}]}


def test_env_text_report(machine, monkeypatch):
    machine([rtx4090()], driver="560.35.03", cuda=12060)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    lines = run("env").output.splitlines()
    assert lines[0] == "Copy and paste the text below into your issue:"
    assert lines[2].startswith("- fitplan: ") and lines[3].startswith("- Python: ") and lines[4].startswith("- OS: ")
    assert "- NVIDIA driver: 560.35.03 (CUDA 12.6)" in lines
    assert "    0: NVIDIA GeForce RTX 4090, 24.0 GiB (23.6 GiB free), compute capability 8.9" in lines
    assert lines[-1] == "- PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"


def test_env_report_without_a_driver():
    info = gather_env(probe(FakeNvml([], init_error=LibraryNotFound())))
    info["torch"] = {"version": "2.6.0+cu124", "cuda_build": "12.4", "cuda_available": False}
    text = format_env(info)
    assert "- torch build: CUDA 12.4, CUDA usable here: no" in text
    assert "- NVIDIA driver: none found (no NVIDIA driver is installed: libnvidia-ml.so.1 was not found)" in text
    assert "- GPUs: none" in text


@pytest.mark.parametrize("build, driver_cuda, usable", [(None, 12040, False), ("12.4", 12040, True),
                                                         ("12.4", 11080, False), ("11.8", 12020, True)])
def test_env_judges_cuda_usable(monkeypatch, build, driver_cuda, usable):
    monkeypatch.setattr("cli.commands.env._torch_build", lambda: {"version": "2.6.0", "cuda_build": build})
    assert gather_env(probe(FakeNvml([rtx3060()], cuda=driver_cuda)))["torch"]["cuda_available"] is usable


# --- The installed command ----------------------------------------------------------------------------
def test_commands_are_registered():
    output = run("--help").output
    assert "  gpus " in output and "  env " in output


def test_installed_fitplan_never_prints_a_traceback():
    if not FITPLAN.exists():
        pytest.skip("the fitplan script is not installed next to this Python")
    catalog = subprocess.run([FITPLAN, "gpus", "--catalog", "--json"], capture_output=True, text=True)
    assert catalog.returncode == 0 and len(json.loads(catalog.stdout)["gpus"]) == len(CATALOG)
    env = subprocess.run([FITPLAN, "env", "--json"], capture_output=True, text=True)
    assert env.returncode == 0 and set(json.loads(env.stdout)) == ENV_KEYS
    here = subprocess.run([FITPLAN, "gpus"], capture_output=True, text=True)
    assert here.returncode == 0 and "Traceback" not in here.stderr
    wrong = subprocess.run([FITPLAN, "gpus", "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.startswith("error: ") and len(wrong.stderr.strip().splitlines()) == 1
