"""Builds benchmarks/data/throughput.csv, the published training-throughput runs the speed model is judged on,
from the collected tables (benchmarks/data/published_runs.csv: torchtitan, llm-foundry, the IBM/PyTorch FSDP
blog and fms-fsdp; each row names its source_url, the table it came from in source_detail, and caveats in notes).

Cleaning, in order (each dropped row is listed in throughput_excluded.csv with why):
- superseded tables (llm-foundry's 2023-07 A100 tables, re-measured in 2024-01; fms-fsdp's draft) and runs
  that went out of memory;
- what fitplan cannot plan: tensor, pipeline or context parallelism, and fp8 matmuls;
- the rest are data-parallel (FSDP1, FSDP2, HSDP) full training runs in bf16.
Settings the sources leave out are filled as `assumed` says. Then every row gets its half, drawn with a fixed
seed BEFORE any constant of the speed model is fitted: fit on `tune`, report both.

    python -m benchmarks.build_throughput [--source PATH]
"""
from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SOURCE = DATA / "published_runs.csv"
OUT, EXCLUDED = DATA / "throughput.csv", DATA / "throughput_excluded.csv"
SPLIT_SEED = 20240321         # the halves: random.Random(SPLIT_SEED).shuffle of the sorted ids, first half tune
DROPPED_SOURCES = {"llmfoundry_bench_2023-07_superseded": "superseded by the 2024-01 re-measurement",
                   "ibm_fms_fsdp_2024-02_draft": "draft table, replaced before the blog"}
# GPU of each row: a catalog key, or a measured variant the catalog lacks (benchmarks/speed.py defines it).
GPUS = {"A100-80GB": "a100-80gb", "A100-40GB": "a100-40gb", "H100-80GB": "h100-sxm",
        "H100 96GB HBM2e (Grand Teton, 500W power limit)": "h100-hbm2e-500w", "H200": "h200"}
COLUMNS = ["id", "source_id", "source_url", "model", "family", "params_b", "n_layer", "hidden", "n_head",
           "n_kv_head", "intermediate", "vocab", "seq_len", "micro_batch", "global_batch", "gpus", "nodes", "gpu",
           "network_gbps_per_node", "sharding", "shard_group", "precision", "recompute_forward",
           "recompute_matmuls", "stack", "attention_kernel", "tokens_per_s_per_gpu", "half", "assumed"]


def exclusion(row: dict) -> str | None:
    """Why a row cannot be used, or None."""
    if row["source_id"] in DROPPED_SOURCES:
        return DROPPED_SOURCES[row["source_id"]]
    if not row["tokens_per_s_per_gpu"]:
        return "no throughput (out of memory)"
    if any(word in row["sharding"] for word in ("TP", "PP", "CP")):
        return "tensor/pipeline/context parallelism: fitplan plans data parallelism only"
    if row["precision"].startswith("fp8"):
        return "fp8 matmuls: fitplan plans 16-bit and fp32 training"
    return None


def clean(row: dict) -> dict:
    """One usable row in the speed model's terms."""
    assumed: list[str] = []
    mpt = row["source_id"].startswith("llmfoundry")
    gpus = int(row["gpus"])
    out = {k: row[k] for k in ("source_id", "source_url", "model", "params_b", "n_layer", "hidden", "n_head",
                               "n_kv_head", "intermediate", "vocab", "seq_len", "global_batch", "gpus")}
    out |= {"family": "mpt" if mpt else "llama", "micro_batch": row["micro_batch_per_gpu"],
            "nodes": max(1, gpus // 8), "gpu": GPUS[row["gpu_type"]],
            "tokens_per_s_per_gpu": row["tokens_per_s_per_gpu"]}
    out["network_gbps_per_node"] = _network(row, assumed)
    out |= _sharding(row, gpus)
    out["precision"] = "bf16-true" if "pure" in row["precision"].lower() else "bf16-mixed"
    out["recompute_forward"], out["recompute_matmuls"] = _recompute(row, assumed)
    out["stack"] = _stack(row)
    # llm-foundry's benchmark script runs MPT with attn_impl=triton (the Triton FlashAttention of 2022),
    # torchtitan and fms-fsdp call SDPA's flash backend (FlashAttention-2)
    out["attention_kernel"] = "triton" if mpt else "fa2"
    out["assumed"] = "; ".join(assumed)
    return out


def _network(row: dict, assumed: list[str]) -> int:
    text = row["interconnect"] or ""
    if "1600" in text:
        return 1600
    if "400 Gb/s per GPU" in text:
        return 3200
    if text.startswith("400 Gbps"):
        return 400
    if text.startswith("800 Gbps"):
        return 800
    guess = 3200 if "H100" in row["gpu_type"] else 1600
    assumed.append(f"network {guess} Gb/s per node (8 NICs, DGX-like; the source does not say)")
    return guess


def _sharding(row: dict, gpus: int) -> dict:
    text = row["sharding"]
    engine = "fsdp" if text.startswith("FSDP2") else "fsdp1"
    group = 8 if text.startswith("HSDP") else gpus
    reshard = "SHARD_GRAD_OP" not in text
    return {"sharding": engine if reshard else engine + "-grad-op", "shard_group": group}


def _recompute(row: dict, assumed: list[str]) -> tuple[float, float]:
    """(share of each layer's forward recomputed, share of the matmuls within it)."""
    text = row["activation_checkpointing"]
    if text.startswith("none"):
        return 0.0, 1.0
    if text.startswith("full"):
        return 1.0, 1.0
    if "op" in text or "per-op" in text:
        return 1.0, 0.5       # torchtitan's op policy saves every other mm (and SDPA): half the matmuls rerun
    if "fraction of blocks" in text:
        assumed.append("selective checkpointing of half the blocks (fms-fsdp's fraction is not stated)")
        return 0.5, 1.0
    assumed.append("selective checkpointing of every 2nd layer (the toml's int is not stated)")
    return 0.5, 1.0


def _stack(row: dict) -> str:
    if row["compile"].lower().startswith("yes"):
        return "compiled"
    if row["source_id"].startswith("llmfoundry"):
        return "fused"         # low_precision_layernorm, triton flash attention
    if row["source_id"].startswith("torchtitan_perf_2024-04"):
        return "fused"         # norm_type fused_rmsnorm in the 2024-04 tomls
    return "eager"


def split(rows: list[dict]) -> None:
    ids = sorted(r["id"] for r in rows)
    random.Random(SPLIT_SEED).shuffle(ids)
    tune = set(ids[: len(ids) // 2])
    for r in rows:
        r["half"] = "tune" if r["id"] in tune else "holdout"


def build(source: Path = SOURCE) -> tuple[list[dict], list[dict]]:
    with source.open(newline="") as f:
        raw = list(csv.DictReader(f))
    kept, dropped = [], []
    for i, row in enumerate(raw):
        why = exclusion(row)
        if why:
            dropped.append({"row": i + 2, "source_id": row["source_id"], "model": row["model"], "why": why})
            continue
        r = clean(row)
        r["id"] = f"{r['source_id']}:{i + 2}"
        kept.append(r)
    split(kept)
    return kept, dropped


def write(rows: list[dict], path: Path, columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    kept, dropped = build(args.source)
    write(kept, OUT, COLUMNS)
    write(dropped, EXCLUDED, ["row", "source_id", "model", "why"])
    print(f"{len(kept)} rows ({sum(r['half'] == 'tune' for r in kept)} tune) -> {OUT}; {len(dropped)} excluded")


if __name__ == "__main__":
    main()
