"""Activation memory from what autograd saves, op by op.

A transformer layer is walked symbolically: each tensor is a width (elements per token) and a dtype,
and each op saves for backward what its PyTorch derivative formula keeps (linear: its input when the
weight trains; SDPA: q, k, v, output and an fp32 log-sum-exp per head; a Hugging Face RMSNorm: the
fp32 input and its rsqrt; ...). Storages shared by several ops count once. All sizes are per token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from planner.config import TrainConfig
from planner.enums import Attention, Method, Precision
from planner.params import resolve_targets
from planner.states import deepspeed_16bit, weight_bytes
from profiles.models import FUSED_ROLES, ModelSpec

_ids = count()
# RMSNorms that multiply the weight in fp32 and cast afterwards, saving the fp32 normalised input
FP32_WEIGHT_NORMS = ("gemma", "gemma2", "gemma3_text", "olmo2")
# Activations composed of elementwise ops: how many tensors of the MLP width they save (NewGELU:
# x for pow and mul, tanh's output, 1 + tanh and 0.5 * x); fused ones save only their input.
ACTIVATION_SAVES = {"gelu_new": 4, "gelu_fast": 4}


@dataclass(eq=False)
class Tensor:
    width: int          # elements per token
    nbytes: int         # bytes per element
    grad: bool          # requires grad
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def bytes(self) -> int:
        return self.width * self.nbytes


@dataclass
class Context:
    """What decides saved bytes: dtypes, which weights train, which linears carry LoRA."""
    compute: int           # bytes of matmul / attention outputs
    autocast: bool         # *-mixed: torch.autocast casts matmul inputs to 16 bit
    base_trains: bool      # full fine-tuning
    norm_weight: int       # bytes of norm weights (fp32 after QLoRA's prepare)
    adapter: int           # bytes of LoRA weights (0: no LoRA)
    lora_r: int
    lora_modules: set[str]
    quantized: bool        # QLoRA: Linear4bit casts its output back to the input dtype
    attention: Attention
    fp32_norm_weight: bool = False  # norm multiplies its weight in fp32, then casts (Gemma, OLMo-2)
    saved: dict[int, int] = field(default_factory=dict)
    per_layer: int = 0     # bytes saved per layer whatever the tokens (autocast's 16-bit weight copies)
    widest: int = 0        # widest intermediate (bytes/token): sizes backward's gradient buffers

    def save(self, *tensors: Tensor) -> None:
        for t in tensors:
            self.saved[t.id] = t.bytes

    def new(self, width: int, nbytes: int, grad: bool) -> Tensor:
        t = Tensor(width, nbytes, grad)
        self.widest = max(self.widest, t.bytes)
        return t

    def cast(self, t: Tensor, nbytes: int) -> Tensor:
        return t if t.nbytes == nbytes else self.new(t.width, nbytes, t.grad)

    @property
    def total(self) -> int:
        return sum(self.saved.values())


def context(spec: ModelSpec, cfg: TrainConfig) -> Context:
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED) and not deepspeed_16bit(cfg)
    compute = 4 if cfg.precision is Precision.FP32 else 2
    lora = {lin.module for lin in resolve_targets(spec, cfg.lora_targets)} if cfg.uses_adapters else set()
    qlora = cfg.method is Method.QLORA
    return Context(compute=compute, autocast=mixed, base_trains=cfg.method is Method.FULL,
                   norm_weight=weight_bytes(cfg), adapter=(4 if not deepspeed_16bit(cfg) else 2) if lora else 0,
                   lora_r=cfg.lora_r, lora_modules=lora, quantized=qlora, attention=cfg.attn,
                   fp32_norm_weight=spec.hf_type in FP32_WEIGHT_NORMS)


def stream_bytes(cfg: TrainConfig) -> int:
    """dtype of the residual stream: that of the embedding output."""
    return weight_bytes(cfg) if not deepspeed_16bit(cfg) else 2


# --- ops -------------------------------------------------------------------------------------------

def linear(ctx: Context, x: Tensor, d_out: int, module: str) -> Tensor:
    """nn.Linear (or bitsandbytes Linear4bit), with a peft LoRA branch when the module is targeted."""
    inp = ctx.cast(x, ctx.compute) if (ctx.autocast or ctx.quantized) else x
    if ctx.base_trains:
        ctx.save(inp)  # the weight's gradient needs the input
    if ctx.autocast and (x.grad or ctx.base_trains):
        ctx.per_layer += x.width * d_out * 2  # autocast's 16-bit copy of the fp32 weight, kept for backward
    out_bytes = x.nbytes if ctx.quantized else inp.nbytes
    out = ctx.new(d_out, out_bytes, x.grad or ctx.base_trains)
    if module in ctx.lora_modules:
        out = _lora(ctx, x, d_out, out)
    return out


def _lora(ctx: Context, x: Tensor, d_out: int, base_out: Tensor) -> Tensor:
    # peft casts x to the adapter dtype for each adapted module separately (q, k, v each own a copy);
    # under autocast lora_A then runs on its own 16-bit copy, and A and B get 16-bit weight copies
    if ctx.autocast:
        xa, a = ctx.new(x.width, 2, x.grad), ctx.new(ctx.lora_r, 2, True)
        ctx.per_layer += (x.width + d_out) * ctx.lora_r * 2
    else:
        xa = ctx.new(x.width, ctx.adapter, x.grad) if x.nbytes != ctx.adapter else x
        a = ctx.new(ctx.lora_r, ctx.adapter, True)
    ctx.save(xa, a)
    summed = ctx.new(d_out, max(base_out.nbytes, ctx.adapter), True)  # result + B(A(x)): promoted dtype
    return ctx.cast(summed, base_out.nbytes) if summed.nbytes != base_out.nbytes else summed


def rms_norm(ctx: Context, x: Tensor, rows: int = 1, gemma: bool = False) -> Tensor:
    """Hugging Face RMSNorm: upcast to fp32, scale by rsqrt(mean square), multiply by the weight.

    `rows`: normalised rows per token (one per head for per-head QK norms), each with an fp32 rsqrt.
    """
    x32 = ctx.cast(x, 4)
    if x.grad:
        ctx.save(x32, ctx.new(rows, 4, True))
    normed = ctx.new(x.width, 4, x.grad)
    if ctx.fp32_norm_weight:  # weight (or 1 + weight) times the fp32 normalised input, then cast
        if ctx.base_trains:
            ctx.save(normed)
        if gemma and x.grad:
            ctx.per_layer += x.width * 4  # Gemma's fp32 (1 + weight), saved for the input's gradient
        return ctx.new(x.width, x.nbytes, x.grad or ctx.base_trains)
    normed_in = ctx.cast(normed, x.nbytes)
    if ctx.base_trains:
        ctx.save(normed_in)
    return ctx.new(x.width, max(ctx.norm_weight, x.nbytes), x.grad or ctx.base_trains)


def layer_norm(ctx: Context, x: Tensor) -> Tensor:
    """torch native_layer_norm saves its input, mean and rstd (fp32 per token)."""
    inp = ctx.cast(x, 4) if ctx.autocast else x  # autocast runs layer_norm in fp32
    grad = x.grad or ctx.base_trains
    if grad:
        ctx.save(inp, ctx.new(1, 4, True), ctx.new(1, 4, True))
    return ctx.new(x.width, max(inp.nbytes, ctx.norm_weight if not ctx.autocast else 0), grad)


def norm(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    if spec.norm == "layernorm":
        return layer_norm(ctx, x)
    return rms_norm(ctx, x, gemma=spec.hf_type.startswith("gemma"))


def attention(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    q, k, v = _qkv(ctx, spec, h)
    q, k = _qk_norm(ctx, spec, q, k)
    q, k = _rope(ctx, spec, q), _rope(ctx, spec, k)
    if ctx.autocast:
        q, k, v = (ctx.cast(t, 2) for t in (q, k, v))
    out = _core_attention(ctx, spec, q, k, v)
    if spec.partial_rotary < 1:
        # cat() of rotated and pass-through halves lays q out head-major, and the kernel's output follows:
        # transpose(1, 2).contiguous() for o_proj then copies it
        out = ctx.new(out.width, out.nbytes, out.grad)
    return linear(ctx, out, spec.hidden, _module(spec, "o"))


def _qkv(ctx: Context, spec: ModelSpec, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if "qkv" in {lin.role for lin in spec.linears()}:
        fused = linear(ctx, h, spec.q_dim + 2 * spec.kv_dim, _module(spec, "qkv"))
        # split views of one storage; rotary then makes new q and k, v stays a view of the fused output
        return (Tensor(spec.q_dim, fused.nbytes, fused.grad), Tensor(spec.kv_dim, fused.nbytes, fused.grad),
                fused)
    return tuple(linear(ctx, h, d, _module(spec, r)) for r, d in
                 (("q", spec.q_dim), ("k", spec.kv_dim), ("v", spec.kv_dim)))


def _qk_norm(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    if spec.qk_norm is None:
        return q, k
    if spec.qk_norm == "head":
        return rms_norm(ctx, q, rows=spec.n_head), rms_norm(ctx, k, rows=spec.n_kv_head)
    return rms_norm(ctx, q), rms_norm(ctx, k)


def _rope(ctx: Context, spec: ModelSpec, t: Tensor) -> Tensor:
    if spec.learned_positions:
        return t  # GPT-2: no rotary
    return ctx.new(t.width, t.nbytes, t.grad)  # q*cos + rotate_half(q)*sin: a new tensor, cos/sin shared


def _core_attention(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    out = ctx.new(spec.q_dim, q.nbytes, True)
    if ctx.attention is Attention.EAGER:
        # matmuls save q and the KV heads repeated to every query head; the s x s softmax terms are
        # added by eager_scores_bytes; the output, made contiguous, is o_proj's to save
        grouped = spec.n_kv_head < spec.n_head
        k, v = (ctx.new(spec.q_dim, t.nbytes, True) if grouped else t for t in (k, v))
        ctx.save(q, k, v)
        return out
    ctx.save(q, k, v, out, ctx.new(spec.n_head, 4, True))  # fused kernels keep an fp32 log-sum-exp per head
    return out


def mlp(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    if spec.is_moe:
        return _moe(ctx, spec, h)
    i = spec.intermediate
    if not spec.mlp_gated:
        up = linear(ctx, h, i, _module(spec, "up"))
        act = _activation(ctx, spec, up)
        return linear(ctx, act, spec.hidden, _module(spec, "down"))
    gate, up = _gate_up(ctx, spec, h, i)
    act = _activation(ctx, spec, gate)
    ctx.save(act, up)
    prod = ctx.new(i, up.nbytes, True)
    return linear(ctx, prod, spec.hidden, _module(spec, "down"))


def _gate_up(ctx: Context, spec: ModelSpec, h: Tensor, i: int) -> tuple[Tensor, Tensor]:
    if "gate_up" in {lin.role for lin in spec.linears()}:
        fused = linear(ctx, h, 2 * i, _module(spec, "gate_up"))
        return Tensor(i, fused.nbytes, True), Tensor(i, fused.nbytes, True)  # chunk() views
    return linear(ctx, h, i, _module(spec, "gate")), linear(ctx, h, i, _module(spec, "up"))


def _activation(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    ctx.save(x)  # silu / gelu derivatives need their input
    for _ in range(ACTIVATION_SAVES.get(spec.activation, 1) - 1):
        ctx.save(ctx.new(x.width, x.nbytes, True))
    return ctx.new(x.width, x.nbytes, True)


def _moe(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """Routed experts as transformers 5 runs them (grouped matmuls over tokens sorted by expert)."""
    linear(ctx, h, spec.n_experts, "gate")
    k, i, dt = spec.experts_per_token, spec.moe_intermediate, h.nbytes
    ctx.save(ctx.new(spec.n_experts, 4, True))  # router softmax in fp32
    ctx.save(ctx.new(4 * k * 8 // dt, dt, False))  # top-k, sort and scatter indices: four int64 per route
    gathered = ctx.new(k * spec.hidden, dt, True)  # each token's hidden state, once per chosen expert
    gate_up, act, prod = ctx.new(k * 2 * i, dt, True), ctx.new(k * i, dt, True), ctx.new(k * i, dt, True)
    down, weights = ctx.new(k * spec.hidden, dt, True), ctx.new(k, dt, True)
    ctx.save(gathered, gate_up, act, prod, down, weights)
    return ctx.new(spec.hidden, dt, True)


def _module(spec: ModelSpec, role: str) -> str:
    for lin in spec.linears():
        if lin.role == role or role in FUSED_ROLES.get(lin.role, ()):
            return lin.module
    return role


def residual(ctx: Context, x: Tensor, y: Tensor) -> Tensor:
    return ctx.new(x.width, max(x.nbytes, y.nbytes), x.grad or y.grad)


# --- layers ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSaved:
    per_token: int      # bytes saved for backward per token
    per_layer: int      # bytes saved whatever the tokens (16-bit weight copies under autocast)
    widest: int         # bytes per token of the widest intermediate

    def bytes(self, tokens: int) -> int:
        return self.per_token * tokens + self.per_layer


def layer_saved(spec: ModelSpec, cfg: TrainConfig, first: bool = False) -> LayerSaved:
    """What one transformer layer saves for backward.

    `first`: the first layer's input needs no gradient when the embedding is frozen (LoRA, QLoRA).
    """
    ctx = context(spec, cfg)
    x = Tensor(spec.hidden, stream_bytes(cfg), grad=cfg.method is Method.FULL or not first)
    _block(ctx, spec, x)
    return LayerSaved(per_token=ctx.total, per_layer=ctx.per_layer, widest=ctx.widest)


def _block(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    if spec.parallel_block:
        h = norm(ctx, spec, x)
        h2 = norm(ctx, spec, x) if spec.norms_per_layer == 2 else h
        return residual(ctx, x, residual(ctx, attention(ctx, spec, h), mlp(ctx, spec, h2)))
    if spec.hf_type == "olmo2":  # post-norm: x + norm(attn(x)), x + norm(mlp(x))
        x = residual(ctx, x, norm(ctx, spec, attention(ctx, spec, x)))
        return residual(ctx, x, norm(ctx, spec, mlp(ctx, spec, x)))
    sandwich = spec.norms_per_layer == 4  # Gemma-2/3 also normalise each sub-block's output
    a = attention(ctx, spec, norm(ctx, spec, x))
    x = residual(ctx, x, norm(ctx, spec, a) if sandwich else a)
    m = mlp(ctx, spec, norm(ctx, spec, x))
    return residual(ctx, x, norm(ctx, spec, m) if sandwich else m)


def eager_scores_bytes(spec: ModelSpec, cfg: TrainConfig, seq_len: int) -> int:
    """Per token of eager attention: softmax output in fp32 and its 16-bit copy, s per head."""
    if cfg.attn is not Attention.EAGER:
        return 0
    return spec.n_head * seq_len * (4 + 2)
