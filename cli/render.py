"""Readable text of the planner's answers: pure functions from the JSON contract's dicts to strings, so the
table and `--json` always say the same."""
from __future__ import annotations

from common.units import gib


def estimate_table(data: dict) -> str:
    """The readable breakdown `fitplan estimate` prints."""
    per_gpu, cfg = data["per_gpu"], data["config"]
    lines = [f"{data['model']}: {data['params_total']:,} parameters, {data['params_trainable']:,} trainable",
             "  " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("lora_targets",)),
             "", f"  {'component':<22}{'per GPU':>14}"]
    for name, value in per_gpu["components"].items():
        lines.append(f"  {name:<22}{gib(value):>14}")
    lines += [f"  {'allocated peak':<22}{gib(per_gpu['allocated_peak_bytes']):>14}   in {per_gpu['peak_phase']}",
              f"  {'reserved peak':<22}{gib(per_gpu['reserved_peak_bytes']):>14}   allocator cache",
              f"  {'CUDA context':<22}{gib(per_gpu['cuda_context_bytes']):>14}"]
    if per_gpu["paged_bytes"]:
        lines.append(f"  {'paged optimizer':<22}{gib(per_gpu['paged_bytes']):>14}   managed memory")
    lines.append(f"  {'total':<22}{gib(per_gpu['total_bytes']):>14}")
    if data["cpu_bytes"]:
        lines.append(f"  {'CPU (offloaded)':<22}{gib(data['cpu_bytes']):>14}")
    phases = "  ".join(f"{p} {gib(v)}" for p, v in per_gpu["phases"].items())
    lines += ["", f"  phases: {phases}"]
    if "gpu" in data:
        gpu = data["gpu"]
        verdict = "fits" if data["fits"] else "does NOT fit"
        lines.append(f"  {verdict} on {gpu['name']} ({gib(gpu['memory_bytes'])})")
    return "\n".join(lines)


def plan_table(data: dict) -> str:
    """The readable table `fitplan plan` prints."""
    hw = data["hardware"]
    gpu = hw["gpus"][0] if hw["gpus"] else {"name": "?", "memory_bytes": 0}
    lines = [f"{data['model']} on {len(hw['gpus'])} x {gpu['name']} ({gib(gpu['memory_bytes'])})"
             + (f" x {hw['nodes']} nodes" if hw["nodes"] > 1 else "") + f", {hw['source']}"]
    for warning in data.get("warnings", []):
        lines.append(f"  note: {warning}")
    header = f"  {'':2}{'method':<7}{'precision':<11}{'shard':<7}{'offload':<10}{'ckpt':<5}{'mb':>4}{'accum':>6}" \
             f"{'peak/GPU':>12}{'headroom':>12}{'tok/s':>10}{'time':>9}{'cost':>9}"
    if data["plans"]:
        lines += ["", header]
    for p in data["plans"]:
        mark = "*" if p["recommended"] else ""
        lines.append(f"  {mark:<2}{p['method']:<7}{p['precision']:<11}{p['sharding']:<7}{p['offload']:<10}"
                     f"{'yes' if p['grad_ckpt'] else 'no':<5}{p['micro_batch']:>4}{p['grad_accum']:>6}"
                     f"{gib(p['per_gpu']['total_bytes']):>12}{gib(p['headroom_bytes']):>12}"
                     f"{_num(p['tokens_per_s']):>10}{_hours(p['time_s']):>9}{_usd(p['cost_usd']):>9}")
    lines.append("")
    if data["recommended"] is not None:
        lines.append(f"  * recommended: {data['reason']}")
    else:
        nf = data["nothing_fits"]
        lines.append(f"  Nothing fits: the smallest plan needs {gib(nf['min_total_bytes'])} per GPU, "
                     f"{gib(nf['usable_bytes'])} is usable.")
        lines += [f"  - {s}" for s in nf["suggestions"]]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "N/A" if x is None else f"{x:,.0f}"


def _hours(s: float | None) -> str:
    return "N/A" if s is None else f"{s / 3600:.1f} h"


def _usd(x: float | None) -> str:
    return "N/A" if x is None else f"${x:,.0f}"


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
