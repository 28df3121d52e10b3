"""Bytes autograd saves for backward in one transformer layer, measured on a small real CPU model.

The layer-level check of planner/activations.py: a `saved_tensors_hooks` pack hook sees every tensor an
op keeps for backward (dropout runs as on CUDA); storages are counted once, parameters and tensors saved outside the layer not at all.
"""
from __future__ import annotations

import warnings

import torch

from measure.batching import batch_inputs, mask_path
from planner.config import TrainConfig
from profiles.spec import ModelSpec


def measure_layer_saved(spec: ModelSpec, cfg: TrainConfig, layer: int = 1) -> int:
    """Bytes that layer `layer` saves for backward in one forward pass (no checkpointing)."""
    from measure.harness import cuda_dropout, kernels_of
    model = _materialise(spec, cfg)
    kernels = kernels_of(model, spec, cfg, [])
    blocks = decoder_layers(model, spec)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inside, seen, before, kept = [False], {}, set(), []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(t)  # alive to the end: a saved tensor freed early (a dead branch) must not lend its address
        key = t.untyped_storage().data_ptr()
        if key in params or key in before:
            return t
        if inside[0]:
            seen[key] = t.untyped_storage().nbytes()
        elif not seen:
            before.add(key)  # saved before the layer (rotary tables, masks): shared by every layer
        return t

    blocks[layer].register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    blocks[layer].register_forward_hook(lambda *_: inside.__setitem__(0, False))
    ids = torch.randint(0, spec.vocab, (cfg.micro_batch, cfg.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(cfg), cuda_dropout(), mask_path(cfg), kernels:
        model(**batch_inputs(cfg, ids))
    return sum(seen.values())


def decoder_layers(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks, whatever the family calls it (layers, h, blocks)."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == spec.n_layer:
            return module
    raise ValueError(f"no list of {spec.n_layer} layers in {type(model).__name__}")


def _materialise(spec: ModelSpec, cfg: TrainConfig) -> torch.nn.Module:
    from measure.harness import build_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(spec, cfg, [])
        model = model.to_empty(device="cpu")
    for p in model.parameters():
        if p.dtype.is_floating_point:
            torch.nn.init.normal_(p.data, std=0.02)
    model.train()
    return model


def _autocast(cfg: TrainConfig):
    from measure.harness import AUTOCAST_DTYPE
    dtype = AUTOCAST_DTYPE.get(cfg.precision)
    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cpu", dtype=dtype)
