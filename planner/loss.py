"""The head of the step: what the final norm, lm_head and the loss keep, by loss kernel and training loop.

- standard (transformers' ForCausalLMLoss): lm_head makes the logits (b·s·V in the compute dtype), the loss
  copies them to fp32 and log_softmax keeps its fp32 output: 10 bytes per logit at the loss, 12 during its
  backward (the saved log-probs, the NLL gradient and log_softmax's gradient).
- liger (Liger's fused linear cross-entropy, liger_kernel/ops/fused_linear_cross_entropy.py): no logits; chunk
  x V logits at a time, and the gradient of the hidden states (and of lm_head when it trains) computed in the
  forward and saved; the backward only scales them in place.
- cce (Cut Cross-Entropy, cut_cross_entropy/cce.py): no logits at all; saves the hidden states, an fp32
  log-sum-exp per token, int32 indices of the labelled tokens and an fp32 vocabulary average; the backward
  makes the hidden states' gradient (and lm_head's).
- loop: transformers' Trainer drops the model's outputs before backward; a plain loop that keeps `outputs`
  holds the compute-dtype logits through the whole backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from planner.activations import final_norm_backward, final_norm_saved, head_saved, stream_bytes
from planner.config import TrainConfig
from planner.enums import Loop, Loss, Method, Precision
from planner.states import deepspeed_16bit, weight_bytes
from profiles.spec import ModelSpec

CHUNK_MEM_CONST = 1   # Liger's chunk rule (fused_linear_cross_entropy.py): rows per chunk ~ T / ceil(V / H)


@dataclass(frozen=True)
class LossHead:
    saved: int            # kept for backward outside the layers (final norm, lm_head's input, the loss's own)
    forward: int          # what the loss holds at its forward peak (logits, their fp32 copy, log-probs)
    backward: int         # what the loss's backward holds at its peak
    kept: int             # held through the whole backward (a plain loop's logits)
    early_grads: int      # lm_head's gradient made already in the forward (Liger, full fine-tuning)
    norm_backward: int = 0  # the final norm's backward, fed by a fused loss (saved tensors and gradients)


def loss_head(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> LossHead:
    if cfg.loss is Loss.LIGER:
        return _liger(spec, cfg, tokens)
    if cfg.loss is Loss.CCE:
        return _cut_cross_entropy(spec, cfg, tokens)
    return _standard(spec, cfg, tokens)


def logit_bytes(cfg: TrainConfig) -> int:
    """lm_head output dtype: fp32 when its weight is fp32 and no autocast, else 16 bit."""
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED)
    if cfg.method is Method.QLORA and not deepspeed_16bit(cfg) and not mixed:
        return 4  # prepare_model_for_kbit_training left lm_head in fp32, and nothing casts it down
    return 4 if cfg.precision is Precision.FP32 else 2


def _standard(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> LossHead:
    v, width = tokens * spec.vocab, logit_bytes(cfg)
    fp32_copy = 0 if width == 4 else 4 * v              # the loss upcasts 16-bit logits
    capped = width * v if spec.logit_softcap else 0     # Gemma-2: cap * tanh(logits / cap) keeps tanh's output
    kept = width * v if cfg.loop is Loop.PLAIN else 0
    return LossHead(saved=head_saved(spec, cfg, tokens), forward=width * v + fp32_copy + 4 * v + capped,
                    backward=12 * v + capped + kept, kept=kept, early_grads=0)


def _liger(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> LossHead:
    hidden, compute = stream_bytes(cfg), _compute_bytes(cfg)   # grad_input takes the final norm's dtype
    chunk = min(2 ** math.ceil(math.log2(max(1, math.ceil(tokens / math.ceil(spec.vocab / (CHUNK_MEM_CONST * spec.hidden)))))), tokens)
    trains_head = cfg.method is Method.FULL
    head_grad = spec.vocab * spec.hidden * weight_bytes(cfg) if trains_head else 0
    # the matmul writes into grad_input when inputs and weight share a dtype (bf16-true); otherwise a chunk x H
    # result is copied in, the input chunk is cast for lm_head's gradient, and autocast's 16-bit copy of the
    # fp32 lm_head weight is live at each chunk's matmul (cached for the forward when the head trains)
    mixed = hidden != compute
    per_chunk = chunk * spec.vocab * compute + (chunk * spec.hidden * compute * (1 + trains_head) if mixed else 0)
    cache = spec.vocab * spec.hidden * compute if mixed else 0
    return LossHead(saved=final_norm_saved(spec, cfg, tokens) + tokens * spec.hidden * hidden,
                    forward=per_chunk + 5 * tokens + head_grad + cache, backward=0, kept=0, early_grads=head_grad,
                    norm_backward=final_norm_backward(spec, cfg, tokens))


def _cut_cross_entropy(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> LossHead:
    hidden = stream_bytes(cfg)
    saved = final_norm_saved(spec, cfg, tokens) + tokens * spec.hidden * hidden + 8 * tokens + 4 * spec.vocab
    head_grad = spec.vocab * spec.hidden * hidden if cfg.method is Method.FULL else 0
    # backward: the hidden states' gradient, lm_head's (when it trains) and the vocabulary ordering (int64)
    return LossHead(saved=saved, forward=4 * tokens, backward=tokens * spec.hidden * hidden + head_grad + 8 * spec.vocab,
                    kept=0, early_grads=0, norm_backward=final_norm_backward(spec, cfg, tokens))


def _compute_bytes(cfg: TrainConfig) -> int:
    return 4 if cfg.precision is Precision.FP32 else 2
