"""The plan search: method x precision x checkpointing x sharding x offload x GPU count, with the
largest micro-batch that fits found by bisection on the (monotone) memory model."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Iterator

from planner.calibration import Overhead
from planner.config import TrainConfig
from planner.enums import Method, Offload, Precision, Sharding
from planner.hardware import Hardware
from planner.memory import Estimate, estimate
from planner.perf import Speed, step_speed
from planner.rules import card_problem, unsupported
from profiles.spec import ModelSpec

MAX_MICRO_BATCH = 1024
PREFERENCES = ("balanced", "speed", "quality", "memory")


@dataclass(frozen=True)
class Request:
    spec: ModelSpec
    base: TrainConfig              # what the user fixed, on TrainConfig's defaults
    fixed: frozenset[str]          # names of the fields the user fixed
    exact_params: int | None = None
    global_batch: int | None = None
    margin: float = 0.10
    prefer: str = "balanced"
    tokens: int | None = None      # dataset tokens per epoch, for time and cost
    epochs: float = 1.0
    interconnect: str | None = None  # --interconnect: links within / between nodes (None: the card's defaults)


@dataclass(frozen=True)
class Plan:
    cfg: TrainConfig
    estimate: Estimate
    total_bytes: int
    speed: Speed
    time_s: float | None
    cost_usd: float | None


@dataclass(frozen=True)
class NothingFits:
    """Why no plan fits: what the libraries cannot run, or how much the smallest plan needs against what is
    usable, and the nearest ways out (sentences naming options with `opt`)."""

    usable_bytes: int
    min_total_bytes: int | None = None
    unsupported: str | None = None
    suggestions: tuple[str, ...] = ()


@dataclass
class SearchResult:
    plans: list[Plan]
    recommended: int | None
    reason: str
    nothing_fits: NothingFits | None = None
    warnings: list[str] = field(default_factory=list)


def usable_bytes(hw: Hardware, margin: float) -> int:
    """What a plan may use per GPU: free memory less the safety margin of the card."""
    return int(hw.card.free_bytes - margin * hw.card.memory_bytes)


def total_bytes(est: Estimate, overhead: Overhead) -> int:
    return overhead.total(est.allocated_peak_bytes, est.paged_bytes, est.cfg.world_size)


@lru_cache(maxsize=65536)
def cached_estimate(spec: ModelSpec, cfg: TrainConfig, exact_params: int | None) -> Estimate:
    return estimate(spec, cfg, exact_params)


def with_global_batch(cfg: TrainConfig, global_batch: int | None) -> TrainConfig:
    """Gradient accumulation for the global batch asked for (rounded up to whole micro-batches on every GPU)."""
    if not global_batch:
        return cfg
    return cfg.with_(grad_accum=max(1, -(-global_batch // (cfg.micro_batch * cfg.world_size))))


def max_micro_batch(req: Request, cfg: TrainConfig, hw: Hardware, limit: int = MAX_MICRO_BATCH) -> int:
    """Largest micro-batch whose total fits, by doubling then bisection; 0 when even 1 does not. Below the
    whole batch per GPU, gradients carried between micro-batches cost the same at every size, so memory
    grows with the micro-batch; the whole batch at once carries none, so it is tried on its own first."""
    budget = usable_bytes(hw, req.margin)

    def fits(b: int) -> bool:
        est = cached_estimate(req.spec, with_global_batch(replace(cfg, micro_batch=b), req.global_batch),
                              req.exact_params)
        return total_bytes(est, hw.card.overhead) <= budget

    whole_batch = with_global_batch(replace(cfg, micro_batch=limit), req.global_batch)
    if req.global_batch and whole_batch.grad_accum == 1 and fits(limit):
        return limit
    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= limit and fits(high):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def candidates(req: Request, hw: Hardware) -> Iterator[TrainConfig]:
    """Every configuration worth trying, micro-batch aside, honouring what the user fixed."""
    def pick(name: str, options: list) -> list:
        return [getattr(req.base, name)] if name in req.fixed else options

    for method in pick("method", list(Method)):
        for precision in pick("precision", _precisions(method, hw)):
            for gpus in pick("gpus", _gpu_counts(hw)):
                world = gpus * hw.nodes
                for sharding in pick("sharding", _shardings(world, "offload" in req.fixed)):
                    for offload in pick("offload", _offloads(sharding)):
                        for ckpt in pick("grad_ckpt", [False, True]):
                            yield replace(req.base, method=method, precision=precision, gpus=gpus,
                                          nodes=hw.nodes, sharding=sharding, offload=offload, grad_ckpt=ckpt)


def _precisions(method: Method, hw: Hardware) -> list[Precision]:
    if not hw.card.bf16:
        return [Precision.FP16_MIXED]
    return [Precision.BF16_TRUE] if method is not Method.FULL else [Precision.BF16_TRUE, Precision.BF16_MIXED]


def _gpu_counts(hw: Hardware) -> list[int]:
    counts = {hw.gpus_per_node}
    counts.update(2**k for k in range(int(math.log2(hw.gpus_per_node)) + 1))
    return sorted(counts)


def _shardings(world: int, offload_asked: bool) -> list[Sharding]:
    if world == 1:  # DeepSpeed offloads on one GPU too, when asked to
        return [Sharding.ZERO2, Sharding.ZERO3] if offload_asked else [Sharding.NONE]
    return [Sharding.DDP, Sharding.ZERO2, Sharding.ZERO3, Sharding.FSDP]


def _offloads(sharding: Sharding) -> list[Offload]:
    if sharding.shards_params:
        return [Offload.NONE, Offload.OPTIMIZER, Offload.PARAMS]
    if sharding.is_zero:
        return [Offload.NONE, Offload.OPTIMIZER]
    return [Offload.NONE]


def make_plan(req: Request, cfg: TrainConfig, hw: Hardware) -> Plan:
    """A plan for one configuration whose micro-batch is set: gradient accumulation, speed, cost."""
    cfg = with_global_batch(cfg, req.global_batch)
    est = cached_estimate(req.spec, cfg, req.exact_params)
    card = hw.card
    speed = step_speed(req.spec, cfg, est.counts, card, req.interconnect)
    time_s = req.tokens * req.epochs / speed.tokens_per_s if req.tokens else None
    cost = None
    if time_s is not None and card.price_usd_per_hour is not None:
        cost = time_s / 3600 * card.price_usd_per_hour * cfg.world_size
    return Plan(cfg=cfg, estimate=est, total_bytes=total_bytes(est, card.overhead), speed=speed,
                time_s=time_s, cost_usd=cost)


def feasible_plans(req: Request, hw: Hardware) -> list[Plan]:
    plans = []
    for cfg in candidates(req, hw):
        if unsupported(req.spec, cfg) or card_problem(cfg, hw.card):
            continue
        limit = MAX_MICRO_BATCH
        if req.global_batch:
            limit = max(1, req.global_batch // cfg.world_size)  # no point in more per GPU than the batch
        if "micro_batch" in req.fixed:
            fits = max_micro_batch(req, replace(cfg, micro_batch=1), hw, req.base.micro_batch)
            best = req.base.micro_batch if fits >= req.base.micro_batch else 0
        else:
            best = _dividing(max_micro_batch(req, cfg, hw, limit), req.global_batch, cfg.world_size)
        if best:
            plans.append(make_plan(req, replace(cfg, micro_batch=best), hw))
    return plans


def _dividing(micro_batch: int, global_batch: int | None, world: int) -> int:
    """The largest micro-batch up to `micro_batch` that makes the global batch exactly, where one does."""
    if not micro_batch or not global_batch or global_batch % world:
        return micro_batch
    per_gpu = global_batch // world
    return max(b for b in range(1, micro_batch + 1) if per_gpu % b == 0)
