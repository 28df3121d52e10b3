"""Readable text of the planner's answers: pure functions from the JSON contract's dicts to strings, so the
table and `--json` always say the same."""
from __future__ import annotations

from cli.table import text_table
from common.units import gib


def estimate_table(data: dict) -> str:
    """The readable breakdown `fitplan estimate` prints."""
    per_gpu, cfg = data["per_gpu"], data["config"]
    lines = [f"{data['model']}: {data['params_total']:,} parameters, {data['params_trainable']:,} trainable",
             *(f"  note: {warning}" for warning in data.get("warnings", [])),
             "  " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("lora_targets", "engine")),
             "", f"  {'component':<22}{'per GPU':>14}"]
    for name, value in per_gpu["components"].items():
        lines.append(f"  {name:<22}{gib(value):>14}")
    lines += [f"  {'allocated peak':<22}{gib(per_gpu['allocated_peak_bytes']):>14}   in {per_gpu['peak_phase']}",
              f"  {'reserved peak':<22}{gib(per_gpu['reserved_peak_bytes']):>14}   allocator cache",
              f"  {'CUDA context':<22}{gib(per_gpu['cuda_context_bytes']):>14}"]
    if per_gpu["communicator_bytes"]:
        lines.append(f"  {'NCCL buffers':<22}{gib(per_gpu['communicator_bytes']):>14}   outside the allocator")
    if per_gpu["paged_bytes"]:
        lines.append(f"  {'paged optimizer':<22}{gib(per_gpu['paged_bytes']):>14}   managed memory")
    lines.append(f"  {'total':<22}{gib(per_gpu['total_bytes']):>14}")
    if data["cpu_bytes"]:
        lines.append(f"  {'CPU (offloaded)':<22}{gib(data['cpu_bytes']):>14}")
    phases = "  ".join(f"{p} {gib(v)}" for p, v in per_gpu["phases"].items())
    lines += ["", f"  phases: {phases}"]
    if "gpu" in data:
        lines.append("  " + fit_sentence(data))
    return "\n".join(lines)


def fit_sentence(data: dict) -> str:
    """The one wording of "fits" (estimate's line, and the same test plan and config apply)."""
    gpu, total, usable = data["gpu"], data["per_gpu"]["total_bytes"], data.get("usable_bytes")
    if usable is None:   # a trace of an older shape: no margin known
        return f"{'fits' if data['fits'] else 'does NOT fit'} on {gpu['name']}"
    margin = data.get("margin")   # a trace knows the usable bytes but not the margin behind them
    kept = f"{margin:.0%} of {gib(gpu['memory_bytes'])} kept free" if margin is not None else \
        f"of {gib(gpu['memory_bytes'])}"
    if data["fits"]:
        return f"fits on {gpu['name']}: needs {gib(total)} of {gib(usable)} usable ({kept})"
    return f"does NOT fit on {gpu['name']}: needs {gib(total)}, {gib(usable)} is usable ({kept}), {gib(total - usable)} over"


def plan_table(data: dict) -> str:
    """The readable table `fitplan plan` prints: the hardware, the plans, and the recommendation or why none."""
    lines = [_hardware_line(data)] + [f"  note: {warning}" for warning in data.get("warnings", [])]
    if data["plans"]:
        headers = ["", "method", "precision", "GPUs", "shard", "offload", "ckpt", "seq", "mb", "accum", "batch",
                   "need/GPU", "headroom", "tok/s", "time", "cost"]
        rows = [_plan_row(p) for p in data["plans"]]
        table = text_table(headers, rows, right=set(headers[7:]))
        lines += ["", *("  " + line for line in table.splitlines())]
        if all(p["time_s"] is None for p in data["plans"]):
            lines.append("  time and cost: give the dataset size, e.g. --tokens 20M (and --epochs).")
    lines.append("")
    if data["recommended"] is not None:
        chosen = data["plans"][data["recommended"]]
        return "\n".join(lines + [f"  * recommended: {data['reason']}", *_time_line(chosen)])
    nothing = data["nothing_fits"]
    if nothing.get("unsupported"):
        return "\n".join(lines + [f"  {nothing['unsupported']}"])
    lines.append(f"  Nothing fits: the smallest plan needs {gib(nothing['min_total_bytes'])} per GPU, "
                 f"{gib(nothing['usable_bytes'])} is usable.")
    return "\n".join(lines + [f"  - {s}" for s in nothing["suggestions"]])


