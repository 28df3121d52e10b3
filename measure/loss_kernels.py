"""The fused losses' memory, emulated for the measuring harness: Liger's fused linear cross-entropy and Cut
Cross-Entropy are Triton kernels, so they cannot run on fake or CPU tensors. Each stand-in allocates, saves
and frees exactly the tensors the real kernel does (see planner/loss.py for the sources); the arithmetic is
not done (the values are never read).

- Liger (liger_kernel/ops/fused_linear_cross_entropy.py): gradients of the hidden states and of lm_head
  (when it trains) are made in the forward, chunk x V logits at a time; the backward scales them in place.
- Cut Cross-Entropy (cut_cross_entropy/cce.py): no logits; saves the hidden states, an fp32 log-sum-exp and
  int32 indices per labelled token, an fp32 vocabulary average; the backward makes the gradients.
"""
from __future__ import annotations

import math

import torch

from planner.config import TrainConfig
from planner.enums import Loss, Precision
from planner.loss import CHUNK_MEM_CONST


class LigerFusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, mm_out: bool):
        x = hidden.view(-1, hidden.shape[-1])
        rows, vocab = x.shape[0], weight.shape[0]
        grad_input = torch.zeros_like(x)
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        loss = torch.zeros(rows, dtype=torch.float32, device=x.device)
        _ = targets != -100   # the kernel's target mask
        chunk = min(2 ** math.ceil(math.log2(max(1, math.ceil(rows / math.ceil(vocab / (CHUNK_MEM_CONST * x.shape[1])))))),
                    rows)
        for start in range(0, rows, chunk):
            rows_x = x[start:start + chunk]
            logits = rows_x @ weight.t()   # the cross-entropy kernel then writes its gradient in place
            if mm_out:   # one dtype throughout: the matmul writes straight into grad_input's rows
                torch.mm(logits, weight, out=grad_input[start:start + chunk])
            else:        # otherwise a chunk x H result, copied in
                grad_input[start:start + chunk].copy_(logits @ weight)
            if grad_weight is not None and rows_x.dtype != logits.dtype:
                cast = rows_x.to(logits.dtype)   # the input chunk in the logits' dtype, for lm_head's gradient
                del cast
            del logits
        ctx.save_for_backward(grad_input, grad_weight)
        ctx.shape = hidden.shape
        return loss.sum()

    @staticmethod
    def backward(ctx, grad_output):
        grad_input, grad_weight = ctx.saved_tensors
        grad_input.mul_(grad_output)   # Liger's element_mul_kernel: in place
        if grad_weight is not None:
            grad_weight.mul_(grad_output)
        return grad_input.view(ctx.shape), grad_weight, None, None


class CutCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embeddings, classifier, targets):
        e = embeddings.reshape(-1, embeddings.shape[-1])
        labelled = targets.numel()
        valids = torch.empty(labelled, dtype=torch.int32, device=e.device)   # (targets != ignore).nonzero()
        lse = torch.full((labelled,), -math.inf, dtype=torch.float32, device=e.device)
        logit_avg = torch.zeros(classifier.shape[0], dtype=torch.float32, device=e.device)
        nll = torch.zeros(labelled, dtype=torch.float32, device=e.device).add_(lse)
        ctx.save_for_backward(e, classifier, lse, targets, valids, logit_avg)
        ctx.shape = embeddings.shape
        return nll.sum()

    @staticmethod
    def backward(ctx, grad_output):
        e, classifier, _lse, _targets, _valids, logit_avg = ctx.saved_tensors
        _ordering = torch.argsort(logit_avg).to(torch.int32)
        grad_e = torch.zeros_like(e)
        grad_c = torch.zeros_like(classifier, dtype=e.dtype).to(classifier.dtype) if classifier.requires_grad else None
        return grad_e.view(ctx.shape), grad_c, None


def fused_loss(cfg: TrainConfig, causal_lm, ids: torch.Tensor) -> torch.Tensor:
    """The loss of one micro-batch through the decoder and the fused loss cfg.loss names (no logits)."""
    hidden = causal_lm.model(input_ids=ids).last_hidden_state
    weight = causal_lm.get_output_embeddings().weight
    targets = torch.nn.functional.pad(ids, (0, 1), value=-100)[..., 1:].contiguous()   # the shifted labels
    if cfg.loss is Loss.LIGER:
        same_dtype = hidden.dtype == weight.dtype and cfg.precision is Precision.BF16_TRUE
        return LigerFusedLinearCrossEntropy.apply(hidden, weight, targets, same_dtype)
    return CutCrossEntropy.apply(hidden.to(weight.dtype) if hidden.dtype != weight.dtype else hidden, weight, targets)
