"""From feasible plans to the ones shown and the one recommended, or, when nothing fits, what would."""
from __future__ import annotations

from dataclasses import replace

from common.errors import opt
from common.units import GiB
from planner.enums import Loss, Method, Offload, Optimizer, Precision, Sharding
from planner.hardware import Hardware, catalog_hardware
from planner.rules import card_problem, unsupported
from planner.search import (NothingFits, Plan, Request, SearchResult, cached_estimate, candidates, feasible_plans,
                            total_bytes, usable_bytes)
from profiles.gpus import CATALOG as GPU_CATALOG


def _plan(req: Request, hw: Hardware) -> SearchResult:
    plans = feasible_plans(req, hw)
    if not plans:
        why = unsupported_everywhere(req, hw)
        if why:
            return SearchResult(plans=[], recommended=None, reason=why,
                                nothing_fits=NothingFits(usable_bytes(hw, req.margin), unsupported=why))
        return SearchResult(plans=[], recommended=None, reason="Nothing fits.", nothing_fits=nothing_fits(req, hw))
    shown = _shown(plans)
    best, reason = choose(shown, req)
    return SearchResult(plans=shown, recommended=shown.index(best), reason=reason)


def unsupported_everywhere(req: Request, hw: Hardware) -> str | None:
    """When every configuration the request allows is one the libraries cannot run: the first reason why."""
    reasons = [unsupported(req.spec, cfg) or card_problem(cfg, hw.card) for cfg in candidates(req, hw)]
    return reasons[0] if reasons and all(reasons) else None


def _shown(plans: list[Plan]) -> list[Plan]:
    """The fastest plan of each method and sharding strategy, fastest first within a method."""
    best: dict[tuple, Plan] = {}
    for p in plans:
        key = (p.cfg.method, p.cfg.sharding)
        if key not in best or _faster(p, best[key]):
            best[key] = p
    order = {Method.FULL: 0, Method.LORA: 1, Method.QLORA: 2}
    return sorted(best.values(), key=lambda p: (order[p.cfg.method], -p.speed.tokens_per_s))


def _faster(a: Plan, b: Plan) -> bool:
    return (a.speed.tokens_per_s, -a.total_bytes) > (b.speed.tokens_per_s, -b.total_bytes)


def plan(req: Request, hw: Hardware) -> SearchResult:
    """The plans shown for `req` on `hw`, the recommended one and why, or what would fit."""
    result = _plan(req, hw)
    if result.recommended is not None:
        result.reason = f"{result.reason} {needs(result.plans[result.recommended])}"
    return result


SHARDING_NAMES = {Sharding.DDP: "DDP", Sharding.ZERO1: "ZeRO-1", Sharding.ZERO2: "ZeRO-2", Sharding.ZERO3: "ZeRO-3",
                  Sharding.FSDP: "FSDP2", Sharding.FSDP1: "FSDP1"}
METHOD_NAMES = {Method.FULL: "full fine-tuning", Method.LORA: "LoRA", Method.QLORA: "QLoRA"}


def needs(p: Plan) -> str:
    """What the chosen plan asks of the hardware, in one sentence."""
    cfg = p.cfg
    how = "" if cfg.sharding is Sharding.NONE else f" with {SHARDING_NAMES[cfg.sharding]}"
    if cfg.offload is not Offload.NONE:
        how += f" and {cfg.offload.value} offload ({p.estimate.cpu_bytes / GiB:.0f} GiB of host memory per GPU)"
    where = f"on each of {cfg.world_size} GPUs" if cfg.world_size > 1 else "on one GPU"
    return f"It needs {p.total_bytes / GiB:.1f} GiB {where}{how}."


