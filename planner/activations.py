"""Activation memory from what autograd saves and frees, op by op.

A transformer layer is walked symbolically, forward then backward. Each tensor is a width (elements per
token, or bytes per layer for weight copies) and a dtype. Each op saves for backward what its PyTorch
derivative formula keeps (linear: its input when the weight trains; SDPA: q, k, v, output and an fp32
log-sum-exp per head; a Hugging Face RMSNorm: the fp32 input and its rsqrt; ...); storages shared by
several ops count once. The backward walk then replays autograd's order: each op allocates its inputs'
gradients (and its weight's), then frees its output's gradient and the tensors only it had saved.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import count

from planner.config import TrainConfig
from planner.enums import Attention, Batching, Method, Precision, Sharding
from planner.params import resolve_targets
from planner.states import (adapter_compute_bytes, computes_16bit_params, deepspeed_16bit, flat_unit_grads, trainable_bytes,
                            weight_bytes)
from profiles.spec import FUSED_ROLES, LayerKind, ModelSpec

_ids = count()
# Activations composed of elementwise ops: how many tensors of the MLP width they save (NewGELU:
# x for pow and mul, tanh's output, 1 + tanh and 0.5 * x); fused ones save only their input.
ACTIVATION_SAVES = {"gelu_new": 4, "gelu_fast": 4}
# Families whose modules Liger's instance patch (what Trainer's use_liger_kernel applies) swaps for its kernels
LIGER_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo2", "phi3", "mixtral", "qwen3_moe"}
LIGER_GATED = {"silu", "gelu_pytorch_tanh"}   # SwiGLU and GeGLU: one Function saving gate and up


@dataclass(eq=False)
class Tensor:
    width: int          # elements per token (per layer when `fixed`)
    nbytes: int         # bytes per element
    grad: bool          # requires grad
    fixed: bool = False  # a per-layer tensor (a weight copy), not per token
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def size(self) -> tuple[int, int]:
        """(bytes per token, bytes per layer)."""
        return (0, self.width * self.nbytes) if self.fixed else (self.width * self.nbytes, 0)


@dataclass
class Op:
    inputs: tuple[Tensor, ...]
    output: Tensor
    saved: tuple[Tensor, ...]
    param_grad: int = 0  # bytes of parameter gradient its backward writes (per layer)
    scratch: int = 0     # bytes a temporary holds while the op (forward or backward) makes its result
    scratch_peak: int = 0  # bytes temporaries hold just before: a dequantized weight and its cast, both live
    passes_grad: bool = False  # an add: its backward hands the output's gradient itself to same-dtype inputs
    grads_in_saved: bool = False  # its backward writes its inputs' gradients into the tensors it saved (Liger)


@dataclass
class Context:
    """What decides saved bytes: dtypes, which weights train, which linears carry LoRA."""
    compute: int           # bytes of matmul / attention outputs
    autocast: bool         # *-mixed: torch.autocast casts matmul inputs to 16 bit
    base_trains: bool      # full fine-tuning
    base_grad: int         # bytes per element of a base parameter's gradient
    norm_weight: int       # bytes of norm weights (fp32 after QLoRA's prepare)
    adapter: int           # bytes of LoRA weights (0: no LoRA)
    lora_r: int
    lora_modules: set[str]
    quantized: bool        # QLoRA: Linear4bit casts its output back to the input dtype
    attention: Attention
    fp32_norm_weight: bool = False  # norm multiplies its weight in fp32, then casts (Gemma, OLMo-2)
    seq_len: int = 1       # eager attention's s x s terms need it
    sdpa_mask: bool = False  # SDPA gets an explicit mask, which it turns into a saved 16-bit bias
    unpadded: bool = False   # flash-attention on padded rows: q, k, v gathered to the real tokens (varlen)
    liger: frozenset[str] = frozenset()  # Liger kernels in use: rms_norm, gated (SwiGLU / GeGLU), rope
    liger_norm_in_place: bool = True  # Liger's RMSNorm writes dX over dY (not for Gemma-2's and OLMo-2's norms)
    kind: LayerKind = LayerKind()  # the layer being walked: its attention, rotary and MLP
    one_sequence: bool = False  # micro-batch 1: matmul folds (batch, heads) without copying a strided v
    quantized_from: int = 2  # bytes of the dtype NF4 weights were quantized from: what dequantize returns
    saves_linear_inputs: bool = False  # ZeRO-3's linear (zero/linear.py) saves its input even for a frozen weight
    ops: list[Op] = field(default_factory=list)

    def op(self, inputs: tuple[Tensor, ...], width: int, nbytes: int, saved: tuple[Tensor, ...] = (),
           param_grad: int = 0, grad: bool | None = None, fixed: bool = False, scratch: tuple[int, int] = (0, 0)
           ) -> Tensor:
        """Record one op and return its output (which needs grad when an input does, unless told).
        Autograd saves nothing for an op whose output needs no gradient."""
        needs = any(t.grad for t in inputs) if grad is None else grad
        out = Tensor(width, nbytes, needs, fixed)
        self.ops.append(Op(inputs, out, saved if needs else (), param_grad, *scratch))
        return out

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        out = self.op((x, y), x.width, max(x.nbytes, y.nbytes))
        self.ops[-1].passes_grad = True
        return out

    def kept(self, t: Tensor) -> Tensor:
        """`t`, made by the last op, which keeps it for backward (exp, sigmoid, softmax keep their output)."""
        self.ops[-1].saved = (t,)
        return t

    def hold(self, t: Tensor) -> None:
        """Keep `t` alive up to here: a caller's argument lives until the call returns, past its last use."""
        self.ops.append(Op((t,), Tensor(0, 0, False), ()))

    def cast(self, t: Tensor, nbytes: int) -> Tensor:
        return t if t.nbytes == nbytes else self.op((t,), t.width, nbytes)

    def saved_size(self) -> tuple[int, int]:
        unique = {t.id: t for op in self.ops for t in op.saved}
        return _sum(t.size for t in unique.values())


def _sum(sizes) -> tuple[int, int]:
    tok = fixed = 0
    for a, b in sizes:
        tok, fixed = tok + a, fixed + b
    return tok, fixed


def context(spec: ModelSpec, cfg: TrainConfig, kind: LayerKind | None = None) -> Context:
    sixteen = computes_16bit_params(cfg)
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED) and not sixteen
    compute = 4 if cfg.precision is Precision.FP32 else 2
    lora = {lin.module for lin in resolve_targets(spec, cfg.lora_targets)} if cfg.uses_adapters else set()
    kind = kind or spec.layer_kind(spec.n_layer - 1)
    return Context(compute=compute, autocast=mixed, base_trains=cfg.method is Method.FULL or flat_unit_grads(cfg),
                   base_grad=2 if sixteen else trainable_bytes(cfg), norm_weight=2 if sixteen else weight_bytes(cfg),
                   adapter=adapter_compute_bytes(cfg) if lora else 0,
                   saves_linear_inputs=cfg.sharding is Sharding.ZERO3,
                   lora_r=cfg.lora_r, lora_modules=lora, quantized=cfg.method is Method.QLORA,
                   quantized_from=2 if cfg.precision is Precision.BF16_TRUE else 4,  # the dtype it was loaded in
                   attention=attention_kernel(spec, cfg), fp32_norm_weight=spec.norm_weight_fp32,
                   seq_len=cfg.seq_len, sdpa_mask=_layer_needs_mask(spec, cfg, kind), kind=kind,
                   one_sequence=cfg.micro_batch == 1,
                   unpadded=attention_kernel(spec, cfg) is Attention.FLASH and cfg.batching is Batching.PADDED,
                   liger=liger_kernels(spec) if cfg.liger_kernels else frozenset(),
                   liger_norm_in_place=liger_norm_in_place(spec))


def liger_kernels(spec: ModelSpec) -> frozenset[str]:
    """The Liger kernels that replace this family's modules: RMSNorm (not OLMo-2's full-width q/k norms, which
    Liger leaves), the gated MLP's activation (not experts) and RoPE (not Phi-3's rotary by concatenation)."""
    if spec.hf_type not in LIGER_FAMILIES:
        return frozenset()
    parts = {"rms_norm"} if spec.norm == "rmsnorm" else set()
    if spec.mlp_gated and spec.activation in LIGER_GATED and not spec.is_moe:
        parts.add("gated")
    if not (spec.learned_positions or spec.rope_by_cat or spec.partial_rotary < 1):
        parts.add("rope")
    return frozenset(parts)


