"""flash-attention 2 emulated for the measuring harness: transformers' own flash path (flash_attention_forward,
_flash_attention_forward: is_causal for fixed rows, cu_seqlens from position ids for packed ones, _upad_input's
gathers and _pad_input's scatter for padded ones) runs as it is, on stand-ins for flash_attn_func and
flash_attn_varlen_func that save what flash-attn 2's autograd Functions save: q, k, v, the output and an fp32
log-sum-exp per head and query token (plus cu_seqlens, which the caller owns, and a 2 x int64 RNG state).
"""
from __future__ import annotations

import contextlib
from unittest import mock

import torch

NAME = "fitplan_flash"


class _Flash(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, *cu_seqlens):
        out = torch.empty_like(q)
        rows = q.shape[:-2].numel()   # batch x seq, or the total tokens of varlen
        lse = torch.empty(q.shape[-2], rows, dtype=torch.float32, device=q.device)
        rng = torch.empty(2, dtype=torch.int64, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse, *cu_seqlens, rng)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors[:3]
        return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)) + (None,) * (len(ctx.saved_tensors) - 6)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    return _Flash.apply(q, k, v)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):
    return _Flash.apply(q, k, v, cu_seqlens_q, cu_seqlens_k)


def emulated_flash(model: torch.nn.Module):
    """Run `model`'s attention through transformers' flash path on the stand-ins while the context lasts."""
    from transformers import masking_utils, modeling_flash_attention_utils as fa
    from transformers.integrations.flash_attention import flash_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def imports(implementation, *args, **kwargs):
        if implementation != NAME:
            return original(implementation, *args, **kwargs)
        return flash_attn_func, flash_attn_varlen_func, None, fa._pad_input, fa._unpad_input
    original = fa._lazy_imports
    ALL_ATTENTION_FUNCTIONS.register(NAME, flash_attention_forward)
    masking_utils.ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, masking_utils.flash_attention_mask)
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            config._attn_implementation_internal = NAME
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(fa, "_lazy_imports", imports))
    stack.enter_context(mock.patch.object(fa, "_loaded_implementation", None))
    return stack