def choose(plans: list[Plan], req: Request) -> tuple[Plan, str]:
    """The field's rule of thumb: LoRA when it fits (16-bit base weights, near full fine-tuning quality),
    QLoRA when memory binds, full fine-tuning when asked for the quality ceiling. The reason quotes the plans
    it compares, so it never contradicts the table."""
    by_method = {m: [p for p in plans if p.cfg.method is m] for m in Method}
    fastest = max(plans, key=_speed)
    if req.prefer == "speed":
        return fastest, f"Fastest plan that fits ({opt('prefer')} speed)."
    if req.prefer == "memory":
        small = min(plans, key=lambda p: p.total_bytes)
        return small, f"Smallest memory footprint ({opt('prefer')} memory): {small.total_bytes / GiB:.1f} GiB per GPU."
    if req.prefer == "quality" and by_method[Method.FULL]:
        best = max(by_method[Method.FULL], key=_speed)
        return best, f"Full fine-tuning fits, and it has the highest quality ceiling ({opt('prefer')} quality)."
    if "method" in req.fixed:
        return fastest, f"The fastest {METHOD_NAMES[req.base.method]} plan, as asked."
    if by_method[Method.LORA]:
        return _lora_reason(max(by_method[Method.LORA], key=_speed), by_method[Method.QLORA])
    if by_method[Method.QLORA]:
        return max(by_method[Method.QLORA], key=_speed), "Memory binds: LoRA does not fit, QLoRA's 4-bit base weights do."
    return fastest, "Only full fine-tuning fits."


def _lora_reason(lora: Plan, qloras: list[Plan]) -> tuple[Plan, str]:
    why = "LoRA fits and keeps the base weights in 16 bit (no 4-bit quantization error)"
    if not qloras:
        return lora, why + "."
    ours, theirs = shown_speed(lora), shown_speed(max(qloras, key=_speed))
    if ours >= theirs:
        than = "faster than" if ours > theirs else "as fast as"
        return lora, f"{why}, and it is {than} QLoRA here ({ours:,} against {theirs:,} tokens/s)."
    gain = theirs / ours - 1
    return lora, (f"{why}; QLoRA would be {'<1%' if gain < 0.005 else f'{gain:.0%}'} faster here "
                  f"({theirs:,} against {ours:,} tokens/s) at that cost in quality.")


def _speed(p: Plan) -> float:
    return p.speed.tokens_per_s


def shown_speed(p: Plan) -> int:
    """Tokens/s as the table and the JSON show them (whole), so a reason quotes the table's numbers."""
    return round(p.speed.tokens_per_s)


def nothing_fits(req: Request, hw: Hardware) -> NothingFits:
    """What the smallest plan needs, and the nearest ways out."""
    smallest = _smallest_total(req, hw)
    ways = (_shorter_sequence, _try_qlora, _cheaper_optimizer, _fused_loss, _lighter_precision, _more_gpus, _offload,
            _bigger_card)
    suggestions = tuple(s for s in (way(req, hw) for way in ways) if s)
    return NothingFits(usable_bytes(hw, req.margin), min_total_bytes=smallest,
                       suggestions=suggestions or ("No catalog card or GPU count fits this model: "
                                                   "try a smaller model of the same family.",))


def _smallest_total(req: Request, hw: Hardware) -> int:
    """The least any candidate needs, at the micro-batch asked for (else 1)."""
    batch = req.base.micro_batch if "micro_batch" in req.fixed else 1
    totals = (total_bytes(cached_estimate(req.spec, replace(cfg, micro_batch=batch), req.exact_params), hw.card.overhead)
              for cfg in candidates(req, hw))
    return min(totals, default=0)


def _fits_any(req: Request, hw: Hardware) -> bool:
    return bool(feasible_plans(req, hw))


def _shorter_sequence(req: Request, hw: Hardware) -> str | None:
    seq = req.base.seq_len // 2
    while seq >= 128:
        trial = replace(req, base=replace(req.base, seq_len=seq), fixed=req.fixed | {"seq_len"})
        if _fits_any(trial, hw):
            return f"A sequence length of {seq} tokens fits ({opt('seq_len')} {seq})."
        seq //= 2
    return None


def _try_qlora(req: Request, hw: Hardware) -> str | None:
    if "method" not in req.fixed or req.base.method is Method.QLORA:
        return None
    trial = replace(req, base=replace(req.base, method=Method.QLORA), fixed=req.fixed)
    return f"QLoRA fits ({opt('method')} qlora)." if _fits_any(trial, hw) else None