def liger_norm_in_place(spec: ModelSpec, final: bool = False) -> bool:
    """Whether Liger's instance patch has a norm write dX over dY: not Gemma-2's norms nor OLMo-2's layer norms."""
    return not (spec.hf_type == "gemma2" or (spec.hf_type == "olmo2" and not final))


def sdpa_needs_mask(spec: ModelSpec, cfg: TrainConfig) -> bool:
    """transformers passes SDPA a b x 1 x s x s mask (not is_causal) when a sliding window or an attention chunk
    is shorter than the sequence, for padded rows (the padding mask) and packed ones (block-diagonal), and always
    for Falcon: whether any layer gets one."""
    return any(_layer_needs_mask(spec, cfg, kind) for kind, _ in spec.layer_kinds())


def _layer_needs_mask(spec: ModelSpec, cfg: TrainConfig, kind: LayerKind) -> bool:
    if attention_kernel(spec, cfg) is not Attention.SDPA or kind.attention == "linear":
        return False
    if spec.sdpa_always_masked or cfg.batching is not Batching.FIXED:
        return True
    if kind.attention == "sliding":
        return bool(spec.sliding_window and cfg.seq_len >= spec.sliding_window)
    return kind.attention == "chunked" and bool(spec.attention_chunk and cfg.seq_len >= spec.attention_chunk)


def attention_kernel(spec: ModelSpec, cfg: TrainConfig) -> Attention:
    """What transformers really runs: models with attention-score soft-capping (Gemma-2) or attention sinks
    (gpt-oss) have no SDPA path and fall back to eager; flash-attention kernels implement both."""
    if (spec.attn_softcap or spec.attn_sinks) and cfg.attn is Attention.SDPA:
        return Attention.EAGER
    return cfg.attn


def stream_bytes(cfg: TrainConfig) -> int:
    """dtype of the residual stream: that of the embedding output."""
    return 2 if computes_16bit_params(cfg) else weight_bytes(cfg)


# --- ops -------------------------------------------------------------------------------------------

def linear(ctx: Context, x: Tensor, d_out: int, module: str, bias: bool = False, quantized: bool | None = None) -> Tensor:
    """nn.Linear (or bitsandbytes Linear4bit), with a peft LoRA branch when the module is targeted."""
    quantized = ctx.quantized if quantized is None else quantized
    inp = ctx.cast(x, ctx.compute) if (ctx.autocast or quantized) else x
    saved = []
    if ctx.base_trains or ctx.saves_linear_inputs:
        saved.append(inp)  # the weight's gradient needs the input
    if ctx.autocast and (x.grad or ctx.base_trains) and not quantized:
        # autocast's 16-bit copy of the fp32 weight, kept for the input's gradient
        saved.append(ctx.op((), x.width * d_out, 2, grad=False, fixed=True))
    weight_grad = (x.width * d_out + (d_out if bias else 0)) * ctx.base_grad if ctx.base_trains else 0
    out = ctx.op((inp,), d_out, inp.nbytes, tuple(saved), weight_grad, grad=x.grad or ctx.base_trains,
                 scratch=_dequantized(ctx, x.width * d_out) if quantized else (0, 0))
    if quantized:
        out = ctx.cast(out, x.nbytes)  # Linear4bit returns its input's dtype
    if module in ctx.lora_modules:
        out = _lora(ctx, x, d_out, out)
    return out


def _dequantized(ctx: Context, numel: int) -> tuple[int, int]:
    """bitsandbytes' matmul_4bit, forward and backward: dequantize_4bit(W) in the dtype W was loaded in,
    .to(compute dtype) (a copy only if they differ), then the matmul; the copy is held while it runs."""
    cast = ctx.compute if ctx.quantized_from != ctx.compute else 0
    return numel * ctx.compute, numel * (ctx.quantized_from + cast)


def _lora(ctx: Context, x: Tensor, d_out: int, base_out: Tensor) -> Tensor:
    # peft casts x to the adapter dtype for each adapted module separately (q, k, v each own a copy);
    # under autocast lora_A then runs on its own 16-bit copy, and A and B get 16-bit weight copies
    r, dt = ctx.lora_r, (2 if ctx.autocast else ctx.adapter)
    xa = ctx.cast(x, ctx.adapter)
    if ctx.autocast:
        xa = ctx.op((xa,), x.width, 2)
    a_copy = (ctx.op((), x.width * r, 2, grad=False, fixed=True),) if ctx.autocast else ()
    b_copy = (ctx.op((), r * d_out, 2, grad=False, fixed=True),) if ctx.autocast else ()
    a = ctx.op((xa,), r, dt, saved=(xa,) + a_copy, param_grad=x.width * r * ctx.adapter, grad=True)
    b = ctx.op((a,), d_out, dt, saved=(a,) + b_copy, param_grad=r * d_out * ctx.adapter, grad=True)
    scaled = ctx.op((b,), d_out, dt)
    summed = ctx.add(base_out, scaled)  # result + B(A(x)) * scale
    return ctx.cast(summed, base_out.nbytes)


def rms_norm(ctx: Context, x: Tensor, rows: int = 1, unit_offset: bool = False, width: int | None = None,
             weighted: bool = True) -> Tensor:
    """Hugging Face RMSNorm: upcast to fp32, scale by rsqrt(mean square), multiply by the weight.

    `rows`: normalised rows per token (one per head for per-head QK norms), each with an fp32 rsqrt.
    `width`: normalise only a slice of x (MLA's latent): the upcast copies the slice, an fp32 x stays a view
    that keeps all of x. `weighted`: False for Llama-4's weightless QK norm (cast back, no weight).
    """
    if "rms_norm" in ctx.liger:
        return _liger_rms_norm(ctx, x, rows)
    width = width or x.width
    x32 = x if x.nbytes == 4 else ctx.op((x,), width, 4)
    rsqrt = ctx.op((x32,), rows, 4, saved=(x32,))
    normed = ctx.op((x32, rsqrt), width, 4, saved=(x32, rsqrt))
    if not weighted:
        return ctx.cast(normed, x.nbytes)
    grad = x.grad or ctx.base_trains
    weight = width // rows  # one weight shared by every row (per-head norms: head_dim wide)
    weight_grad = weight * ctx.base_grad if ctx.base_trains else 0
    if ctx.fp32_norm_weight:  # weight (or 1 + weight) times the fp32 normalised input, then cast
        saved = (normed,) if ctx.base_trains else ()
        if unit_offset and x.grad:  # Gemma's fp32 (1 + weight), saved for the input's gradient
            saved += (ctx.op((), weight, 4, grad=False, fixed=True),)
        scaled = ctx.op((normed,), width, 4, saved, weight_grad, grad=grad)
        return ctx.cast(scaled, x.nbytes)
    normed_in = ctx.cast(normed, x.nbytes)
    saved = (normed_in,) if ctx.base_trains else ()
    return ctx.op((normed_in,), width, max(ctx.norm_weight, x.nbytes), saved, weight_grad, grad=grad)


def _liger_rms_norm(ctx: Context, x: Tensor, rows: int) -> Tensor:
    """LigerRMSNormFunction: one kernel saving its input as it came and an fp32 rstd per row; output in the
    input's dtype."""
    rstd = ctx.op((), rows, 4, grad=False)
    weight_grad = x.width // rows * ctx.base_grad if ctx.base_trains else 0  # one weight shared by every row
    out = ctx.op((x,), x.width, x.nbytes, (x, rstd), weight_grad, grad=x.grad or ctx.base_trains)
    ctx.ops[-1].passes_grad = ctx.liger_norm_in_place  # in_place: dX is written over dY
    return out


def layer_norm(ctx: Context, x: Tensor) -> Tensor:
    """torch native_layer_norm saves its input, mean and rstd (fp32 per row on CUDA)."""
    inp = ctx.cast(x, 4) if ctx.autocast else x  # autocast runs layer_norm in fp32
    grad = x.grad or ctx.base_trains
    saved = (inp, ctx.op((), 1, 4, grad=False), ctx.op((), 1, 4, grad=False)) if grad else ()
    weight_grad = 2 * x.width * ctx.base_grad if ctx.base_trains else 0
    return ctx.op((inp,), x.width, max(inp.nbytes, ctx.norm_weight if not ctx.autocast else 0), saved,
                  weight_grad, grad=grad)


