"""The one script to run when a GPU is at hand: real CUDA memory next to the planner's prediction.

    python -m benchmarks.gpu_check --out DIR            # on a CUDA machine (a few minutes)
    python -m benchmarks.gpu_check --out DIR --tiny     # the same steps, tiny models (CPU smoke test)

1. The measurement harness on CUDA for a handful of configurations (1B-8B, LoRA, QLoRA, full):
   torch's allocated and reserved peaks, the CUDA context and NVML's used memory.
2. `fitplan launch` of a LoRA and a QLoRA run of a ~1B model (random weights saved from the catalog's
   config: no download) for a few steps; their run_report.json files feed `fitplan calibrate`.
Everything lands in DIR with the GPU, driver and library versions and the date (versions.json).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HARNESS = [  # (model, options)
    ("meta-llama/Llama-3.2-1B", dict(method="lora", seq_len=2048, micro_batch=4)),
    ("meta-llama/Llama-3.2-1B", dict(method="full", seq_len=1024, micro_batch=2)),
    ("meta-llama/Llama-3.2-1B", dict(method="qlora", seq_len=2048, micro_batch=4, grad_ckpt=True)),
    ("Qwen/Qwen2.5-3B", dict(method="lora", seq_len=1024, micro_batch=2, grad_ckpt=True)),
    ("meta-llama/Llama-3.1-8B", dict(method="lora", seq_len=2048, micro_batch=1, grad_ckpt=True)),
    ("meta-llama/Llama-3.1-8B", dict(method="qlora", seq_len=2048, micro_batch=2, grad_ckpt=True)),
]
LAUNCHES = [("meta-llama/Llama-3.2-1B", ["--method", "lora"]), ("meta-llama/Llama-3.2-1B", ["--method", "qlora"])]
TINY = dict(n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)


def spec_of(name: str, tiny: bool):
    from profiles.models import from_name
    return from_name(name, **(TINY if tiny else {}))


def run_harness(out: Path, device: str, tiny: bool) -> None:
    from measure.harness import measure
    from planner.config import TrainConfig
    from planner.memory import estimate
    for i, (name, options) in enumerate(HARNESS):
        spec, cfg = spec_of(name, tiny), TrainConfig(**options)
        record = {"model": name, "config": cfg.to_dict()}
        try:
            record["measured"] = measure(spec, cfg, device=device).to_dict()
        except Exception as err:  # one failed configuration must not lose the others
            record["error"] = f"{type(err).__name__}: {err}"
        record["predicted_allocated_peak_bytes"] = estimate(spec, cfg).allocated_peak_bytes
        (out / f"harness_{i}.json").write_text(json.dumps(record, indent=1, default=str))
        print(f"harness {name} {options}: {record.get('error') or record['measured']['allocated_peak_bytes']}",
              flush=True)


def run_launches(out: Path, tiny: bool) -> None:
    for name, options in LAUNCHES:
        folder = out / "models" / name.split("/")[-1]
        if not folder.exists():
            save_random_model(spec_of(name, tiny), folder)
        run_dir = out / f"run_{options[-1]}"
        cmd = [sys.executable, "-m", "cli.__main__", "launch", name, *options, "--model-path", str(folder),
               "--steps", "5", "--seq-len", "256" if tiny else "2048", "--micro-batch", "2", "--out", str(run_dir),
               "--force"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        (out / f"launch_{options[-1]}.log").write_text(done.stdout + done.stderr)
        print(f"launch {name} {options}: exit {done.returncode}", flush=True)


def save_random_model(spec, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from profiles.hf_config import hf_config_dict
    data = dict(hf_config_dict(spec))
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(data.pop("model_type"), **data),
                                             dtype=torch.bfloat16)
    model.save_pretrained(folder)


def versions() -> dict:
    from importlib.metadata import version
    from planner.nvml import probe
    found = probe()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "driver": found.driver_version,
            "cuda_driver": found.cuda_version, "gpus": [g.name for g in found.gpus],
            **{pkg: version(pkg) for pkg in ("torch", "transformers", "peft", "bitsandbytes", "accelerate")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tiny", action="store_true", help="tiny shrunk models on the CPU: a smoke test")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "versions.json").write_text(json.dumps(versions(), indent=1))
    run_harness(args.out, "cpu" if args.tiny else "cuda", args.tiny)
    run_launches(args.out, args.tiny)


if __name__ == "__main__":
    main()