def _cheaper_optimizer(req: Request, hw: Hardware) -> str | None:
    """8-bit AdamW keeps 2 bytes of state per trained parameter instead of 4 to 8."""
    if req.base.optimizer is not Optimizer.ADAMW:
        return None
    for optimizer in (Optimizer.ADAMW_8BIT, Optimizer.PAGED_ADAMW_8BIT):
        trial = replace(req, base=replace(req.base, optimizer=optimizer), fixed=req.fixed | {"optimizer"})
        if _fits_any(trial, hw):
            return f"8-bit AdamW states fit ({opt('optimizer')} {optimizer.value})."
    return None


def _fused_loss(req: Request, hw: Hardware) -> str | None:
    """A fused linear cross-entropy (Liger) never materialises the logits, often the largest activation."""
    if req.base.loss is not Loss.STANDARD:
        return None
    trial = replace(req, base=replace(req.base, loss=Loss.LIGER), fixed=req.fixed | {"loss"})
    return f"Liger's fused cross-entropy fits ({opt('loss')} liger)." if _fits_any(trial, hw) else None


def _lighter_precision(req: Request, hw: Hardware) -> str | None:
    """bf16-true keeps weights, gradients and states in 16 bit, where *-mixed and fp32 keep fp32 copies."""
    if "precision" not in req.fixed or req.base.precision is Precision.BF16_TRUE or not hw.card.bf16:
        return None
    trial = replace(req, base=replace(req.base, precision=Precision.BF16_TRUE))
    return f"bf16-true fits ({opt('precision')} bf16-true)." if _fits_any(trial, hw) else None


def _more_gpus(req: Request, hw: Hardware) -> str | None:
    per_node = max(hw.gpus_per_node, 8) if hw.gpus_per_node > 1 else 8
    for nodes in (1, 2, 4, 8, 16):
        gpus = per_node if nodes > 1 else None
        for count in ([2, 4, 8] if gpus is None else [per_node]):
            bigger = hw.with_counts(count, nodes)
            trial = replace(req, base=replace(req.base, sharding=Sharding.ZERO3, gpus=count, nodes=nodes),
                            fixed=req.fixed | {"sharding", "gpus"})
            if count * nodes > hw.world_size and _fits_any(trial, bigger):
                where = f"{count} GPUs" if nodes == 1 else f"{nodes} nodes of {count} GPUs"
                return f"{where} of this card with ZeRO-3 fit ({opt('gpus')} {count} {opt('nodes')} {nodes} {opt('sharding')} zero3)."
    return None


def _offload(req: Request, hw: Hardware) -> str | None:
    if req.base.offload is Offload.PARAMS and "offload" in req.fixed:
        return None
    trial = replace(req, base=replace(req.base, offload=Offload.PARAMS, sharding=Sharding.ZERO3),
                    fixed=req.fixed | {"offload", "sharding"})
    plans = feasible_plans(trial, hw)
    if not plans:
        return None
    host = min(p.estimate.cpu_bytes for p in plans) * hw.gpus_per_node  # per node
    return (f"ZeRO-3 with parameters and optimizer states offloaded to CPU fits, if each node has "
            f"{host / GiB:.0f} GiB of host memory to spare ({opt('sharding')} zero3 {opt('offload')} params).")


def _bigger_card(req: Request, hw: Hardware) -> str | None:
    """The cheapest catalog card with more memory on which the request fits."""
    for spec in sorted(GPU_CATALOG, key=lambda g: (g.price_usd_per_hour, g.memory_bytes)):
        bigger = catalog_hardware(spec, hw.gpus_per_node, hw.nodes)
        if spec.memory_bytes > hw.card.memory_bytes and _fits_any(req, bigger):
            return (f"The cheapest bigger card that fits: {spec.name}, {spec.memory_bytes / GiB:.0f} GiB at about "
                    f"${spec.price_usd_per_hour:.2f}/h ({opt('gpu')} \"{spec.name}\").")
    return None
