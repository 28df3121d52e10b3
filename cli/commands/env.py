"""`fitplan env`: a paste-ready report of versions, GPUs, driver and CUDA, for bug reports.

Versions come from package metadata, so nothing heavy is imported; torch's CUDA build is read from
its `version.py` without importing torch.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
from pathlib import Path

import click

from common.units import GiB
from planner.calibration import load_profile, overhead_for, user_profile_path
from planner.nvml import Probe, probe

PACKAGES = ["torch", "transformers", "accelerate", "peft", "bitsandbytes", "deepspeed", "safetensors",
            "nvidia-ml-py", "click", "PyYAML"]
# Settings that change how much GPU memory a run takes or which GPUs it sees.
ENV_VARS = ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF",
            "CUDA_MODULE_LOADING", "CUBLAS_WORKSPACE_CONFIG", "NCCL_P2P_DISABLE", "HF_HOME"]


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(as_json: bool) -> None:
    """A paste-ready report of versions, GPUs, driver and CUDA."""
    result = probe()
    info = gather_env(result)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(format_env(info, calibration=env_lines([(g.name, g.compute_capability) for g in result.gpus])))


def gather_env(result: Probe) -> dict:
    """Everything the report shows, as plain data."""
    torch = _torch_build()
    return {
        "fitplan": _version("fitplan"),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch": {**torch, "cuda_available": _cuda_usable(torch["cuda_build"], result)},
        "nvidia": {"driver_version": result.driver_version, "cuda_version": result.cuda_version,
                   "gpus": [{"index": gpu.index, "name": gpu.name, "memory_bytes": gpu.memory_bytes,
                             "free_bytes": gpu.free_bytes,
                             "compute_capability": list(gpu.compute_capability or ()) or None}
                            for gpu in result.gpus],
                   "error": result.error, "warnings": result.warnings},
        "environment": {name: os.environ[name] for name in ENV_VARS if name in os.environ},
    }


def format_env(info: dict, calibration: list[str] | None = None) -> str:
    torch, nvidia = info["torch"], info["nvidia"]
    lines = ["Copy and paste the text below into your issue:", "",
             f"- fitplan: {info['fitplan'] or 'not installed'}",
             f"- Python: {info['python']}",
             f"- OS: {info['os']}"]
    for name, version in info["packages"].items():
        lines.append(f"- {name}: {version or 'not installed'}")
    if torch["version"]:
        cuda_build = f"CUDA {torch['cuda_build']}" if torch["cuda_build"] else "CPU only"
        lines.append(f"- torch build: {cuda_build}, CUDA usable here: {'yes' if torch['cuda_available'] else 'no'}")
    if nvidia["driver_version"] or nvidia["gpus"]:
        lines.append(f"- NVIDIA driver: {nvidia['driver_version'] or 'N/A'} (CUDA {nvidia['cuda_version'] or 'N/A'})")
    else:
        lines.append(f"- NVIDIA driver: none found ({nvidia['error']})")
    if nvidia["gpus"]:
        lines.append(f"- GPUs ({len(nvidia['gpus'])}):")
        for gpu in nvidia["gpus"]:
            capability = ".".join(map(str, gpu["compute_capability"] or [])) or "N/A"
            lines.append(f"    {gpu['index']}: {gpu['name']}, {gpu['memory_bytes'] / GiB:.1f} GiB "
                         f"({gpu['free_bytes'] / GiB:.1f} GiB free), compute capability {capability}")
    else:
        lines.append("- GPUs: none")
    lines += [f"- warning: {line}" for line in nvidia["warnings"]]
    lines += calibration or []   # the calibration in use (measure/calibrate.py)
    lines += [f"- {name}={value}" for name, value in info["environment"].items()]
    return "\n".join(lines)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_build() -> dict:
    """torch's version and the CUDA it was built for, read from torch/version.py without importing torch."""
    version = _version("torch")
    cuda = None
    spec = importlib.util.find_spec("torch") if version else None
    if spec and spec.submodule_search_locations:
        version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
        if version_file.is_file():
            match = re.search(r"^cuda\b[^=]*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.MULTILINE)
            cuda = match.group(1) if match else None
    return {"version": version, "cuda_build": cuda}


def _cuda_usable(cuda_build: str | None, result: Probe) -> bool:
    """Whether torch.cuda.is_available() would be true, judged without importing torch: a CUDA build,
    a GPU, and a driver new enough for the build's CUDA major version."""
    if not cuda_build or not result.gpus:
        return False
    if result.cuda_version is None:
        return True
    return int(result.cuda_version.split(".")[0]) >= int(cuda_build.split(".")[0])


def env_lines(gpus: list[tuple[str, tuple[int, int] | None]]) -> list[str]:
    """`fitplan env`'s lines: the profile in use and the calibration each probed GPU's plans get."""
    path = user_profile_path()
    entries = {k: v for k, v in load_profile(path).items() if isinstance(v, dict) and not v.get("alias_of")}
    state = f"{len(entries)} GPU entr{'y' if len(entries) == 1 else 'ies'}" if path.exists() else "none yet"
    lines = [f"- fitplan calibration: {path} ({state}; `fitplan calibrate --show` lists it)"]
    for name, capability in gpus:
        lines.append(f"    {name}: {overhead_for(name, capability).source}")
    if not gpus:
        lines += [f"    {entry.get('gpu', key)}: calibrated: {entry.get('provenance', 'no provenance')}"
                  for key, entry in entries.items()]
    return lines
