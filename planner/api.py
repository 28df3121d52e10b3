"""What front ends call (the command line, the launcher, the web page, exact mode): typed answers for a MODEL
argument on some hardware. No printing and no JSON here: `planner.serialize` shapes answers at the edge."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from common.errors import DoesNotFitError, UnsupportedError
from common.units import GiB
from planner.activations import attention_kernel
from planner.calibration import Overhead, overhead_for
from planner.config import TrainConfig
from planner.enums import Method, Offload, Sharding
from planner.hardware import Card, Hardware, hardware_from_catalog, hardware_from_probe
from planner.memory import Estimate, estimate
from planner.model_input import ResolvedModel, resolve_model
from planner.nvml import probe
from planner.recommend import plan, unsupported_everywhere
from planner.search import NothingFits, Plan, Request, SearchResult, feasible_plans, usable_bytes, with_global_batch
from planner.rules import adapted_to_card, card_problem, unsupported
from profiles.spec import ModelSpec

DEFAULT_MARGIN = 0.10   # the share of each card kept free: one margin for every command


@dataclass(frozen=True)
class Evaluation:
    """One configuration of one model on one GPU: its estimate and what must fit on the card."""

    model: ResolvedModel
    estimate: Estimate
    overhead: Overhead
    hardware: Hardware | None = None
    margin: float = DEFAULT_MARGIN
    warnings: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.overhead.total(self.estimate.allocated_peak_bytes, self.estimate.paged_bytes,
                                   self.estimate.cfg.world_size)

    @property
    def usable_bytes(self) -> int | None:
        return usable_bytes(self.hardware, self.margin) if self.hardware else None

    @property
    def fits(self) -> bool | None:
        """The one test of fitting, everywhere: the total within the card's free memory less the margin."""
        return None if self.hardware is None else self.total_bytes <= self.usable_bytes


def runnable(model: ResolvedModel, cfg: TrainConfig, card: Card | None = None) -> TrainConfig:
    """cfg as it will really run (the attention kernel transformers picks; several GPUs without sharding are
    DDP, which is what Accelerate launches), or UnsupportedError saying why it cannot."""
    cfg = cfg.with_(attn=attention_kernel(model.spec, cfg))
    if cfg.world_size > 1 and cfg.sharding is Sharding.NONE:
        cfg = cfg.with_(sharding=Sharding.DDP)
    reason = unsupported(model.spec, cfg) or (card_problem(cfg, card) if card else None)
    if reason:
        raise UnsupportedError(reason)
    return cfg


def evaluate(model: ResolvedModel | str, cfg: TrainConfig, hardware: Hardware | None = None,
             margin: float = DEFAULT_MARGIN, fixed: frozenset[str] = frozenset({"precision"})) -> Evaluation:
    """The per-GPU memory of one configuration, and with hardware whether it fits. `fixed`: the fields the
    user set; the others may be switched to what the card runs (with a word)."""
    model = resolve_model(model) if isinstance(model, str) else model
    card = hardware.card if hardware else None
    cfg, notes = adapted_to_card(model.spec, cfg, card, fixed)
    cfg = runnable(model, cfg, card)
    overhead = card.overhead if card else overhead_for(None)
    return Evaluation(model, estimate(model.spec, cfg, model.exact_params), overhead, hardware, margin, tuple(notes))


def card_for_estimate(gpu: str | None, gpus: int | None = None, nodes: int = 1) -> Hardware | None:
    """A named catalog card, else the GPUs NVML finds, else None: an estimate needs no GPU."""
    if gpu:
        return hardware_from_catalog(gpu, nodes, gpus)
    found = probe()
    return hardware_from_probe(found, nodes, os.environ.get("CUDA_VISIBLE_DEVICES"), gpus) if found.gpus else None


def search(request: Request, hardware: Hardware) -> SearchResult:
    """The plans that fit, the recommended one and why, or what would fit."""
    base, notes = adapted_to_card(request.spec, request.base, hardware.card, request.fixed)
    result = plan(replace(request, base=base), hardware)
    result.warnings = notes + result.warnings
    return result


@dataclass(frozen=True)
class Choice:
    """The one configuration `config` and `launch` write: what the search recommends with what the user fixed."""

    evaluation: Evaluation
    warnings: tuple[str, ...] = ()

    @property
    def cfg(self) -> TrainConfig:
        return self.evaluation.estimate.cfg


