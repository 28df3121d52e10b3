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
from planner.enums import Attention, Method, Precision, Sharding
from planner.params import resolve_targets
from planner.states import (adapter_compute_bytes, computes_16bit_params, deepspeed_16bit, flat_unit_grads, trainable_bytes,
                            weight_bytes)
from profiles.spec import FUSED_ROLES, ModelSpec

_ids = count()
# Activations composed of elementwise ops: how many tensors of the MLP width they save (NewGELU:
# x for pow and mul, tanh's output, 1 + tanh and 0.5 * x); fused ones save only their input.
ACTIVATION_SAVES = {"gelu_new": 4, "gelu_fast": 4}


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


def context(spec: ModelSpec, cfg: TrainConfig) -> Context:
    sixteen = computes_16bit_params(cfg)
    mixed = cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED) and not sixteen
    compute = 4 if cfg.precision is Precision.FP32 else 2
    lora = {lin.module for lin in resolve_targets(spec, cfg.lora_targets)} if cfg.uses_adapters else set()
    return Context(compute=compute, autocast=mixed, base_trains=cfg.method is Method.FULL or flat_unit_grads(cfg),
                   base_grad=2 if sixteen else trainable_bytes(cfg), norm_weight=2 if sixteen else weight_bytes(cfg),
                   adapter=adapter_compute_bytes(cfg) if lora else 0,
                   saves_linear_inputs=cfg.sharding is Sharding.ZERO3,
                   lora_r=cfg.lora_r, lora_modules=lora, quantized=cfg.method is Method.QLORA,
                   quantized_from=2 if cfg.precision is Precision.BF16_TRUE else 4,  # the dtype it was loaded in
                   attention=attention_kernel(spec, cfg), fp32_norm_weight=spec.norm_weight_fp32,
                   seq_len=cfg.seq_len, sdpa_mask=sdpa_needs_mask(spec, cfg))


def sdpa_needs_mask(spec: ModelSpec, cfg: TrainConfig) -> bool:
    """transformers passes SDPA a b x 1 x s x s mask (not is_causal) when a sliding window is shorter than
    the sequence, and always for Falcon."""
    if attention_kernel(spec, cfg) is not Attention.SDPA:
        return False
    return spec.sdpa_always_masked or bool(spec.sliding_window and cfg.seq_len >= spec.sliding_window)


def attention_kernel(spec: ModelSpec, cfg: TrainConfig) -> Attention:
    """What transformers really runs: models with attention-score soft-capping (Gemma-2) have no SDPA
    path and fall back to eager; flash-attention 2 implements the cap."""
    if spec.attn_softcap and cfg.attn is Attention.SDPA:
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


def rms_norm(ctx: Context, x: Tensor, rows: int = 1, unit_offset: bool = False) -> Tensor:
    """Hugging Face RMSNorm: upcast to fp32, scale by rsqrt(mean square), multiply by the weight.

    `rows`: normalised rows per token (one per head for per-head QK norms), each with an fp32 rsqrt.
    """
    x32 = ctx.cast(x, 4)
    rsqrt = ctx.op((x32,), rows, 4, saved=(x32,))
    normed = ctx.op((x32, rsqrt), x.width, 4, saved=(x32, rsqrt))
    grad = x.grad or ctx.base_trains
    weight_grad = x.width * ctx.base_grad if ctx.base_trains else 0
    if ctx.fp32_norm_weight:  # weight (or 1 + weight) times the fp32 normalised input, then cast
        saved = (normed,) if ctx.base_trains else ()
        if unit_offset and x.grad:  # Gemma's fp32 (1 + weight), saved for the input's gradient
            saved += (ctx.op((), x.width, 4, grad=False, fixed=True),)
        scaled = ctx.op((normed,), x.width, 4, saved, weight_grad, grad=grad)
        return ctx.cast(scaled, x.nbytes)
    normed_in = ctx.cast(normed, x.nbytes)
    saved = (normed_in,) if ctx.base_trains else ()
    return ctx.op((normed_in,), x.width, max(ctx.norm_weight, x.nbytes), saved, weight_grad, grad=grad)


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
    q, k, v = _qkv(ctx, spec, h)
    q, k = _qk_norm(ctx, spec, q, k)
    q, k = _rope(ctx, spec, q, spec.q_dim), _rope(ctx, spec, k, spec.kv_dim)
    if ctx.autocast:  # each cast copies its own slice of a fused projection, not the whole of it
        q, k, v = (ctx.op((t,), width, 2) if t.nbytes != 2 else t
                   for t, width in ((q, spec.q_dim), (k, spec.kv_dim), (v, spec.kv_dim)))
    out = _core_attention(ctx, spec, q, k, v)
    head_major = spec.partial_rotary < 1 or spec.rope_by_cat
    if head_major and ctx.attention is not Attention.EAGER:  # eager always copies its output (_eager)
        # cat() of rotated and pass-through halves lays q out head-major, and the kernel's output follows:
        # transpose(1, 2).contiguous() for o_proj then copies it
        out = ctx.op((out,), out.width, out.nbytes)
    return linear(ctx, out, spec.hidden, _module(spec, "o"), spec.o_bias)


