"""How fast planning is: a cold `fitplan plan` process, and the full search in a warm one.

    python -m benchmarks.search_speed
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

CASES = [("meta-llama/Llama-2-7b-hf", "RTX 4090"), ("meta-llama/Llama-3.1-8B", "rtx3060"),
         ("meta-llama/Llama-2-70b-hf", "h100x8"), ("Qwen/Qwen2.5-72B", "a100-80gbx8")]


def cold_cli_seconds(model: str, gpu: str, repeats: int = 3) -> float:
    """Wall time of a fresh `fitplan plan` process, interpreter start included."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cli.__main__", "plan", model, "--gpu", gpu, "--json"],
                              capture_output=True)
        if done.returncode not in (0, 1):   # 1: nothing fits, still an answer
            raise RuntimeError(done.stderr.decode()[-500:])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def search_seconds(model: str, gpu: str) -> tuple[float, int]:
    """One full search over all candidates, caches cleared first; returns (seconds, candidates)."""
    from planner import search
    from planner.config import TrainConfig
    from planner.hardware import hardware_from_catalog
    from planner.memory import clear_caches
    from planner.model_input import resolve_model
    from planner.recommend import plan

    clear_caches()
    search.cached_estimate.cache_clear()
    hw = hardware_from_catalog(gpu)
    model_in = resolve_model(model)
    req = search.Request(spec=model_in.spec, base=TrainConfig(), fixed=frozenset(), exact_params=model_in.exact_params)
    start = time.perf_counter()
    plan(req, hw)
    return time.perf_counter() - start, sum(1 for _ in search.candidates(req, hw))


def main() -> None:
    print(f"{'model':<28}{'gpu':<14}{'cold CLI':>10}{'search':>10}{'candidates':>12}")
    for model, gpu in CASES:
        seconds, n = search_seconds(model, gpu)
        print(f"{model:<28}{gpu:<14}{cold_cli_seconds(model, gpu):>9.3f}s{seconds * 1000:>8.1f}ms{n:>12}")


if __name__ == "__main__":
    main()
