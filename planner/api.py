"""What the commands call: resolve inputs, run the pure model, shape the result per the JSON contract."""
from __future__ import annotations

from planner.activations import attention_kernel
from planner.calibration import overhead_for
from planner.errors import UserError
from planner.support import unsupported
from planner.config import TrainConfig
from planner.memory import estimate
from planner.model_input import resolve_model
from planner.report import estimate_dict


def estimate_model(model: str, cfg: TrainConfig, gpu: str | None = None) -> dict:
    """`estimate --json` for MODEL under cfg; with a named or probed GPU, also whether it fits."""
    resolved = resolve_model(model)
    cfg = cfg.with_(attn=attention_kernel(resolved.spec, cfg))  # what transformers will really run
    reason = unsupported(resolved.spec, cfg)
    if reason:
        raise UserError(reason)
    est = estimate(resolved.spec, cfg, resolved.exact_params)
    card = _card(gpu)
    overhead = overhead_for(card["name"] if card else None, card.get("compute_capability") if card else None)
    gpu_out = {"name": card["name"], "memory_bytes": card["memory_bytes"]} if card else None
    return estimate_dict(resolved.spec.name, est, overhead, gpu_out)


def _card(gpu: str | None) -> dict | None:
    """A named catalog card, else the first GPU NVML finds, else None (estimate needs no GPU)."""
    from planner.hardware import hardware_from_catalog, hardware_from_probe
    from planner.nvml import probe

    if gpu:
        hw = hardware_from_catalog(gpu)
    else:
        found = probe()
        if not found.gpus:
            return None
        hw = hardware_from_probe(found)
    first = hw.gpu
    return {"name": first.name, "memory_bytes": first.memory_bytes, "compute_capability": first.compute_capability}


def plan_model(model: str, options: dict, *, gpu: str | None = None, global_batch: int | None = None,
               margin: float = 0.10, prefer: str = "balanced", tokens: int | None = None,
               epochs: float = 1.0, nvml=None) -> dict:
    """`plan --json`: the feasible plans of MODEL on the named or probed hardware."""
    from planner.hardware import resolve_hardware
    from planner.recommend import plan
    from planner.targets import target_from_hardware

    resolved = resolve_model(model)
    hw = resolve_hardware(gpu, options.get("gpus"), options.get("nodes") or 1, nvml=nvml)
    req = build_request(resolved, options, global_batch=global_batch, margin=margin, prefer=prefer,
                        tokens=tokens, epochs=epochs)
    target = target_from_hardware(hw)
    result = plan(req, target)
    return plan_dict(resolved.spec.name, hw, target, result)


def build_request(resolved, options: dict, **extra):
    from planner.options import config_from_options
    from planner.search import Request

    fixed = {key for key, value in options.items() if value is not None and key in TrainConfig.__dataclass_fields__}
    if (options.get("method") or "").lower() == "auto":
        fixed.discard("method")
    fixed.discard("nodes")  # the hardware decides the nodes
    clean = {k: v for k, v in options.items() if not (k == "method" and (v or "").lower() == "auto")}
    try:
        base = config_from_options(clean)
    except ValueError as err:
        raise UserError(str(err)) from None
    base = base.with_(attn=attention_kernel(resolved.spec, base))  # what transformers will really run
    return Request(spec=resolved.spec, base=base, fixed=frozenset(fixed), exact_params=resolved.exact_params,
                   **extra)


def plan_dict(model: str, hw, target, result) -> dict:
    from planner.report import plan_entry

    plans = [plan_entry(p, target.overhead, target, i == result.recommended) for i, p in enumerate(result.plans)]
    return {
        "model": model,
        "hardware": {"source": hw.source, "nodes": hw.nodes,
                     "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes, "free_bytes": g.free_bytes}
                              for g in hw.gpus]},
        "plans": plans,
        "recommended": result.recommended,
        "reason": result.reason,
        "nothing_fits": result.nothing_fits,
        "calibration": target.overhead.source,
        "warnings": hw.warnings + result.warnings,
    }
