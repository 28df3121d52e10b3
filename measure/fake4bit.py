"""A 4-bit (NF4) linear layer that runs on fake tensors, standing in for `bitsandbytes.nn.Linear4bit`.

bitsandbytes' `Params4bit` cannot wrap a FakeTensor and its quantize step is data dependent, so QLoRA is
measured with this stand-in. It holds what a quantized `Linear4bit` holds (its `Params4bit` and
`QuantState`), byte for byte:
  - `weight`: the packed uint8 weight, shape (ceil(numel/2), 1), as `Params4bit` stores it;
  - `code`: the 16-entry fp32 NF4 table (bitsandbytes makes one per layer);
  - without double quantization, `absmax`: one fp32 scale per 64-block;
  - with it, `absmax`: one uint8 per 64-block, plus `absmax2` (fp32 per 256 of those), `code2` (the 256-entry
    fp32 dynamic map, one per layer in bitsandbytes) and `offset` (one fp32).
Only bitsandbytes' quantize step is data dependent (it cannot run on fake tensors); nothing here needs it:
the constants are allocated at their real shapes and dequantized by bitsandbytes' own code.

Forward and backward mirror bitsandbytes (`Linear4bit.forward`, `MatMul4Bit`): the input is cast to the
compute dtype, the weight is dequantized (`bitsandbytes.functional.dequantize_4bit`) into a temporary and
multiplied; only the packed weight is kept for backward, which dequantizes again. This is bitsandbytes'
dequantize-then-matmul path, which CUDA takes for more than 1536 rows (micro_batch x seq_len); below that a
fused kernel may skip the temporary dequantized weight.

It subclasses `bnb.nn.Linear4bit` so that peft wraps it with its own 4-bit LoRA layer, as it would a real one.
"""
from __future__ import annotations

import math

import bitsandbytes as bnb
import torch
from bitsandbytes.functional import QuantState, dequantize_4bit
from torch import nn

BLOCKSIZE = 64          # bitsandbytes' default 4-bit block
NESTED_BLOCKSIZE = 256  # double quantization's block over the absmax values
CODE_ENTRIES = 16       # the NF4 table
DYNAMIC_ENTRIES = 256   # the 8-bit dynamic map of double quantization


def packed_bytes(numel: int) -> int:
    return (numel + 1) // 2


def absmax_bytes(numel: int) -> int:
    return 4 * math.ceil(numel / BLOCKSIZE)


def constant_bytes(numel: int, double_quant: bool) -> int:
    """Bytes of one layer's quantization constants (everything in its QuantState), as bitsandbytes holds them."""
    blocks = math.ceil(numel / BLOCKSIZE)
    if not double_quant:
        return 4 * blocks + 4 * CODE_ENTRIES
    return blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 4 + 4 * DYNAMIC_ENTRIES + 4 * CODE_ENTRIES


class _Matmul4bit(torch.autograd.Function):
    """bitsandbytes' MatMul4Bit with its dequantize + linear fallback spelled out."""

    @staticmethod
    def forward(ctx, x, packed, bias, state):
        out = nn.functional.linear(x, dequantize_4bit(packed, state).to(x.dtype), bias)
        ctx.state, ctx.dtype_bias = state, None if bias is None else bias.dtype
        ctx.tensors = (None, packed)   # like bitsandbytes: a plain attribute, not save_for_backward
        return out

    @staticmethod
    def backward(ctx, grad_out):
        _, packed = ctx.tensors
        need_x, _, need_bias, _ = ctx.needs_input_grad
        grad_bias = grad_out.sum(0, dtype=ctx.dtype_bias) if need_bias else None
        grad_x = torch.matmul(grad_out, dequantize_4bit(packed, ctx.state).to(grad_out.dtype)) if need_x else None
        return grad_x, None, grad_bias, None


class FakeLinear4bit(bnb.nn.Linear4bit):
    """NF4 linear layer with plain tensors (fake, meta, CPU or CUDA) in place of `Params4bit`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype,
                 quant_dtype: torch.dtype, double_quant: bool = True, device=None) -> None:
        nn.Module.__init__(self)   # skip Linear4bit.__init__: it would build a Params4bit
        self.in_features, self.out_features = in_features, out_features
        numel = in_features * out_features
        self.weight = nn.Parameter(torch.empty(packed_bytes(numel), 1, dtype=torch.uint8, device=device),
                                   requires_grad=False)
        self.weight.compress_statistics, self.weight.quant_type = double_quant, "nf4"  # read by peft
        blocks, f32 = math.ceil(numel / BLOCKSIZE), dict(dtype=torch.float32, device=device)
        self.register_buffer("code", torch.empty(CODE_ENTRIES, **f32))
        self.double_quant = double_quant
        if double_quant:
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax2", torch.empty(math.ceil(blocks / NESTED_BLOCKSIZE), **f32))
            self.register_buffer("code2", torch.empty(DYNAMIC_ENTRIES, **f32))
            self.register_buffer("offset", torch.empty((), **f32))
        else:
            self.register_buffer("absmax", torch.empty(blocks, **f32))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=quant_dtype, device=device)) if bias else None
        self.compute_dtype, self.quant_dtype = compute_dtype, quant_dtype
        self.compute_type_is_set, self.quant_state, self.quant_storage = True, None, torch.uint8

    @classmethod
    def replacing(cls, linear: nn.Linear, compute_dtype: torch.dtype, double_quant: bool) -> "FakeLinear4bit":
        return cls(linear.in_features, linear.out_features, linear.bias is not None, compute_dtype,
                   linear.weight.dtype, double_quant, device=linear.weight.device)

    def state(self) -> QuantState:
        shape = torch.Size([self.out_features, self.in_features])
        nested = {}
        if self.double_quant:
            state2 = QuantState(absmax=self.absmax2, code=self.code2, blocksize=NESTED_BLOCKSIZE, dtype=torch.float32)
            nested = dict(offset=self.offset, state2=state2)
        return QuantState(absmax=self.absmax, shape=shape, code=self.code, blocksize=BLOCKSIZE,
                          quant_type="nf4", dtype=self.quant_dtype, **nested)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = self.bias
        if bias is not None:
            if bias.dtype != x.dtype:
                bias.data = bias.data.to(x.dtype)   # bitsandbytes casts the bias in place, once
            bias = bias.to(self.compute_dtype)
        return _Matmul4bit.apply(x, self.weight, bias, self.state()).to(inp_dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        nn.Module._save_to_state_dict(self, destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4 stand-in"


def quantize_linears(root: nn.Module, compute_dtype: torch.dtype, double_quant: bool, keep=()) -> int:
    """Replace every nn.Linear under `root` except those in `keep` (the output head, which bitsandbytes also
    leaves alone) by the stand-in; returns how many."""
    count = 0
    for name, child in list(root.named_children()):
        if any(child is k for k in keep):
            continue
        if isinstance(child, nn.Linear) and not isinstance(child, bnb.nn.Linear4bit):
            setattr(root, name, FakeLinear4bit.replacing(child, compute_dtype, double_quant))
            count += 1
        else:
            count += quantize_linears(child, compute_dtype, double_quant, keep)
    return count
