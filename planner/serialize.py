"""The JSON contract (docs/json.md) of the planner's typed answers: pure functions from results to dicts,
called only where output is printed or written. All sizes are bytes per GPU."""
from __future__ import annotations

from common.errors import spelled
from planner.calibration import Overhead
from planner.config import TrainConfig
from planner.hardware import Hardware
from planner.memory import COMPONENTS, Estimate
from planner.recommend import shown_speed
from planner.search import NothingFits, Plan, SearchResult, usable_bytes
from planner.timeline import Point, peak_index, timeline


def per_gpu_dict(est: Estimate, overhead: Overhead) -> dict:
    return {
        **overhead_fields(overhead, est.allocated_peak_bytes, est.paged_bytes, est.cfg.world_size),
        "peak_phase": est.peak_phase.value,
        "components": {name: est.components[name] for name in COMPONENTS},
        "phases": {phase.value: sum(parts.values()) for phase, parts in est.phases.items()},
    }


def overhead_fields(overhead: Overhead, allocated: int, paged: int, processes: int) -> dict:
    """The byte counts of `per_gpu` around an allocated peak: what the allocator, CUDA and NCCL add, the total."""
    return {
        "allocated_peak_bytes": allocated,
        "reserved_peak_bytes": overhead.reserved(allocated),
        "cuda_context_bytes": overhead.context_bytes,
        "communicator_bytes": overhead.communicator(processes),
        "paged_bytes": paged,
        "total_bytes": overhead.total(allocated, paged, processes),
    }


def config_dict(cfg: TrainConfig) -> dict:
    out = cfg.to_dict()
    if not cfg.uses_adapters:
        for key in ("lora_r", "lora_alpha", "lora_targets"):
            out.pop(key)
    if cfg.method.value != "qlora":
        out.pop("double_quant")
    if cfg.world_size == 1 and not cfg.sharding.is_zero:   # the engines' settings matter only where they run
        out.pop("engine")
    return out


def estimate_dict(evaluation) -> dict:
    """`estimate --json` of a `planner.api.Evaluation`."""
    est = evaluation.estimate
    out = {
        "model": evaluation.model.spec.name,
        "params_total": est.counts.total,
        "params_trainable": est.counts.trainable,
        "config": config_dict(est.cfg),
        "per_gpu": per_gpu_dict(est, evaluation.overhead),
        "cpu_bytes": est.cpu_bytes,
        "calibration": evaluation.overhead.source,
        "warnings": [spelled(w) for w in evaluation.warnings],
    }
    if evaluation.hardware is not None:
        card = evaluation.hardware.card
        out["fits"] = evaluation.fits
        out["gpu"] = {"name": card.name, "memory_bytes": card.memory_bytes, "count": evaluation.hardware.world_size}
        out["usable_bytes"] = evaluation.usable_bytes
        out["margin"] = evaluation.margin
    return out


def timeline_dict(evaluation) -> dict:
    """`estimate --json` of a `planner.api.Evaluation` with "timeline": every moment of its training step."""
    points = timeline(evaluation.estimate)
    peak = peak_index(points)
    return {**estimate_dict(evaluation),
            "timeline": {"components": list(COMPONENTS), "points": [_point_dict(p) for p in points],
                         "peak": {"index": peak, **_point_dict(points[peak])}}}


def _point_dict(point: Point) -> dict:
    return {"step": point.step, "phase": point.phase.value, "layer": point.layer,
            "allocated_bytes": point.total, "components": {name: point.components[name] for name in COMPONENTS}}


def plan_entry(p: Plan, hw: Hardware, recommended: bool) -> dict:
    """One plan of `plan --json`."""
    cfg, known = p.cfg, hw.card.rates_known
    return {
        "method": cfg.method.value, "precision": cfg.precision.value, "optimizer": cfg.optimizer.value,
        "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum, "seq_len": cfg.seq_len,
        "global_batch": cfg.micro_batch * cfg.grad_accum * cfg.world_size,
        "grad_ckpt": cfg.grad_ckpt, "attn": cfg.attn.value, "sharding": cfg.sharding.value,
        "offload": cfg.offload.value, "gpus": cfg.gpus, "nodes": cfg.nodes,
        **({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_targets": list(cfg.lora_targets)}
           if cfg.uses_adapters else {}),
        "per_gpu": per_gpu_dict(p.estimate, hw.card.overhead),
        "headroom_bytes": hw.card.memory_bytes - p.total_bytes,
        "cpu_bytes": p.estimate.cpu_bytes,
        "tokens_per_s": shown_speed(p) if known else None,
        "step_time_s": round(p.speed.step_time_s, 4) if known else None,
        "time_s": round(p.time_s, 1) if known and p.time_s is not None else None,
        "cost_usd": round(p.cost_usd, 2) if known and p.cost_usd is not None else None,
        "time_breakdown": time_breakdown(p) if known else None,
        "recommended": recommended,
    }


def time_breakdown(p: Plan) -> dict:
    """Seconds of one optimizer step by mechanism (planner.perf.PARTS); they sum to step_time_s."""
    return {part: round(seconds, 6) for part, seconds in p.speed.breakdown}


def hardware_dict(hw: Hardware) -> dict:
    cards = hw.cards or (hw.card,) * hw.gpus_per_node
    return {"source": hw.source, "nodes": hw.nodes,
            "gpus": [{"name": c.name, "memory_bytes": c.memory_bytes, "free_bytes": c.free_bytes} for c in cards]}


def plan_dict(model: str, hw: Hardware, result: SearchResult, margin: float) -> dict:
    """`plan --json`."""
    return {
        "model": model,
        "hardware": hardware_dict(hw),
        "usable_bytes": usable_bytes(hw, margin),
        "margin": margin,
        "plans": [plan_entry(p, hw, i == result.recommended) for i, p in enumerate(result.plans)],
        "recommended": result.recommended,
        "reason": spelled(result.reason),
        "nothing_fits": result.nothing_fits and _spelled_nothing_fits(result.nothing_fits),
        "calibration": hw.card.overhead.source,
        "warnings": [spelled(w) for w in [*hw.warnings, *result.warnings]],
    }


def _spelled_nothing_fits(nothing: NothingFits) -> dict:
    return {"unsupported": nothing.unsupported and spelled(nothing.unsupported),
            "min_total_bytes": nothing.min_total_bytes, "usable_bytes": nothing.usable_bytes,
            "suggestions": [spelled(s) for s in nothing.suggestions]}