def choose(model: ResolvedModel, request: Request, hardware: Hardware | None, force: bool = False) -> Choice:
    """The search's recommended plan on `hardware`, the options the user set kept fixed. Nothing fitting is
    refused (DoesNotFitError: how far over, and the nearest way out) unless `force`, which takes the user's
    configuration as given. Without hardware the configuration is taken as given and not checked."""
    if hardware is None:
        cfg = with_global_batch(request.base, request.global_batch)
        return Choice(evaluate(model, cfg, None, request.margin),
                      ("No GPU was found and none was named, so this plan is not checked against a card.",
                       *_batch_warnings(request, cfg)))
    result = search(request, hardware)
    if result.recommended is not None:
        chosen = result.plans[result.recommended]
        evaluation = Evaluation(model, chosen.estimate, hardware.card.overhead, hardware, request.margin)
        return Choice(evaluation, tuple(result.warnings + _batch_warnings(request, chosen.cfg)))
    if result.nothing_fits and result.nothing_fits.unsupported:   # what cannot run is refused, forced or not
        raise UnsupportedError(result.nothing_fits.unsupported)
    message = does_not_fit_sentence(hardware, result.nothing_fits)
    if not force:
        raise DoesNotFitError(message)
    cfg = with_global_batch(request.base.with_(gpus=request.base.gpus if "gpus" in request.fixed
                                               else hardware.gpus_per_node, nodes=hardware.nodes),
                            request.global_batch)
    forced = evaluate(model, cfg, hardware, request.margin)
    return Choice(forced, (*forced.warnings, f"Written anyway (forced): {message}"))


def _batch_warnings(request: Request, cfg: TrainConfig) -> list[str]:
    made = cfg.micro_batch * cfg.grad_accum * cfg.world_size
    if request.global_batch and made != request.global_batch:
        return [f"A global batch of {request.global_batch} does not split over micro-batch {cfg.micro_batch} x "
                f"{cfg.world_size} GPUs; the plan uses {made}."]
    return []


def does_not_fit_sentence(hardware: Hardware, nothing: NothingFits | None) -> str:
    """Nothing fits: how much the smallest plan needs, how far over that is, and the nearest way out."""
    needs = (nothing.min_total_bytes if nothing else None) or 0
    usable = (nothing.usable_bytes if nothing else None) or 0
    ways = nothing.suggestions if nothing else ()
    hint = f"; nearest way out: {ways[0].rstrip('.')}" if ways else ""
    return (f"no plan fits on {hardware.card.name}: the smallest needs {needs / GiB:.1f} GiB per GPU, "
            f"{usable / GiB:.1f} GiB is usable ({(needs - usable) / GiB:.1f} GiB over){hint}.")


def best_fit(spec: ModelSpec, method: Method, hw: Hardware, seq_len: int, margin: float) -> tuple[Plan | None, str | None]:
    """The feasible plan of `method` with the largest micro-batch (the fastest among equals), or None and, when
    the libraries cannot run the method on this model or card at all, why."""
    requests = _fit_requests(spec, method, hw, seq_len, margin)
    for request in requests:
        plans = feasible_plans(request, hw)
        if plans:
            return max(plans, key=lambda p: (p.cfg.micro_batch, p.speed.tokens_per_s)), None
    return None, unsupported_everywhere(requests[-1], hw)


def _fit_requests(spec: ModelSpec, method: Method, hw: Hardware, seq_len: int, margin: float) -> list[Request]:
    base = TrainConfig(method=method, seq_len=seq_len, gpus=hw.gpus_per_node)
    fixed = {"method", "seq_len", "gpus"}
    if hw.world_size == 1:
        return [Request(spec=spec, base=base, fixed=frozenset(fixed), margin=margin)]
    # Several cards: the full search is ~30 strategies per cell, too slow for a whole catalog. ZeRO-3 shards
    # the most; QLoRA's 4-bit weights cannot be sharded by the built-in launcher, so it takes ZeRO-2
    sharding = Sharding.ZERO2 if method is Method.QLORA else Sharding.ZERO3
    base = replace(base, sharding=sharding, grad_ckpt=True, offload=Offload.NONE)
    fixed |= {"sharding", "grad_ckpt"}
    return [Request(spec=spec, base=base, fixed=frozenset(fixed | {"offload"}), margin=margin),
            Request(spec=spec, base=base, fixed=frozenset(fixed), margin=margin)]