# How the time breakdown's parts read in the explanation.
TIME_WORDS = {"matmul": "matmuls", "attention": "attention", "elementwise": "elementwise ops", "lora": "LoRA branch",
              "dequant": "dequantization", "recompute": "recompute", "communication": "communication",
              "offload": "offload", "optimizer": "optimizer", "fixed": "fixed costs"}


def _time_line(plan: dict) -> list[str]:
    """Where the recommended plan's step goes: '    time: 62% matmuls, 14% attention, ...' (parts >= 1%)."""
    parts = plan.get("time_breakdown")
    total = sum(parts.values()) if parts else 0
    if not total:
        return []
    shares = sorted(((t / total, part) for part, t in parts.items()), reverse=True)
    words = [f"{share:.0%} {TIME_WORDS.get(part, part)}" for share, part in shares if share >= 0.01]
    return ["    time: " + ", ".join(words)]


def _hardware_line(data: dict) -> str:
    hw = data["hardware"]
    gpu = hw["gpus"][0] if hw["gpus"] else {"name": "?", "memory_bytes": 0}
    nodes = f" x {hw['nodes']} nodes" if hw["nodes"] > 1 else ""
    return f"{data['model']} on {len(hw['gpus'])} x {gpu['name']} ({gib(gpu['memory_bytes'])}){nodes}, {hw['source']}"


def _plan_row(p: dict) -> list[str]:
    return ["*" if p["recommended"] else "", p["method"], p["precision"], str(p["gpus"] * p["nodes"]), p["sharding"],
            p["offload"], "yes" if p["grad_ckpt"] else "no", str(p["seq_len"]), str(p["micro_batch"]),
            str(p["grad_accum"]), str(p["global_batch"]), gib(p["per_gpu"]["total_bytes"]), gib(p["headroom_bytes"]),
            _num(p["tokens_per_s"]), _hours(p["time_s"]), _usd(p["cost_usd"])]


def _num(x: float | None) -> str:
    return "N/A" if x is None else f"{x:,.0f}"


def _hours(s: float | None) -> str:
    if s is None:
        return "N/A"
    if s < 60:
        return "<1 min"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:,.1f} h" if s < 3600e6 else f"{s / 3600:.1e} h"


def _usd(x: float | None) -> str:
    if x is None:
        return "N/A"
    if x < 0.01:
        return "<$0.01"
    if x < 1:
        return f"${x:.2f}"
    return f"${x:,.0f}" if x < 1e9 else f"${x:.1e}"


def trace_table(data: dict) -> str:
    """What `estimate --trace` prints: the breakdown, where it comes from, and the analytic answer beside it."""
    lines = [estimate_table(data), "", f"  source: {data.get('source', 'analytic')}"]
    analytic = data.get("analytic")
    if analytic:
        a = analytic["per_gpu"]
        lines.append(f"  analytic model: allocated {gib(a['allocated_peak_bytes'])} in {a['peak_phase']}, "
                     f"total {gib(a['total_bytes'])}; difference {data['difference_pct']:+.2f} % of the trace")
    for note in data.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def plan_trace_lines(trace: dict | None) -> list[str]:
    """The lines `plan --trace` adds under the plan table."""
    if trace is None:
        return ["  trace: nothing fits, so there is no recommended plan to trace."]
    per_gpu = trace["per_gpu"]
    lines = [f"  trace of the recommended plan ({trace['source']}): allocated "
             f"{gib(per_gpu['allocated_peak_bytes'])} in {per_gpu['peak_phase']}, total {gib(per_gpu['total_bytes'])}"]
    if trace.get("difference_pct") is not None:
        lines[-1] += f", analytic {trace['difference_pct']:+.2f} % off"
    if "confirms_plan" in trace:
        lines.append("  the trace confirms the plan fits" if trace["confirms_plan"]
                     else "  WARNING: the traced total exceeds the plan's usable memory; choose a smaller micro-batch")
    return lines
