"""Liger's RMSNorm, SwiGLU / GeGLU and RoPE kernels, emulated for the measuring harness: they are Triton kernels,
so they cannot run on fake or CPU tensors. Each stand-in saves exactly the tensors the Liger Function saves
(liger-kernel 0.8.5, liger_kernel/ops/rms_norm.py, swiglu.py, geglu.py, rope.py) and allocates its results as
it does; the arithmetic is not done (the values are never read).

- LigerRMSNormFunction: saves its input X (made contiguous, viewed 2-D), the weight and an fp32 RSTD per row;
  Y is new, in X's dtype. Backward writes dX over dY (in_place) or into a new tensor. Its partial weight gradient
  (SMs x width, fp32) is not emulated: the planner leaves it out too.
- LigerSiLUMulFunction / LigerGELUMulFunction: saves a and b (contiguous copies when they were not: Phi-3's
  chunked gate_up), c is new; backward writes da and db into a and b.
- LigerRopeFunction: rotates q and k in place (transposed to (b, s, h, d), a copy only if not laid out so),
  saves cos and sin.

Applied as Trainer's `use_liger_kernel` applies Liger to a built model (`_apply_liger_kernel_to_instance`): the
norms' and MLPs' forwards rebound, `apply_rotary_pos_emb` replaced in the family's modeling module.
"""
from __future__ import annotations

import contextlib
import sys
import types
from unittest import mock

import torch
from torch import nn

from planner.activations import liger_kernels, liger_norm_in_place
from profiles.spec import ModelSpec


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, in_place: bool):
        x = x.contiguous()
        rows = x.view(-1, x.shape[-1])
        rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
        ctx.save_for_backward(rows, weight, rstd)
        ctx.in_place = in_place
        return torch.empty_like(rows).view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        _, weight, _ = ctx.saved_tensors
        dy = dy.contiguous()
        dx = dy if ctx.in_place else torch.zeros_like(dy)
        return dx, torch.zeros_like(weight) if ctx.needs_input_grad[1] else None, None


class GatedMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = a.contiguous(), b.contiguous()
        ctx.save_for_backward(a, b)
        return torch.empty_like(a)

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        dc.contiguous()
        return a, b   # da and db written over a and b


class Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        q, k = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()
        ctx.save_for_backward(cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2)

    @staticmethod
    def backward(ctx, dq, dk):
        return dq.transpose(1, 2).contiguous().transpose(1, 2), dk.transpose(1, 2).contiguous().transpose(1, 2), None, None


def _norm_forward(self, hidden_states):
    return RMSNorm.apply(hidden_states, self.weight, self.liger_in_place)


def _mlp_forward(self, x):
    if hasattr(self, "gate_up_proj"):   # Phi-3: LigerPhi3SwiGLUMLP chunks the fused projection
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(GatedMul.apply(gate, up))
    return self.down_proj(GatedMul.apply(self.gate_proj(x), self.up_proj(x)))


def _rope(q, k, cos, sin, *args, **kwargs):
    return Rope.apply(q, k, cos, sin)


def apply_liger(model: nn.Module, spec: ModelSpec, notes: list[str]) -> contextlib.AbstractContextManager:
    """Rebind the norms' and MLPs' forwards now; the context returned replaces RoPE while the model runs."""
    parts = liger_kernels(spec)
    if not parts:
        notes.append(f"Liger kernels: none for {spec.hf_type}")
        return contextlib.nullcontext()
    notes.append(f"Liger kernels ({', '.join(sorted(parts))}) emulated by measure/liger_kernels.py: what each saves")
    for name, module in model.named_modules():
        if "rms_norm" in parts and _is_norm(module, name, spec):
            module.liger_in_place = liger_norm_in_place(spec, final=".layers." not in f".{name}.")
            module.forward = types.MethodType(_norm_forward, module)
        if "gated" in parts and name.endswith(".mlp") and hasattr(module, "down_proj"):
            module.forward = types.MethodType(_mlp_forward, module)
    if "rope" not in parts:
        return contextlib.nullcontext()
    attention = next(m for m in model.modules() if type(m).__name__.endswith("Attention"))
    return mock.patch.object(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", _rope)


def _is_norm(module: nn.Module, name: str, spec: ModelSpec) -> bool:
    """An RMSNorm Liger's instance patch replaces: all but full-width q/k norms (OLMo-2's)."""
    if not type(module).__name__.endswith("RMSNorm"):
        return False
    return not (spec.qk_norm == "full" and name.split(".")[-1] in ("q_norm", "k_norm"))
