"""Estimate -> the JSON contract and readable tables. Pure functions returning strings and dicts."""
from __future__ import annotations

from planner.config import TrainConfig
from planner.calibration import Overhead
from planner.memory import COMPONENTS, Estimate

GIB = 2**30


def gib(n: int | float | None) -> str:
    return "N/A" if n is None else f"{n / GIB:.2f} GiB"


def per_gpu_dict(est: Estimate, overhead: Overhead) -> dict:
    allocated = est.allocated_peak_bytes
    reserved = overhead.reserved(allocated)
    return {
        "allocated_peak_bytes": allocated,
        "reserved_peak_bytes": reserved,
        "cuda_context_bytes": overhead.context_bytes,
        "paged_bytes": est.paged_bytes,
        "total_bytes": reserved + overhead.context_bytes + est.paged_bytes,
        "peak_phase": est.peak_phase.value,
        "components": {name: est.components[name] for name in COMPONENTS},
        "phases": {phase.value: sum(parts.values()) for phase, parts in est.phases.items()},
    }


def config_dict(cfg: TrainConfig) -> dict:
    out = cfg.to_dict()
    if not cfg.uses_adapters:
        for key in ("lora_r", "lora_alpha", "lora_targets"):
            out.pop(key)
    if cfg.method.value != "qlora":
        out.pop("double_quant")
    return out


def estimate_dict(model: str, est: Estimate, overhead: Overhead, gpu: dict | None) -> dict:
    per_gpu = per_gpu_dict(est, overhead)
    out = {
        "model": model,
        "params_total": est.counts.total,
        "params_trainable": est.counts.trainable,
        "config": config_dict(est.cfg),
        "per_gpu": per_gpu,
        "cpu_bytes": est.cpu_bytes,
        "calibration": overhead.source,
    }
    if gpu is not None:
        out["fits"] = per_gpu["total_bytes"] <= gpu["memory_bytes"]
        out["gpu"] = gpu
    return out


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


def plan_entry(p, overhead, target, recommended: bool) -> dict:
    """One plan of `plan --json`."""
    cfg = p.cfg
    known = target.rates_known
    return {
        "method": cfg.method.value, "precision": cfg.precision.value, "optimizer": cfg.optimizer.value,
        "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum, "seq_len": cfg.seq_len,
        "grad_ckpt": cfg.grad_ckpt, "attn": cfg.attn.value, "sharding": cfg.sharding.value,
        "offload": cfg.offload.value, "gpus": cfg.gpus, "nodes": cfg.nodes,
        **({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_targets": list(cfg.lora_targets)}
           if cfg.uses_adapters else {}),
        "per_gpu": per_gpu_dict(p.estimate, overhead),
        "headroom_bytes": target.memory_bytes - p.total_bytes,
        "cpu_bytes": p.estimate.cpu_bytes,
        "tokens_per_s": round(p.speed.tokens_per_s, 1) if known else None,
        "step_time_s": round(p.speed.step_time_s, 4) if known else None,
        "time_s": round(p.time_s, 1) if known and p.time_s is not None else None,
        "cost_usd": round(p.cost_usd, 2) if known and p.cost_usd is not None else None,
        "recommended": recommended,
    }


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