def norm(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    if spec.norm == "layernorm":
        return layer_norm(ctx, x)
    return rms_norm(ctx, x, unit_offset=spec.norm_weight_offset)


def attention(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    if ctx.kind.attention == "linear":
        return _delta_net(ctx, spec, h)
    if spec.is_mla:
        return _latent_attention(ctx, spec, h)
    q, k, v, gate = _qkv(ctx, spec, h)
    if spec.qk_norm == "weightless":  # Llama-4: rotary first, then the weightless norm, rotary layers only
        q, k = _rope(ctx, spec, q, spec.q_dim), _rope(ctx, spec, k, spec.kv_dim)
        q, k = _qk_norm(ctx, spec, q, k)
    else:
        q, k = _qk_norm(ctx, spec, q, k)
        q, k = _rope(ctx, spec, q, spec.q_dim), _rope(ctx, spec, k, spec.kv_dim)
    q = _temperature(ctx, spec, q)
    if ctx.autocast:  # each cast copies its own slice of a fused projection, not the whole of it
        q, k, v = (ctx.op((t,), width, 2) if t.nbytes != 2 else t
                   for t, width in ((q, spec.q_dim), (k, spec.kv_dim), (v, spec.kv_dim)))
    out = _core_attention(ctx, spec, q, k, v)
    head_major = spec.partial_rotary < 1 or spec.rope_by_cat
    if head_major and ctx.attention is not Attention.EAGER:  # eager always copies its output (_eager)
        # cat() of rotated and pass-through halves lays q out head-major, and the kernel's output follows:
        # transpose(1, 2).contiguous() for o_proj then copies it
        out = ctx.op((out,), out.width, out.nbytes)
    if gate is not None:  # Qwen3-Next: output * sigmoid(gate)
        out = _gated(ctx, out, gate)
    return linear(ctx, out, spec.hidden, _module(ctx, spec, "o"), spec.o_bias)


def _qkv(ctx: Context, spec: ModelSpec, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """q, k, v and (with gated attention) the output gate, as the projections give them."""
    if "qkv" in _roles(ctx, spec):
        fused = linear(ctx, h, spec.q_dim + 2 * spec.kv_dim, _module(ctx, spec, "qkv"), spec.qkv_bias)
        # q, k, v are views of one storage: a saved v keeps all of it, their gradients fill one buffer
        return fused, fused, fused, None
    q_out = spec.q_dim * (2 if spec.gated_attention else 1)
    q, k, v = (linear(ctx, h, d, _module(ctx, spec, r), spec.qkv_bias) for r, d in
               (("q", q_out), ("k", spec.kv_dim), ("v", spec.kv_dim)))
    if not spec.gated_attention:
        return q, k, v, None
    # q_proj gives each head's query and gate side by side; reshape copies the strided gate out
    return q, k, v, ctx.op((q,), spec.q_dim, q.nbytes)


def _gated(ctx: Context, out: Tensor, gate: Tensor) -> Tensor:
    """out * sigmoid(gate): sigmoid keeps its output, the product both factors."""
    sig = ctx.kept(ctx.op((gate,), gate.width, gate.nbytes))
    return ctx.op((sig, out), out.width, out.nbytes, saved=(sig, out))


def _qk_norm(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    if spec.qk_norm is None or (spec.qk_norm == "weightless" and not ctx.kind.rope):
        return q, k
    offset, weighted = spec.norm_weight_offset, spec.qk_norm != "weightless"
    if spec.qk_norm == "full":
        liger, ctx.liger = ctx.liger, ctx.liger - {"rms_norm"}  # Liger leaves full-width q/k norms (OLMo-2) alone
        normed = rms_norm(ctx, q, unit_offset=offset), rms_norm(ctx, k, unit_offset=offset)
        ctx.liger = liger
        return normed
    # per head; a gated q_proj's query is a strided view, so the upcast copies only the query half
    return (rms_norm(ctx, q, rows=spec.n_head, unit_offset=offset, width=spec.q_dim, weighted=weighted),
            rms_norm(ctx, k, rows=spec.n_kv_head, unit_offset=offset, weighted=weighted))


def _rope(ctx: Context, spec: ModelSpec, t: Tensor, width: int) -> Tensor:
    if not ctx.kind.rope or "rope" in ctx.liger:
        return t  # GPT-2 (learned positions), NoPE layers; Liger's RoPE rotates q and k in place, saves cos and sin
    if spec.rope_fp32:  # fp32 cos/sin (or fp32 complex rotation) promote the product, which is cast back
        return ctx.cast(ctx.op((t,), width, 4), t.nbytes)
    return ctx.op((t,), width, t.nbytes)  # q*cos + rotate_half(q)*sin: a new tensor, cos/sin shared


def _temperature(ctx: Context, spec: ModelSpec, q: Tensor) -> Tensor:
    """Llama-4's NoPE layers scale q by an fp32 per-position factor, kept for q's gradient (one per position,
    shared by the batch), and cast the fp32 product back."""
    if not (spec.attn_temperature and not ctx.kind.rope):
        return q
    scales = ctx.op((), ctx.seq_len, 4, grad=False, fixed=True)
    return ctx.cast(ctx.op((q,), spec.q_dim, 4, saved=(scales,)), q.nbytes)


def _core_attention(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    if ctx.attention is Attention.EAGER:
        return _eager(ctx, spec, q, k, v)
    if spec.n_kv_head < spec.n_head and (ctx.sdpa_mask or spec.head_dim > 256):
        # transformers lets SDPA broadcast KV heads only without a mask and up to 256-wide heads;
        # otherwise it repeats them to every query head first (repeat_kv), and SDPA saves the copies
        k, v = ctx.op((k,), spec.q_dim, k.nbytes), ctx.op((v,), spec.q_dim, v.nbytes)
    if ctx.unpadded:
        return _varlen(ctx, spec, q, k, v)
    lse = ctx.op((), spec.n_head, 4, grad=False)  # fused kernels keep an fp32 log-sum-exp per head
    bias = (ctx.op((), ctx.seq_len, q.nbytes, grad=False),) if ctx.sdpa_mask else ()  # the mask as an additive bias
    out = ctx.op((q, k, v), spec.attn_out_dim, q.nbytes, saved=(q, k, v, lse) + bias + _rng_state(ctx))
    ctx.ops[-1].saved += (out,)  # and their output
    return out


def _rng_state(ctx: Context) -> tuple[Tensor, ...]:
    """flash-attn 2 saves its RNG state (two int64) whatever the dropout."""
    return (ctx.op((), 16, 1, grad=False, fixed=True),) if ctx.attention is Attention.FLASH else ()


def _varlen(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """flash-attention on padded rows (transformers' _upad_input): q, k and v gathered to the real tokens by an
    int64 index each gather saves, flash_attn_varlen on the copies, its output scattered back to the rows."""
    index = ctx.op((), 1, 8, grad=False)
    q, k, v = (ctx.op((t,), width, t.nbytes, saved=(index,))
               for t, width in ((q, spec.q_dim), (k, spec.kv_dim), (v, spec.kv_dim)))
    lse = ctx.op((), spec.n_head, 4, grad=False)
    out = ctx.op((q, k, v), spec.attn_out_dim, q.nbytes, saved=(q, k, v, lse) + _rng_state(ctx))
    ctx.ops[-1].saved += (out,)
    return ctx.op((out,), spec.attn_out_dim, out.nbytes, saved=(index,))


def _eager(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """matmul, softmax (in fp32 for most families), cast, matmul; KV heads repeated to every query head first."""
    # q and k still views of a fused projection (no rotary to copy them): matmul copies each for bmm
    q = q if q.width == spec.q_dim else ctx.op((q,), spec.q_dim, q.nbytes)
    k = k if k.width == spec.kv_dim else ctx.op((k,), spec.kv_dim, k.nbytes)
    if spec.n_kv_head < spec.n_head:
        k, v = ctx.op((k,), spec.q_dim, k.nbytes), ctx.op((v,), spec.q_dim, v.nbytes)
    elif not (spec.is_mla and ctx.one_sequence):
        # matmul reshapes the head-strided v for bmm: a contiguous copy, which it saves. With one sequence it
        # folds (batch, heads) as a view and saves v itself: MLA's v is a slice of kv_b's output, kept whole
        v = ctx.op((v,), spec.attn_out_dim, v.nbytes)
    scores_width = spec.n_head * ctx.seq_len
    scores = ctx.op((q, k), scores_width, q.nbytes, saved=(q, k))
    if spec.attn_softcap:  # cap * tanh(scores / cap): tanh keeps its output
        capped = ctx.op((scores,), scores_width, q.nbytes)
        ctx.ops[-1].saved = (capped,)
        scores = ctx.op((capped,), scores_width, q.nbytes)
    # most families ask softmax for fp32; the others keep the scores' dtype unless autocast runs it in fp32
    softmax_bytes = q.nbytes if spec.softmax_in_scores_dtype and not ctx.autocast else 4
    if spec.attn_sinks:
        softmax = _softmax_with_sinks(ctx, spec, scores, softmax_bytes)
    else:
        softmax = ctx.op((scores,), scores_width, softmax_bytes)
        ctx.ops[-1].saved = (softmax,)
    probs = softmax if softmax.nbytes == q.nbytes else ctx.op((softmax,), scores_width, q.nbytes)
    ctx.hold(scores)  # softmax(attn_weights, dtype=...).to(...): the scores live until the cast returns
    if spec.dropout:  # attention dropout on the probabilities: a new tensor and a one-byte mask
        probs = ctx.op((probs,), scores_width, q.nbytes, saved=(ctx.op((), scores_width, 1, grad=False),))
    out = ctx.op((probs, v), spec.attn_out_dim, q.nbytes, saved=(probs, v))
    return ctx.op((out,), spec.attn_out_dim, q.nbytes)  # transpose(1, 2).contiguous() for o_proj


def _softmax_with_sinks(ctx: Context, spec: ModelSpec, scores: Tensor, nbytes: int) -> Tensor:
    """gpt-oss: each head's sink logit joins the row (cat), the row max is subtracted (max keeps its int64
    index), softmax keeps its output; the sink column is sliced off as a view of that output."""
    width = spec.n_head * (ctx.seq_len + 1)
    combined = ctx.op((scores,), width, nbytes)
    index = ctx.op((), spec.n_head * 8 // nbytes, nbytes, grad=False)
    shifted = ctx.op((combined,), width, nbytes, saved=(index,))
    return ctx.kept(ctx.op((shifted,), width, nbytes))


# --- multi-head latent attention (DeepSeek-V3) -----------------------------------------------------

def _latent_attention(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """MLA as transformers runs it: q through q_a -> norm -> q_b; one compressed latent (kv_a) whose first
    kv_lora_rank values are normalised and expanded by kv_b into each head's k_nope and v, the rest a rotary
    key shared by all heads; q and k concatenate their nope and rotary parts into new tensors."""
    heads, nope, rot = spec.n_head, spec.qk_nope_head_dim, spec.qk_rope_head_dim
    if spec.q_lora_rank:
        q = linear(ctx, h, spec.q_lora_rank, "q_a_proj", spec.qkv_bias)
        q = linear(ctx, rms_norm(ctx, q), spec.q_dim, "q_b_proj")
    else:
        q = linear(ctx, h, spec.q_dim, "q_proj")
    kv = linear(ctx, h, spec.kv_lora_rank + rot, "kv_a_proj_with_mqa", spec.qkv_bias)
    latent = rms_norm(ctx, kv, width=spec.kv_lora_rank)  # on a slice of kv_a's output
    query = ctx.op((q, _rope(ctx, spec, q, heads * rot)), spec.q_dim, q.nbytes)  # cat(q_pass, rotated q_rot)
    k_rot = _rope(ctx, spec, kv, rot)
    kv_up = linear(ctx, latent, heads * (nope + spec.v_head_dim), "kv_b_proj")
    key = ctx.op((kv_up, k_rot), spec.q_dim, kv_up.nbytes)  # new_empty, k_nope and the shared k_rot copied in
    if ctx.autocast:
        query, key, kv_up = (t if t.nbytes == 2 else ctx.op((t,), t.width, 2) for t in (query, key, kv_up))
    out = _core_attention(ctx, spec, query, key, kv_up)  # v: a view of kv_b's output, which SDPA keeps whole
    if ctx.attention is not Attention.EAGER:
        out = ctx.op((out,), out.width, out.nbytes)  # the head-major cat makes the output's transpose a copy
    return linear(ctx, out, spec.hidden, "o_proj", spec.o_bias)


# --- Gated DeltaNet linear attention (Qwen3-Next) ----------------------------------------------------
DELTA_CHUNK = 64  # transformers' torch_chunk_gated_delta_rule works through the sequence 64 tokens at a time


def _delta_net(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """Qwen3-Next's linear_attention layer on transformers' torch path (no flash-linear-attention or causal-conv1d
    installed): projections, a causal depthwise conv with SiLU, fp32 gates, the chunked delta rule, then a
    gated RMSNorm. With the fused kernels a run keeps less (no per-chunk fp32 state): planning the torch path
    errs on the safe side."""
    H, dk, dv, dt = spec.linear_v_heads, spec.linear_k_head_dim, spec.linear_v_head_dim, h.nbytes
    key_dim = spec.linear_k_heads * dk
    qkvz = linear(ctx, h, 2 * key_dim + 2 * H * dv, "in_proj_qkvz")
    ba = linear(ctx, h, 2 * H, "in_proj_ba")
    # regrouping heads out of the fused projections copies q, k, v, z, b and a
    q, k, v, z = (ctx.op((qkvz,), width, dt) for width in (key_dim, key_dim, H * dv, H * dv))
    b, a = ctx.op((ba,), H, dt), ctx.op((ba,), H, dt)
    mixed = _causal_conv(ctx, spec, ctx.op((q, k, v), 2 * key_dim + H * dv, dt))
    beta = ctx.kept(ctx.op((b,), H, dt))  # sigmoid
    decay = _decay(ctx, spec, a)
    out = _chunked_delta_rule(ctx, spec, mixed, beta, decay)
    return linear(ctx, _gated_rms_norm(ctx, spec, out, z), spec.hidden, "out_proj")


def _causal_conv(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    """F.conv1d padded by kernel - 1 on both sides, sliced, then SiLU, which keeps the whole padded output."""
    trains, kernel = ctx.base_trains, spec.linear_conv_kernel
    padded = _per_token(x.width * (ctx.seq_len + kernel - 1), ctx.seq_len)
    conv = ctx.op((x,), padded, x.nbytes, saved=(x,),  # convolution keeps its input, frozen weight or not
                  param_grad=x.width * kernel * ctx.base_grad if trains else 0)
    return ctx.op((conv,), x.width, x.nbytes, saved=(conv,))


def _decay(ctx: Context, spec: ModelSpec, a: Tensor) -> Tensor:
    """g = -exp(A_log) * softplus(a + dt_bias), in fp32: softplus keeps its input, the product both factors
    (-exp(A_log) per head and layer, whose exp keeps its output when A_log trains)."""
    H, trains = spec.linear_v_heads, ctx.base_trains
    shifted = ctx.op((ctx.op((a,), H, 4),), H, 4, param_grad=H * ctx.base_grad if trains else 0)  # + dt_bias
    soft = ctx.op((shifted,), H, 4, saved=(shifted,))
    rate = ctx.op((), H, 4, grad=False, fixed=True)
    rate_exp = (ctx.op((), H, 4, grad=False, fixed=True),) if trains else ()
    return ctx.op((soft,), H, 4, saved=(rate,) + rate_exp + ((soft,) if trains else ()),
                  param_grad=H * ctx.base_grad if trains else 0)


def _chunked_delta_rule(ctx: Context, spec: ModelSpec, mixed: Tensor, beta: Tensor, decay: Tensor) -> Tensor:
    """torch_chunk_gated_delta_rule, op by op: everything in fp32, padded to whole chunks; within each chunk
    (c x c per head) the UT system and the intra-chunk attention, then a scan over the chunks whose
    recurrent state (dk x dv per head) each chunk keeps for backward."""
    H, dk, dv, c = spec.linear_v_heads, spec.linear_k_head_dim, spec.linear_v_head_dim, DELTA_CHUNK
    chunks, seq = -(-ctx.seq_len // c), ctx.seq_len
    pad = lambda width: _per_token(width * chunks * c, seq)  # noqa: E731  (a per-token width, padded)
    repeat = spec.linear_v_heads > spec.linear_k_heads
    q, k = ((ctx.op((mixed,), H * dk, mixed.nbytes) if repeat else mixed) for _ in range(2))  # repeat_interleave
    q32, k32, v32 = ctx.op((q,), H * dk, 4), ctx.op((k,), H * dk, 4), ctx.op((mixed,), H * dv, 4)
    beta32, decay32 = ctx.op((beta,), H, 4), ctx.op((decay,), H, 4)
    query = ctx.op((_l2norm(ctx, q32, H),), H * dk, 4)  # times the head's scaling
    query, key, value, beta32, decay32 = (ctx.op((t,), pad(w), 4) for t, w in  # F.pad: copies
                                          ((query, H * dk), (_l2norm(ctx, k32, H), H * dk), (v32, H * dv),
                                           (beta32, H), (decay32, H)))
    v_beta = ctx.op((value, beta32), pad(H * dv), 4, saved=(value, beta32))
    k_beta = ctx.op((key, beta32), pad(H * dk), 4, saved=(key, beta32))
    cum = ctx.op((decay32,), pad(H), 4)
    mask = ctx.op((), c * c, 1, grad=False, fixed=True)  # the strictly upper triangle, shared by every chunk
    masked = ctx.op((ctx.op((cum,), pad(H * c), 4),), pad(H * c), 4, saved=(mask,))  # differences, upper masked
    pairwise = ctx.kept(ctx.op((masked,), pad(H * c), 4))  # exp
    ut = _product(ctx, ctx.op((k_beta, key), pad(H * c), 4, saved=(k_beta, key)), pairwise)
    intra = _product(ctx, ctx.op((query, key), pad(H * c), 4, saved=(query, key)), pairwise)
    decayed_k_beta = _product(ctx, k_beta, ctx.kept(ctx.op((cum,), pad(H), 4)))
    new_values = _solve(ctx, ut, v_beta)
    k_cumdecay = _solve(ctx, ut, decayed_k_beta)
    query = _product(ctx, query, ctx.kept(ctx.op((cum,), pad(H), 4)), keep_first=chunks > 1)
    key = _product(ctx, key, ctx.kept(ctx.op((cum,), pad(H), 4)))
    chunk_decay = ctx.kept(ctx.op((cum,), _per_token(H * 4 * chunks, seq), 1))
    # the scan: each chunk keeps its incoming state (the first a zero state), its v_new and, once the state
    # carries a gradient, the per-chunk decay; the last chunk's update is computed and dropped
    states = ctx.op((), _per_token(H * dk * dv * 4 * chunks, seq), 1, grad=False)
    v_new = ctx.op((new_values, k_cumdecay), pad(H * dv), 4, saved=(k_cumdecay, states))
    scanned = ctx.op((intra, v_new, key, query), pad(H * dv), 4,
                     saved=(intra, v_new, key) + ((chunk_decay, query) if chunks > 1 else ()))
    return ctx.op((scanned,), H * dv, mixed.nbytes)  # unpadded, back to the input dtype


def _per_token(total: int, tokens: int) -> int:
    """A width per token for something `total` wide per sequence, rounded up."""
    return -(-total // tokens)


def _l2norm(ctx: Context, x: Tensor, rows: int) -> Tensor:
    inv = ctx.op((x,), rows, 4, saved=(x,))  # rsqrt((x * x).sum(-1) + eps)
    return ctx.op((x, inv), x.width, 4, saved=(x, inv))


def _product(ctx: Context, x: Tensor, y: Tensor, keep_first: bool = True) -> Tensor:
    return ctx.op((x, y), max(x.width, y.width), 4, saved=((x,) if keep_first else ()) + (y,))


def _solve(ctx: Context, system: Tensor, rhs: Tensor) -> Tensor:
    """solve_triangular keeps the system and its result."""
    out = ctx.op((system, rhs), rhs.width, 4, saved=(system,))
    ctx.ops[-1].saved += (out,)
    return out


def _gated_rms_norm(ctx: Context, spec: ModelSpec, x: Tensor, z: Tensor) -> Tensor:
    """Qwen3NextRMSNormGated per value head: fp32 RMS, the weight in the input dtype, then times SiLU(fp32 z),
    cast back."""
    H, dv, trains = spec.linear_v_heads, spec.linear_v_head_dim, ctx.base_trains
    x32 = ctx.cast(x, 4)
    rsqrt = ctx.op((x32,), H, 4, saved=(x32,))
    normed = ctx.cast(ctx.op((x32, rsqrt), H * dv, 4, saved=(x32, rsqrt)), x.nbytes)
    scaled = ctx.op((normed,), H * dv, x.nbytes, saved=(normed,) if trains else (),
                    param_grad=dv * ctx.base_grad if trains else 0, grad=True)
    z32 = ctx.cast(z, 4)
    act = ctx.op((z32,), H * dv, 4, saved=(z32,))
    return ctx.cast(ctx.op((scaled, act), H * dv, 4, saved=(scaled, act)), x.nbytes)


# --- MLP and experts -----------------------------------------------------------------------------

def mlp(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    if ctx.kind.moe:
        return _moe(ctx, spec, h)
    return _dense_mlp(ctx, spec, h, spec.intermediate)


def _dense_mlp(ctx: Context, spec: ModelSpec, h: Tensor, i: int) -> Tensor:
    b = spec.mlp_bias and not spec.is_moe  # an MoE model's mlp_bias is its experts'
    if not spec.mlp_gated:
        up = linear(ctx, h, i, _module(ctx, spec, "up"), b)
        return linear(ctx, _activation(ctx, spec, up, i), spec.hidden, _module(ctx, spec, "down"), b)
    if "gated" in ctx.liger:
        gate, up = _gate_up(ctx, spec, h, i, b)
        prod = ctx.op((gate, up), i, up.nbytes, saved=(gate, up))  # LigerSiLUMulFunction: silu recomputed
        ctx.ops[-1].grads_in_saved = True
        return linear(ctx, prod, spec.hidden, _module(ctx, spec, "down"), b)
    if "gate_up" in _roles(ctx, spec):
        fused = linear(ctx, h, 2 * i, _module(ctx, spec, "gate_up"), b)
        gate = up = fused  # chunk() views: their gradients fill one buffer of the fused width
        act = _activation(ctx, spec, gate, i)
    else:  # down(act(gate(x)) * up(x)): the activation runs before up_proj
        act = _activation(ctx, spec, linear(ctx, h, i, _module(ctx, spec, "gate"), b), i)
        up = linear(ctx, h, i, _module(ctx, spec, "up"), b)
    prod = ctx.op((act, up), i, up.nbytes, saved=(act, up))
    return linear(ctx, prod, spec.hidden, _module(ctx, spec, "down"), b)


def _gate_up(ctx: Context, spec: ModelSpec, h: Tensor, i: int, b: bool) -> tuple[Tensor, Tensor]:
    """gate_proj(x) and up_proj(x), or the halves of a fused gate_up, which Liger's ensure_contiguous copies."""
    if "gate_up" not in _roles(ctx, spec):
        return tuple(linear(ctx, h, i, _module(ctx, spec, role), b) for role in ("gate", "up"))
    fused = linear(ctx, h, 2 * i, _module(ctx, spec, "gate_up"), b)
    return ctx.op((fused,), i, fused.nbytes), ctx.op((fused,), i, fused.nbytes)


def _activation(ctx: Context, spec: ModelSpec, x: Tensor, width: int) -> Tensor:
    extra = tuple(ctx.op((), width, x.nbytes, grad=False) for _ in range(ACTIVATION_SAVES.get(spec.activation, 1) - 1))
    return ctx.op((x,), width, x.nbytes, saved=(x,) + extra)  # silu / gelu derivatives need their input


def _moe(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """Routed experts as transformers 5 runs them, plus the shared expert where the family has one, in the
    family's order (Qwen3-Next computes its shared expert first and gates it last)."""
    width = spec.shared_expert_intermediate
    shared = _dense_mlp(ctx, spec, h, width) if spec.shared_expert_gate else None
    if spec.router == "sigmoid_all":
        out = _experts_on_every_token(ctx, spec, h)
    else:
        out = _grouped_experts(ctx, spec, h, _route(ctx, spec, h))
    if not width:
        return out
    if shared is None:
        shared = _dense_mlp(ctx, spec, h, width)
    else:
        shared = _gated(ctx, shared, linear(ctx, h, 1, "shared_expert_gate", quantized=False))
    return ctx.add(out, shared)


def _route(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """The routing weight of each chosen expert (k per token), with what the router keeps for backward."""
    k, e, dt = spec.experts_per_token, spec.n_experts, h.nbytes
    if spec.router == "sigmoid_group":
        return _group_limited_route(ctx, spec, h)
    logits = linear(ctx, h, e, spec.router_module, spec.router_bias, quantized=False)
    topk_index = ctx.op((), k * 8 // dt, dt, grad=False)  # top-k keeps its int64 indices
    if spec.router == "softmax_topk":  # gpt-oss: top-k logits, softmax over them in their dtype
        top = ctx.op((logits,), k, dt, saved=(topk_index,))
        return ctx.kept(ctx.op((top,), k, dt))
    probs = ctx.kept(ctx.op((logits,), e, 4))                        # router softmax in fp32
    top = ctx.op((probs,), k, 4, saved=(topk_index,))
    return ctx.cast(_renormalised(ctx, top) if spec.norm_topk_prob else top, dt)


def _renormalised(ctx: Context, top: Tensor) -> Tensor:
    """top /= top.sum(-1): the in-place division keeps the sum and its result."""
    total = ctx.op((top,), 1, top.nbytes)
    out = ctx.op((top, total), top.width, top.nbytes, saved=(total,))
    ctx.ops[-1].saved += (out,)
    return out


def _group_limited_route(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """DeepSeek-V3: fp32 router (its weight stays fp32), sigmoid scores, the best `topk_group` of `n_group`
    expert groups, top-k within them, weights gathered from the scores, renormalised and scaled: all fp32.
    The group selection's top-k indices and mask are saved although nothing needs them after the forward."""
    k, e, g = spec.experts_per_token, spec.n_experts, spec.n_group
    trains = ctx.base_trains
    h32 = ctx.op((h,), spec.hidden, 4)  # hidden_states.float(), kept for the fp32 weight's gradient
    logits = ctx.op((h32,), e, 4, saved=(h32,) if trains else (), param_grad=e * spec.hidden * 4 if trains else 0)
    scores = ctx.kept(ctx.op((logits,), e, 4))  # sigmoid
    dead = ctx.op((), g * 2 * 8 + spec.topk_group * 8 + e, 1, grad=False)  # group top-2/top-k indices, mask
    index = ctx.op((), k * 2, 4, grad=False)  # the chosen experts' int64 indices, kept by gather
    picked = ctx.op((scores,), k, 4, saved=(index, dead))
    # then times routed_scaling_factor (a scalar: nothing kept)
    return _renormalised(ctx, picked) if spec.norm_topk_prob else picked


def _grouped_experts(ctx: Context, spec: ModelSpec, h: Tensor, weights: Tensor) -> Tensor:
    """transformers' grouped_mm path: tokens sorted by expert, one grouped matmul per projection, each
    token's expert outputs scaled by their routing weights and summed back in token order."""
    k, i, dt, trains = spec.experts_per_token, spec.moe_intermediate, h.nbytes, ctx.base_trains
    # int64 per route: the gather's token index, the sort permutation, its inverse (and, when expert biases
    # train, the sorted expert ids they are gathered by); and the int32 group offsets, one per expert
    routes = 3 + (1 if spec.mlp_bias and trains else 0)
    indices = ctx.op((), routes * k * 8 // dt, dt, grad=False)
    offsets = ctx.op((), spec.n_experts * 4, 1, grad=False, fixed=True)
    gathered = ctx.op((h,), k * spec.hidden, dt, saved=(indices, offsets))  # each token once per chosen expert
    expert_grad = spec.n_experts * spec.hidden * i * ctx.base_grad if trains else 0
    bias_grad = spec.n_experts * ctx.base_grad if trains and spec.mlp_bias else 0
    _expert_biases(ctx, spec, k * 2 * i, dt)
    gate_up = ctx.op((gathered,), k * 2 * i, dt, saved=(gathered,) if trains else (),
                     param_grad=2 * expert_grad + 2 * i * bias_grad, grad=True)
    prod = _expert_gate(ctx, spec, gate_up, k * i)
    _expert_biases(ctx, spec, k * spec.hidden, dt)
    down = ctx.op((prod,), k * spec.hidden, dt, saved=(prod,) if trains else (),
                  param_grad=expert_grad + spec.hidden * bias_grad, grad=True)
    sorted_weights = ctx.op((weights,), k, weights.nbytes)  # sample_weights[perm]
    weighted = ctx.op((down, sorted_weights), k * spec.hidden, max(dt, weights.nbytes), saved=(down, sorted_weights))
    in_order = ctx.op((weighted,), k * spec.hidden, weighted.nbytes)  # weighted_out[inv_perm]: a copy
    summed = ctx.op((in_order,), spec.hidden, weighted.nbytes)  # the sum over each token's k experts
    return ctx.cast(summed, dt)


def _expert_biases(ctx: Context, spec: ModelSpec, width: int, nbytes: int) -> None:
    """gpt-oss gathers each route's expert bias (bias[expert_ids]) before adding it in place: a transient."""
    if spec.mlp_bias:
        ctx.hold(ctx.op((), width, nbytes, grad=False))


def _expert_gate(ctx: Context, spec: ModelSpec, gate_up: Tensor, width: int) -> Tensor:
    """act(gate) * up over the experts' fused output (its halves are views, so saving either keeps it all)."""
    dt = gate_up.nbytes
    if spec.swiglu_limit is None:
        act = ctx.op((gate_up,), width, dt, saved=(gate_up,))
        return ctx.op((act, gate_up), width, dt, saved=(act,))
    # gpt-oss: gate clamped from above, up both ways (each clamp keeps its input); gate * sigmoid(alpha * gate),
    # then (up + 1) * that
    gate = ctx.op((gate_up,), width, dt, saved=(gate_up,))
    up = ctx.op((gate_up,), width, dt)
    sig = ctx.kept(ctx.op((ctx.op((gate,), width, dt),), width, dt))  # sigmoid(alpha * gate)
    glu = ctx.op((gate, sig), width, dt, saved=(gate, sig))
    up1 = ctx.op((up,), width, dt)
    return ctx.op((up1, glu), width, dt, saved=(up1, glu))


def _experts_on_every_token(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """Llama-4: sigmoid scores of the top-k logits (0 for the others), and every expert runs every token:
    the input repeated per expert and scaled by its score, two batched matmuls over all experts."""
    e, i, dt, trains = spec.n_experts, spec.moe_intermediate, h.nbytes, ctx.base_trains
    logits = linear(ctx, h, e, spec.router_module, spec.router_bias, quantized=False)
    topk_index = ctx.op((), spec.experts_per_token * 8 // dt, dt, grad=False)
    scattered = ctx.op((logits,), e, dt, saved=(topk_index,))         # -inf but at the top-k
    sig = ctx.kept(ctx.op((ctx.op((scattered,), e, 4),), e, 4))      # sigmoid in fp32
    column = ctx.op((ctx.cast(sig, dt),), e, dt)                     # transpose(0, 1).reshape(-1, 1): a copy
    repeated = ctx.op((h,), e * spec.hidden, dt)
    routed = ctx.op((repeated, column), e * spec.hidden, dt, saved=(repeated, column))
    expert_grad = e * spec.hidden * i * ctx.base_grad if trains else 0
    gate_up = ctx.op((routed,), e * 2 * i, dt, saved=(routed,) if trains else (), param_grad=2 * expert_grad,
                     grad=True)
    prod = _expert_gate(ctx, spec, gate_up, e * i)
    down = ctx.op((prod,), e * spec.hidden, dt, saved=(prod,) if trains else (), param_grad=expert_grad, grad=True)
    return ctx.op((down,), spec.hidden, dt)  # the sum over experts


def _roles(ctx: Context, spec: ModelSpec) -> set[str]:
    """The roles of the layer's own linears (routed experts aside: they are walked as experts)."""
    return {lin.role for lin in spec.kind_linears(ctx.kind) if lin.experts == 1}


def _module(ctx: Context, spec: ModelSpec, role: str) -> str:
    """The module name of a role in the layer being walked (layers of different kinds name them differently)."""
    for lin in spec.kind_linears(ctx.kind):
        if lin.experts == 1 and (lin.role == role or role in FUSED_ROLES.get(lin.role, ())):
            return lin.module
    return role


def residual(ctx: Context, x: Tensor, y: Tensor) -> Tensor:
    return ctx.add(x, y)


# --- layers ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSaved:
    per_token: int                          # bytes saved for backward per token
    per_layer: int                          # bytes saved whatever the tokens (autocast's weight copies)
    backward: tuple[tuple[int, int, int], ...]  # each backward step: live (per token, per layer) bytes of
                                                # saved tensors and gradients, and weight gradients so far
    offloaded_backward: tuple[tuple[int, int, int], ...]  # the same with saved tensors in host memory
    hooked_backward: tuple[tuple[int, int, int], ...]     # the same with each weight gradient live only while
                                                          # it is made (a ZeRO hook moves it to a bucket)
    grad_steps: tuple[tuple[int, int, int], ...]          # at each op that makes a weight gradient, in order:
                                                          # live bytes as in hooked_backward, and the weight
                                                          # gradient bytes made so far
    forward: tuple[tuple[int, int], ...]        # each forward step: live (per token, per layer) bytes
    unsaved_forward: tuple[tuple[int, int], ...]  # the same under no_grad (checkpointing's first forward)
    pending: int                                # bytes per token of gradients live when backward first
                                                # needs a saved tensor (and checkpointing recomputes)

    def bytes(self, tokens: int) -> int:
        return self.per_token * tokens + self.per_layer

    def backward_peak(self, tokens: int, offloaded: bool = False, hooked: bool = False) -> tuple[int, int]:
        """The step of this layer's backward that holds the most: (activation bytes, weight-gradient bytes)."""
        steps = self.hooked_backward if hooked else self.offloaded_backward if offloaded else self.backward
        tok, fixed, grads = max(steps, key=lambda s: s[0] * tokens + s[1] + s[2])
        return tok * tokens + fixed, grads

    def forward_peak(self, tokens: int, keeps_saved: bool = True) -> int:
        """The most this layer holds while its forward runs: saved tensors (unless under no_grad) and
        transient results."""
        return max(tok * tokens + fixed for tok, fixed in (self.forward if keeps_saved else self.unsaved_forward))


def layer_saved(spec: ModelSpec, cfg: TrainConfig, first: bool = False) -> LayerSaved:
    """What one transformer layer saves for backward, and holds while its backward runs.

    `first`: the first layer (whose input needs no gradient when the embedding is frozen: LoRA, QLoRA).
    Otherwise one layer standing for all the others: where layers differ (sliding and full attention, NoPE,
    linear attention, dense and MoE), it saves their mean (rounded up) and its peaks are those of the kind
    that holds the most, which over-predicts a layer whose kind holds less by that difference.
    """
    key = walk_key(cfg, spec)
    if first:
        return _layer_saved(spec, key, True, spec.layer_kind(0))
    return _rest_saved(spec, key)


def kind_saved(spec: ModelSpec, cfg: TrainConfig, kind: LayerKind) -> LayerSaved:
    """`layer_saved` of one kind of layer (not the first): what a layer of that kind saves and holds."""
    return _layer_saved(spec, walk_key(cfg, spec), False, kind)


def layer_walks(spec: ModelSpec, cfg: TrainConfig) -> list[tuple[LayerSaved, int]]:
    """(walk, how many layers) for each kind of layer after the first, which `layer_saved(first=True)` gives."""
    return _kind_walks(spec, walk_key(cfg, spec))


def _kind_walks(spec: ModelSpec, key: tuple) -> list[tuple[LayerSaved, int]]:
    counts: dict[LayerKind, int] = {}
    for layer in range(1, spec.n_layer):
        kind = spec.layer_kind(layer)
        counts[kind] = counts.get(kind, 0) + 1
    return [(_layer_saved(spec, key, False, kind), n) for kind, n in counts.items()]


@lru_cache(maxsize=4096)
def _rest_saved(spec: ModelSpec, key: tuple) -> LayerSaved:
    walks = _kind_walks(spec, key)
    if len(walks) <= 1:
        return _layer_saved(spec, key, False, spec.layer_kind(spec.n_layer - 1))
    layers = sum(n for _, n in walks)

    def mean(values: list[tuple[int, int]]) -> int:
        return -(-sum(n * v for v, n in values) // layers)  # rounded up: never under

    def peaks(field: str) -> tuple[tuple[int, ...], ...]:
        return _frontier([s for w, _ in walks for s in getattr(w, field)])

    # gradient reductions run inside the kind that makes the most weight-gradient bytes
    largest = max((w for w, _ in walks), key=lambda w: w.grad_steps[-1][2] if w.grad_steps else 0)
    return LayerSaved(per_token=mean([(w.per_token, n) for w, n in walks]),
                      per_layer=mean([(w.per_layer, n) for w, n in walks]),
                      backward=peaks("backward"), offloaded_backward=peaks("offloaded_backward"),
                      hooked_backward=peaks("hooked_backward"), grad_steps=largest.grad_steps,
                      forward=peaks("forward"), unsaved_forward=peaks("unsaved_forward"),
                      pending=max(w.pending for w, _ in walks))


def walk_key(cfg: TrainConfig, spec: ModelSpec | None = None) -> tuple:
    """The fields the walk reads, so one cached walk serves every micro-batch, GPU count and optimizer."""
    seq = cfg.seq_len if cfg.attn is not Attention.FLASH or _per_sequence(spec) else 1  # s x s terms and masks
    one = bool(spec is not None and spec.is_mla and cfg.micro_batch == 1)  # MLA's eager v: see _eager
    return (cfg.method, cfg.precision, cfg.attn, cfg.lora_r, cfg.lora_targets, _walk_sharding(cfg), seq, one,
            cfg.batching, cfg.liger_kernels)


def _walk_sharding(cfg: TrainConfig) -> Sharding:
    """The engine as far as the layers see it: DeepSpeed's 16-bit cast, ZeRO-3's linear, FSDP's gathered dtypes."""
    if cfg.sharding in (Sharding.ZERO3, Sharding.FSDP, Sharding.FSDP1):
        return cfg.sharding
    return Sharding.ZERO2 if deepspeed_16bit(cfg) else Sharding.NONE


def _per_sequence(spec: ModelSpec | None) -> bool:
    """Whether the walk reads the sequence length whatever the attention kernel: DeltaNet pads to whole chunks,
    Llama-4's NoPE temperature keeps one factor per position."""
    return spec is not None and (spec.attn_temperature or any(k.attention == "linear" for k, _ in spec.layer_kinds()))


def _walk_config(key: tuple) -> TrainConfig:
    method, precision, attn, lora_r, lora_targets, sharding, seq, one, batching, liger = key
    return TrainConfig(method=method, precision=precision, attn=attn, lora_r=lora_r, lora_targets=lora_targets,
                       sharding=sharding, gpus=1 if sharding is Sharding.NONE else 2, seq_len=seq,
                       micro_batch=1 if one else 2, batching=batching, liger_kernels=liger)


@lru_cache(maxsize=4096)
def _layer_saved(spec: ModelSpec, key: tuple, first: bool, kind: LayerKind) -> LayerSaved:
    cfg = _walk_config(key)
    ctx = context(spec, cfg, kind)
    x = Tensor(spec.hidden, stream_bytes(cfg), grad=cfg.method is Method.FULL or not first)
    out = _block(ctx, spec, x)
    tok, fixed = ctx.saved_size()
    steps, pending = backward_walk(ctx.ops, out)
    hooked = backward_walk(ctx.ops, out, hooked=True)[0]
    return LayerSaved(per_token=tok, per_layer=fixed, backward=_frontier(steps),
                      offloaded_backward=_frontier(backward_walk(ctx.ops, out, offloaded=True)[0]),
                      hooked_backward=_frontier(hooked), grad_steps=_made_so_far(hooked),
                      forward=_frontier(forward_walk(ctx.ops)),
                      unsaved_forward=_frontier(forward_walk(ctx.ops, keeps_saved=False)), pending=pending)


def _made_so_far(hooked: list[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    """The steps of a hooked backward walk that make a weight gradient, each with the gradient bytes made so far."""
    out, made = [], 0
    for tok, fixed, grad in hooked:
        if grad:
            made += grad
            out.append((tok, fixed, made))
    return tuple(out)


def _frontier(steps: list[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """The steps no other step beats both per token and per layer: only these can be the peak."""
    kept, best_fixed = [], -1
    for step in sorted(set(steps), key=lambda s: (-s[0], -sum(s[1:]))):  # most per token first
        if sum(step[1:]) > best_fixed:
            kept.append(step)
            best_fixed = sum(step[1:])
    return tuple(sorted(kept))


def forward_walk(ops: list[Op], keeps_saved: bool = True) -> list[tuple[int, int]]:
    """Live bytes as each op's output appears: what is saved so far, plus results still to be consumed.
    Without `keeps_saved` (a checkpointed layer's first forward, under no_grad) nothing is kept for backward."""
    last_use = {t.id: j for j, op in enumerate(ops) for t in op.inputs}
    saved = {t.id for op in ops for t in op.saved} if keeps_saved else set()
    live: dict[int, tuple[int, int]] = {}
    steps = []
    for j, op in enumerate(ops):
        if op.scratch_peak:
            tok, fixed = _sum(live.values())
            steps.append((tok, fixed + op.scratch_peak))
        live[op.output.id] = op.output.size
        tok, fixed = _sum(live.values())
        steps.append((tok, fixed + op.scratch))
        for t in op.inputs:
            if last_use[t.id] == j and t.id not in saved:
                live.pop(t.id, None)  # its last consumer ran and nothing saved it
    return steps


def backward_walk(ops: list[Op], out: Tensor, offloaded: bool = False,
                  hooked: bool = False) -> tuple[list[tuple[int, int, int]], int]:
    """Live bytes at each backward step: ops run in reverse, each allocating its inputs' gradients
    and its weight's before freeing its output's gradient and what only it had saved. Also the
    gradient bytes per token live when the first op that needs a saved tensor runs. `offloaded`: saved
    tensors wait in host memory and are on the GPU only while the op that needs them runs. `hooked`: a
    weight's gradient leaves as soon as it is made (ZeRO's hooks copy it into a bucket)."""
    users = Counter(t.id for op in ops for t in set(op.saved))
    saved = {} if offloaded else {t.id: t.size for op in ops for t in op.saved}
    grads: dict[int, int] = {out.id: out.id}  # tensor -> the buffer holding its gradient
    buffers: dict[int, tuple[int, int]] = {out.id: out.size}
    param_grads, steps, pending = 0, [], None
    for op in reversed(ops):
        if op.output.id not in grads:
            continue  # no gradient reaches it
        if pending is None and op.saved:
            pending = _sum(buffers.values())[0]
        passed = {t.id for t in op.inputs if t.grad and _shares_grad(op, t) and t.id not in grads}
        new = [t for t in op.inputs if t.grad and t.id not in passed]
        restored = [t.size for t in {t.id: t for t in op.saved}.values()] if offloaded else []
        if op.scratch_peak:
            tok, fixed = _sum(list(buffers.values()) + list(saved.values()) + restored)
            steps.append((tok, fixed + op.scratch_peak, 0 if hooked else param_grads))
        made = [] if op.grads_in_saved else [t.size for t in new]
        live = _sum(list(buffers.values()) + list(saved.values()) + made + restored)
        param_grads = op.param_grad if hooked else param_grads + op.param_grad
        steps.append((live[0], live[1] + op.scratch, param_grads))
        out_buffer = grads.pop(op.output.id)
        for tid in passed:
            grads[tid] = out_buffer
        for t in new:
            if t.id not in grads:  # a second consumer's gradient is summed into the same buffer
                grads[t.id], buffers[t.id] = t.id, t.size
        if out_buffer not in grads.values():
            del buffers[out_buffer]
        for t in set(op.saved):
            users[t.id] -= 1
            if not users[t.id]:
                saved.pop(t.id, None)
    return steps or [(*_sum(saved.values()), 0)], pending or out.size[0]


def _shares_grad(op: Op, t: Tensor) -> bool:
    """AddBackward returns the incoming gradient as each input's; only a dtype change copies it."""
    return op.passes_grad and t.nbytes == op.output.nbytes and t.width == op.output.width


def _block(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    if spec.parallel_block:
        h = norm(ctx, spec, x)
        h2 = norm(ctx, spec, x) if spec.norms_per_layer == 2 else h
        a = _call(ctx, attention, spec, h)
        return residual(ctx, x, residual(ctx, a, _call(ctx, mlp, spec, h2)))
    if spec.norm_placement == "post":  # x + norm(attn(x)), x + norm(mlp(x))
        x = residual(ctx, x, norm(ctx, spec, _call(ctx, attention, spec, x)))
        return residual(ctx, x, norm(ctx, spec, _call(ctx, mlp, spec, x)))
    sandwich = spec.norm_placement == "sandwich"  # each sub-block's output normalised too
    a = dropout(ctx, spec, _call(ctx, attention, spec, norm(ctx, spec, x)))
    x = residual(ctx, x, norm(ctx, spec, a) if sandwich else a)
    m = dropout(ctx, spec, _call(ctx, mlp, spec, norm(ctx, spec, x)))
    return residual(ctx, x, norm(ctx, spec, m) if sandwich else m)


def _call(ctx: Context, sub_block, spec: ModelSpec, h: Tensor) -> Tensor:
    """Attention or MLP on `h`, which the layer's forward holds until the call returns."""
    out = sub_block(ctx, spec, h)
    ctx.hold(h)
    return out


def dropout(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    """Residual dropout in training: a new output and a saved one-byte mask per element."""
    if not spec.dropout:
        return x
    mask = ctx.op((), x.width, 1, grad=False)
    return ctx.op((x,), x.width, x.nbytes, saved=(mask,))


def head_saved(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> int:
    """Bytes saved outside the layers: embedding dropout's mask, the final norm and lm_head (with
    autocast's 16-bit copy of an fp32 lm_head weight)."""
    per_token, per_model = _head_saved(spec, walk_key(cfg, spec))
    return per_token * tokens + per_model


def final_norm_backward(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> int:
    """The most the final norm's backward holds (its saved tensors, the incoming gradient and its own), when a
    fused loss hands it the hidden states' gradient."""
    steps = _final_norm_backward(spec, walk_key(cfg))
    return max(tok * tokens + fixed for tok, fixed, _ in steps)


@lru_cache(maxsize=4096)
def _final_norm_backward(spec: ModelSpec, key: tuple) -> tuple[tuple[int, int, int], ...]:
    cfg = _walk_config(key)
    ctx = context(spec, cfg)
    ctx.liger_norm_in_place = liger_norm_in_place(spec, final=True)
    out = norm(ctx, spec, Tensor(spec.hidden, stream_bytes(cfg), grad=True))
    return _frontier(backward_walk(ctx.ops, out)[0])


def final_norm_saved(spec: ModelSpec, cfg: TrainConfig, tokens: int) -> int:
    """`head_saved` without lm_head: a fused loss (Liger, Cut Cross-Entropy) takes the norm's output itself."""
    per_token, per_model = _head_saved(spec, walk_key(cfg), with_lm_head=False)
    return per_token * tokens + per_model


@lru_cache(maxsize=4096)
def _head_saved(spec: ModelSpec, key: tuple, with_lm_head: bool = True) -> tuple[int, int]:
    cfg = _walk_config(key)
    ctx = replace(context(spec, cfg), base_trains=cfg.method is Method.FULL)   # FSDP1's root unit is frozen under LoRA
    x = Tensor(spec.hidden, stream_bytes(cfg), grad=True)
    normed = norm(ctx, spec, x)
    if with_lm_head:
        linear(ctx, normed, spec.vocab, "lm_head", quantized=False)  # bitsandbytes leaves lm_head
    per_token, per_model = ctx.saved_size()
    return per_token + (spec.hidden if spec.dropout and spec.dropout_on_embeddings else 0), per_model


class _WalkCaches:
    """The cached walks, cleared together by memory.clear_caches."""

    @staticmethod
    def cache_clear() -> None:
        _layer_saved.cache_clear()
        _rest_saved.cache_clear()


layer_walk_cache, head_walk_cache = _WalkCaches, _head_saved