def _qkv(ctx: Context, spec: ModelSpec, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if "qkv" in {lin.role for lin in spec.linears()}:
        fused = linear(ctx, h, spec.q_dim + 2 * spec.kv_dim, _module(spec, "qkv"), spec.qkv_bias)
        # q, k, v are views of one storage: a saved v keeps all of it, their gradients fill one buffer
        return fused, fused, fused
    return tuple(linear(ctx, h, d, _module(spec, r), spec.qkv_bias) for r, d in
                 (("q", spec.q_dim), ("k", spec.kv_dim), ("v", spec.kv_dim)))


def _qk_norm(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    if spec.qk_norm is None:
        return q, k
    if spec.qk_norm == "head":
        return rms_norm(ctx, q, rows=spec.n_head), rms_norm(ctx, k, rows=spec.n_kv_head)
    return rms_norm(ctx, q), rms_norm(ctx, k)


def _rope(ctx: Context, spec: ModelSpec, t: Tensor, width: int) -> Tensor:
    if spec.learned_positions:
        return t  # GPT-2: no rotary
    return ctx.op((t,), width, t.nbytes)  # q*cos + rotate_half(q)*sin: a new tensor, cos/sin shared


def _core_attention(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    if ctx.attention is Attention.EAGER:
        return _eager(ctx, spec, q, k, v)
    if spec.n_kv_head < spec.n_head and (ctx.sdpa_mask or spec.head_dim > 256):
        # transformers lets SDPA broadcast KV heads only without a mask and up to 256-wide heads;
        # otherwise it repeats them to every query head first (repeat_kv), and SDPA saves the copies
        k, v = ctx.op((k,), spec.q_dim, k.nbytes), ctx.op((v,), spec.q_dim, v.nbytes)
    lse = ctx.op((), spec.n_head, 4, grad=False)  # fused kernels keep an fp32 log-sum-exp per head
    bias = (ctx.op((), ctx.seq_len, q.nbytes, grad=False),) if ctx.sdpa_mask else ()  # the mask as an additive bias
    out = ctx.op((q, k, v), spec.q_dim, q.nbytes, saved=(q, k, v, lse) + bias)
    ctx.ops[-1].saved += (out,)  # and their output
    return out


def _eager(ctx: Context, spec: ModelSpec, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """matmul, softmax (in fp32 for most families), cast, matmul; KV heads repeated to every query head first."""
    # q and k still views of a fused projection (no rotary to copy them): matmul copies each for bmm
    q = q if q.width == spec.q_dim else ctx.op((q,), spec.q_dim, q.nbytes)
    k = k if k.width == spec.kv_dim else ctx.op((k,), spec.kv_dim, k.nbytes)
    if spec.n_kv_head < spec.n_head:
        k, v = ctx.op((k,), spec.q_dim, k.nbytes), ctx.op((v,), spec.q_dim, v.nbytes)
    else:  # matmul reshapes the head-strided v for bmm: a contiguous copy, which it saves
        v = ctx.op((v,), spec.kv_dim, v.nbytes)
    scores_width = spec.n_head * ctx.seq_len
    scores = ctx.op((q, k), scores_width, q.nbytes, saved=(q, k))
    if spec.attn_softcap:  # cap * tanh(scores / cap): tanh keeps its output
        capped = ctx.op((scores,), scores_width, q.nbytes)
        ctx.ops[-1].saved = (capped,)
        scores = ctx.op((capped,), scores_width, q.nbytes)
    # most families ask softmax for fp32; the others keep the scores' dtype unless autocast runs it in fp32
    softmax_bytes = q.nbytes if spec.softmax_in_scores_dtype and not ctx.autocast else 4
    softmax = ctx.op((scores,), scores_width, softmax_bytes)
    ctx.ops[-1].saved = (softmax,)
    probs = ctx.cast(softmax, q.nbytes)
    if spec.dropout:  # attention dropout on the probabilities: a new tensor and a one-byte mask
        probs = ctx.op((probs,), scores_width, q.nbytes, saved=(ctx.op((), scores_width, 1, grad=False),))
    out = ctx.op((probs, v), spec.q_dim, q.nbytes, saved=(probs, v))
    return ctx.op((out,), spec.q_dim, q.nbytes)  # transpose(1, 2).contiguous() for o_proj


def mlp(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    if spec.is_moe:
        return _moe(ctx, spec, h)
    i, b = spec.intermediate, spec.mlp_bias
    if not spec.mlp_gated:
        up = linear(ctx, h, i, _module(spec, "up"), b)
        return linear(ctx, _activation(ctx, spec, up), spec.hidden, _module(spec, "down"), b)
    if "gate_up" in {lin.role for lin in spec.linears()}:
        fused = linear(ctx, h, 2 * i, _module(spec, "gate_up"), b)
        gate = up = fused  # chunk() views: their gradients fill one buffer of the fused width
        act = _activation(ctx, spec, gate)
    else:  # down(act(gate(x)) * up(x)): the activation runs before up_proj
        act = _activation(ctx, spec, linear(ctx, h, i, _module(spec, "gate"), b))
        up = linear(ctx, h, i, _module(spec, "up"), b)
    prod = ctx.op((act, up), i, up.nbytes, saved=(act, up))
    return linear(ctx, prod, spec.hidden, _module(spec, "down"), b)


def _activation(ctx: Context, spec: ModelSpec, x: Tensor) -> Tensor:
    width = spec.intermediate if not spec.is_moe else x.width
    extra = tuple(ctx.op((), width, x.nbytes, grad=False) for _ in range(ACTIVATION_SAVES.get(spec.activation, 1) - 1))
    return ctx.op((x,), width, x.nbytes, saved=(x,) + extra)  # silu / gelu derivatives need their input


def _moe(ctx: Context, spec: ModelSpec, h: Tensor) -> Tensor:
    """Routed experts as transformers 5 runs them (grouped matmuls over tokens sorted by expert)."""
    k, i, dt = spec.experts_per_token, spec.moe_intermediate, h.nbytes
    logits = linear(ctx, h, spec.n_experts, "gate", quantized=False)
    probs = ctx.op((logits,), spec.n_experts, 4)                     # router softmax in fp32
    ctx.ops[-1].saved = (probs,)
    weights = ctx.op((probs,), k, dt)                               # top-k weights, normalised, cast
    indices = ctx.op((), 4 * k * 8 // dt, dt, grad=False)           # top-k, sort and scatter: four int64 per route
    gathered = ctx.op((h,), k * spec.hidden, dt, saved=(indices,))  # each token once per chosen expert
    trains = ctx.base_trains
    expert_grad = spec.n_experts * spec.hidden * i * ctx.base_grad if trains else 0
    gate_up = ctx.op((gathered,), k * 2 * i, dt, saved=(gathered,) if trains else (), param_grad=2 * expert_grad,
                     grad=True)
    act = ctx.op((gate_up,), k * i, dt, saved=(gate_up,))
    prod = ctx.op((act, gate_up), k * i, dt, saved=(act,))
    down = ctx.op((prod,), k * spec.hidden, dt, saved=(prod,) if trains else (), param_grad=expert_grad, grad=True)
    return ctx.op((down, weights), spec.hidden, dt, saved=(down, weights))


def _module(spec: ModelSpec, role: str) -> str:
    for lin in spec.linears():
        if lin.role == role or role in FUSED_ROLES.get(lin.role, ()):
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

    `first`: the first layer's input needs no gradient when the embedding is frozen (LoRA, QLoRA).
    """
    return _layer_saved(spec, walk_key(cfg), first)


def walk_key(cfg: TrainConfig) -> tuple:
    """The fields the walk reads, so one cached walk serves every micro-batch, GPU count and optimizer."""
    seq = cfg.seq_len if cfg.attn is not Attention.FLASH else 1  # s x s terms and masks
    return cfg.method, cfg.precision, cfg.attn, cfg.lora_r, cfg.lora_targets, _walk_sharding(cfg), seq


def _walk_sharding(cfg: TrainConfig) -> Sharding:
    """The engine as far as the layers see it: DeepSpeed's 16-bit cast, ZeRO-3's linear, FSDP's gathered dtypes."""
    if cfg.sharding in (Sharding.ZERO3, Sharding.FSDP, Sharding.FSDP1):
        return cfg.sharding
    return Sharding.ZERO2 if deepspeed_16bit(cfg) else Sharding.NONE


def _walk_config(key: tuple) -> TrainConfig:
    method, precision, attn, lora_r, lora_targets, sharding, seq = key
    return TrainConfig(method=method, precision=precision, attn=attn, lora_r=lora_r, lora_targets=lora_targets,
                       sharding=sharding, gpus=1 if sharding is Sharding.NONE else 2, seq_len=seq)


@lru_cache(maxsize=4096)
def _layer_saved(spec: ModelSpec, key: tuple, first: bool) -> LayerSaved:
    cfg = _walk_config(key)
    ctx = context(spec, cfg)
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
        live = _sum(list(buffers.values()) + list(saved.values()) + [t.size for t in new] + restored)
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
    per_token, per_model = _head_saved(spec, walk_key(cfg))
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
    return per_token + (spec.hidden if spec.dropout else 0), per_model


layer_walk_cache, head_walk_cache = _layer_saved, _head_saved   # cached walks, cleared by memory.clear_caches
