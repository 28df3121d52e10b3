"""How long `fitplan estimate meta-llama/Llama-2-70b-hf --method lora --seq-len 512 --micro-batch 1 --trace` takes.

Times the trace the command runs (measure.trace.trace_estimate: build on meta, fake tensors, two training
steps), split into importing torch/transformers/peft/bitsandbytes and the trace itself, and prints the
traced and analytic peaks. Not a test: run it by hand, alone on the machine, and compare with the target
(under a minute on a 2-core CI machine).

Usage: python -m benchmarks.trace_70b [--json]
"""
from __future__ import annotations

import json
import sys
import time

from common.units import gib

MODEL = "meta-llama/Llama-2-70b-hf"


def main(argv: list[str] | None = None) -> None:
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    start, cpu_start = time.perf_counter(), time.process_time()
    import bitsandbytes  # noqa: F401 - the imports the trace needs, timed apart
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from measure import harness  # noqa: F401
    imported = time.perf_counter()
    from planner.config import TrainConfig
    from measure.trace import trace_estimate
    data = trace_estimate(MODEL, TrainConfig(method="lora", seq_len=512, micro_batch=1), progress=not as_json)
    done, cpu = time.perf_counter(), time.process_time() - cpu_start
    result = {"model": MODEL, "config": "lora, bf16-true, adamw, seq 512, micro-batch 1",
              "source": data["source"], "import_s": round(imported - start, 1),
              "trace_s": round(done - imported, 1), "harness_s": data.get("trace_seconds"),
              "total_s": round(done - start, 1), "cpu_s": round(cpu, 1),
              "traced_allocated_peak_bytes": data["per_gpu"]["allocated_peak_bytes"],
              "analytic_allocated_peak_bytes": (data.get("analytic") or {}).get("per_gpu", {}).get(
                  "allocated_peak_bytes"),
              "difference_pct": data.get("difference_pct")}
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{MODEL} LoRA seq 512 b 1: {result['source']}, peak {gib(result['traced_allocated_peak_bytes'])} "
          f"in {data['per_gpu']['peak_phase']}")
    print(f"  imports {result['import_s']} s, trace {result['trace_s']} s (harness {result['harness_s']} s), "
          f"total {result['total_s']} s wall, {result['cpu_s']} s CPU (wall exceeds CPU when other work shares the cores)")
    if result["difference_pct"] is not None:
        print(f"  analytic {gib(result['analytic_allocated_peak_bytes'])}, {result['difference_pct']:+.2f} %")


if __name__ == "__main__":
    main()
