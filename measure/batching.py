"""One micro-batch's model inputs as `cfg.batching` lays them out, for the harness and the per-layer probe.

- fixed: seq_len tokens per row, no mask (transformers then runs SDPA with is_causal).
- padded: rows padded to the longest with a 2-D attention mask; the last row is one token short, so the mask
  has padding and transformers builds the b x 1 x s x s mask (a batch without padding is a fixed one).
- packed: two sequences per row, told apart by position ids restarting at the boundary (no attention mask);
  transformers finds the boundaries (find_packed_sequence_indices) and builds a block-diagonal mask.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import torch

from planner.config import TrainConfig
from planner.enums import Batching


def batch_inputs(cfg: TrainConfig, ids: torch.Tensor) -> dict:
    """input_ids, labels and what the batching adds (attention_mask or position_ids)."""
    if cfg.batching is Batching.PADDED:
        mask = torch.ones_like(ids)
        mask[-1, -1] = 0
        return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    if cfg.batching is Batching.PACKED:
        half = ids.shape[1] // 2
        positions = torch.cat([torch.arange(half), torch.arange(ids.shape[1] - half)]).to(ids.device)
        return dict(input_ids=ids, position_ids=positions.repeat(ids.shape[0], 1), labels=ids)
    return dict(input_ids=ids, labels=ids)


def mask_path(cfg: TrainConfig):
    """transformers reads the position ids to detect packed rows; on fake tensors it cannot (and assumes packing
    for masks). Give it the answer a real run computes: packed only under `packed` batching; the flash path
    looks for flattened packing (one row) only."""
    from transformers import masking_utils, modeling_flash_attention_utils as fa
    packed = cfg.batching is Batching.PACKED
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(fa, "_is_packed_sequence", lambda position_ids, batch_size:
                                          packed and batch_size == 1 and position_ids is not None))
    if not packed:
        stack.enter_context(mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None))
    return stack
