"""`fitplan gpus`: the GPUs this machine has (NVML), or the catalog with --catalog."""
from __future__ import annotations

import json

import click

from cli.table import text_table

from common.units import gib
from planner.nvml import Probe, ProbedGpu, probe
from profiles.gpus import CATALOG, GpuSpec, match_nvml_name

NO_GPU_HINT = ('`fitplan gpus --catalog` lists the cards fitplan can plan for; name one with --gpu, '
               'e.g. fitplan plan MODEL --gpu "RTX 4090".')


@click.command("gpus")
@click.option("--catalog", is_flag=True, help="List the cards fitplan knows instead of this machine's GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(catalog: bool, as_json: bool) -> None:
    """The GPUs this machine has (NVML), or the catalog with --catalog."""
    if catalog:
        click.echo(json.dumps(catalog_dict(), indent=2) if as_json else format_catalog(CATALOG))
        return
    result = probe()
    # No GPU is an answer, not an error: exit 0 either way.
    click.echo(json.dumps({"source": "nvml", **result.to_dict()}, indent=2) if as_json else format_probe(result))


def catalog_dict(specs: list[GpuSpec] = CATALOG) -> dict:
    return {"source": "catalog", "gpus": [spec.to_dict() for spec in specs]}


def format_probe(result: Probe) -> str:
    """This machine's GPUs as a table, with the driver, warnings, or why none was found."""
    if not result.gpus:
        return f"No NVIDIA GPU was found ({result.error or 'NVML found none'}).\n" + _notes(result) + NO_GPU_HINT
    headers = ["GPU", "Name", "Memory", "Free", "Used", "CC", "BF16", "TFLOP/s", "Procs", "MIG", "NVLink"]
    rows = []
    for gpu in result.gpus:
        spec = match_nvml_name(gpu.name, gpu.memory_bytes)
        rows.append([str(gpu.index), gpu.name, gib(gpu.memory_bytes, 1), gib(gpu.free_bytes, 1), gib(gpu.used_bytes, 1),
                     _capability(gpu.compute_capability), _yes(gpu.bf16), _number(spec.tflops if spec else None),
                     _number(gpu.processes), _mig(gpu), _peers(gpu.nvlink_peers)])
        rows += [["", f"  MIG {s.name.rsplit('MIG', 1)[-1].strip()}", gib(s.memory_bytes, 1), gib(s.free_bytes, 1),
                  gib(s.memory_bytes - s.free_bytes, 1), "", "", "", "", "", ""] for s in gpu.mig_slices]
    table = text_table(headers, rows, right={"GPU", "Memory", "Free", "Used", "TFLOP/s", "Procs"})
    driver = f"Driver {result.driver_version or 'N/A'}, CUDA {result.cuda_version or 'N/A'}."
    return f"{table}\n{driver}\n{_notes(result)}".rstrip("\n")


def format_catalog(specs: list[GpuSpec]) -> str:
    """The catalog as a table; the notes say what the numbers mean."""
    headers = ["Name", "Key", "Memory", "CC", "BF16 TFLOP/s", "FP16 TFLOP/s", "GB/s", "$/h", "Price basis"]
    rows = [[spec.name, spec.key, gib(spec.memory_bytes, 1) + (" " if spec.memory_exact else "*"),
             _capability(spec.compute_capability), _number(spec.bf16_tflops or None), _number(spec.fp16_tflops),
             _number(spec.mem_bandwidth_gbs), f"{spec.price_usd_per_hour:.2f}", spec.price_basis]
            for spec in specs]
    table = text_table(headers, rows, right={"Memory", "BF16 TFLOP/s", "FP16 TFLOP/s", "GB/s", "$/h"})
    return "\n".join([
        table,
        f"{len(specs)} cards. Memory: the total NVML reports; * marks a marketing or assumed size, not a known one.",
        "TFLOP/s: dense tensor cores with FP32 accumulation. $/h: rough mid-2025 price per GPU.",
        "Name a card with --gpu, with a count if you like: --gpu \"RTX 4090\", --gpu a100-80gb, --gpu h100x8.",
    ])


def _notes(result: Probe) -> str:
    return "".join(f"warning: {line}\n" for line in result.warnings)


def _number(value: float | int | None) -> str:
    if value is None:
        return "N/A"
    return f"{value:g}"


def _capability(capability: tuple[int, int] | None) -> str:
    return f"{capability[0]}.{capability[1]}" if capability else "N/A"


def _yes(flag: bool | None) -> str:
    return "N/A" if flag is None else ("yes" if flag else "no")


def _mig(gpu: ProbedGpu) -> str:
    if gpu.mig_mode is None:
        return "N/A"
    return f"on ({len(gpu.mig_slices)})" if gpu.mig_mode else "off"


def _peers(peers: list[int] | None) -> str:
    if peers is None:
        return "N/A"
    return ",".join(map(str, peers)) if peers else "none"
