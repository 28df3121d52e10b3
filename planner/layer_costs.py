"""GPU seconds of one micro-batch's forward and backward, by mechanism: `micro_batch_costs`.

- matmul: every linear's forward GEMM, its input-gradient GEMM, and its weight-gradient GEMM only where the
  weight trains (LoRA and QLoRA freeze the base: no weight-gradient GEMMs), timed by shape (`planner.gemm`).
- attention: FlashAttention / SDPA by causal FLOPs at the kernel's efficiency; eager by its two batched GEMMs
  and the memory traffic of the s x s scores it materialises.
- elementwise: the bytes norms, rotary embeddings, residual adds, activations, casts and the loss move, at
  the achievable bandwidth; which ops run depends on the stack (eager transformers, fused, compiled).
- lora: peft's branch per adapted linear - the input cast to the adapter dtype, two rank-r GEMMs (fp32 when the
  adapters are fp32 and nothing autocasts), the scale, the add and the cast back - and its backward.
- dequant: QLoRA dequantizes every NF4 weight (read 0.5 byte + constants, write 2) in the forward, again in
  the backward, and again in each recomputation.
- host: the kernels eager PyTorch launches from Python; a micro-batch takes at least their host time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from planner.activations import sdpa_needs_mask
from planner.config import TrainConfig
from planner.enums import Attention, Method
from planner.gemm import clear_cache as clear_gemm_cache, gemm_seconds
from planner.params import resolve_targets
from planner.rates import DeviceRates, in_training
from planner.stack import COMPILED, EAGER, HF, Stack, adapters_fp32, compute_bytes, head_fp32, matmuls_fp32, stream_bytes
from profiles.spec import Linear, ModelSpec

BACKWARD_TRAFFIC = 2.0     # an elementwise op's backward reads the output gradient and its saved input and
                           # writes the input gradient: ~2x its forward bytes (ml-engineering
                           # training/performance/README.md, "forward vs backward Execution Speed")
FA_BACKWARD_FLOPS = 2.5    # FlashAttention's backward runs 5 matmuls to the forward's 2 (Dao, arXiv:2307.08691)
FA_BLOCK = 128             # FlashAttention-2 query/key block: thread blocks are batch x heads x s/128
MEM_EFFICIENT_SDPA = 0.5   # SDPA with an explicit mask runs the memory-efficient kernel, taken at half FA2
NO_FLASH_ATTENTION = ("volta", "turing")   # their ATTENTION_EFFICIENCY is already the memory-efficient kernel's
NF4_BYTES = 0.5 * 1.02     # 4-bit weights plus double-quantized absmax (8 bits per 64-block + fp32 per 256 blocks)
# Aten ops (views included) transformers 5.25 runs per Llama layer, counted with a TorchDispatchMode by
# benchmarks/dispatch.py: forward 81, backward 146; each peft LoRA linear adds 12 forward, 17 backward;
# checkpointing replays the forward plus its bookkeeping (1.4-1.6x the forward ops); outside the layers 37 + 37.
OPS_FORWARD, OPS_BACKWARD, OPS_LORA_FORWARD, OPS_LORA_BACKWARD = 81, 146, 12, 17
OPS_RECOMPUTE, OPS_OUTSIDE = 1.5, 37
OPS_DEQUANT = 4            # bitsandbytes per 4-bit linear and pass: absmax dequant, NF4 dequant, cast, view
# Host time per op in eager PyTorch: forward ops go through Python modules (~10 us each: dispatcher, autograd
# recording, module code; "Overhead" in horace.io/brrr_intro.html), backward ops run in autograd's C++ engine
# (~5 us: dispatcher and launch only). Estimates: this VM measures 123 us per op of a tiny Llama layer on CPU
# with a 6.3 us torch.add, a server CPU being ~3x faster.
HOST_FORWARD_OP_S, HOST_BACKWARD_OP_S = 10e-6, 5e-6


@dataclass(frozen=True)
class MicroBatchCosts:
    """Seconds of one micro-batch on one GPU, by mechanism and pass."""

    matmul_forward: float
    matmul_backward: float
    attention_forward: float
    attention_backward: float
    elementwise_forward: float
    elementwise_backward: float
    lora_forward: float
    lora_backward: float
    dequant_pass: float          # one dequantization of every NF4 weight
    host: float                  # the host's time to launch the micro-batch's kernels

    def recompute(self, share: float, matmuls: float) -> float:
        """Time of recomputing `share` of the forward, `matmuls` of its GEMMs (attention only with all of them)."""
        if share <= 0:
            return 0.0
        attention = self.attention_forward if matmuls >= 1 else 0.0
        return share * (matmuls * self.matmul_forward + attention + self.elementwise_forward
                        + self.lora_forward + self.dequant_pass)

    @property
    def forward(self) -> float:
        return self.matmul_forward + self.attention_forward + self.elementwise_forward + self.lora_forward \
            + self.dequant_pass


def micro_batch_costs(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates, stack: Stack = HF) -> MicroBatchCosts:
    return _costs(spec, _key(cfg), rates, stack)


def clear_cache() -> None:
    """Forget the micro-batch costs and the GEMMs under them (after the fitted constants change)."""
    _costs.cache_clear()
    clear_gemm_cache()


def _key(cfg: TrainConfig) -> TrainConfig:
    """The fields the per-micro-batch costs depend on (cache key): not the GPU count or accumulation."""
    return cfg.with_(grad_accum=1, gpus=1, nodes=1)


@lru_cache(maxsize=4096)
def _costs(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates, stack: Stack) -> MicroBatchCosts:
    tokens = cfg.micro_batch * cfg.seq_len
    mm_f, mm_b = _matmuls(spec, cfg, rates, stack, tokens)
    at_f, at_b = _attention(spec, cfg, rates, stack)
    ew = _elementwise_bytes(spec, cfg, stack, tokens) / rates.stream_bytes_per_s
    lo_f, lo_b = _lora(spec, cfg, rates, stack, tokens)
    dequant = spec.n_layer * _quantized_per_layer(spec, cfg) * (NF4_BYTES + 2) / rates.stream_bytes_per_s
    host = _host_seconds(spec, cfg, stack)
    return MicroBatchCosts(mm_f, mm_b, at_f, at_b, ew, ew * BACKWARD_TRAFFIC, lo_f, lo_b, dequant, host)


# -- matmuls ----------------------------------------------------------------------------------------------
def base_weights_train(cfg: TrainConfig) -> bool:
    """Full fine-tuning; and FSDP1 with LoRA: a layer's flat parameter requires grad when any member does, so
    autograd computes the frozen base weights' gradients too (torch/distributed/fsdp/_flat_param.py: the flat
    parameter requires grad when any member does, and the modules get autograd views of it)."""
    return cfg.method is Method.FULL or (cfg.method is Method.LORA and cfg.sharding.value == "fsdp1")


def _matmuls(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates, stack: Stack, tokens: int) -> tuple[float, float]:
    fp32, nbytes, wgrad = matmuls_fp32(cfg), compute_bytes(cfg), base_weights_train(cfg)
    forward = backward = 0.0
    for lin in spec.linears():
        m = tokens * (spec.experts_per_token if lin.experts > 1 else 1) // max(1, lin.experts)
        batch = lin.experts
        forward += gemm_seconds(m, lin.d_out, lin.d_in, rates, nbytes, fp32, batch)
        backward += gemm_seconds(m, lin.d_in, lin.d_out, rates, nbytes, fp32, batch)
        if wgrad:
            backward += gemm_seconds(lin.d_out, lin.d_in, m, rates, nbytes, fp32, batch)
    head_32 = head_fp32(cfg, stack) or fp32
    head_f = gemm_seconds(tokens, spec.vocab, spec.hidden, rates, 4 if head_32 else nbytes, head_32)
    head_b = gemm_seconds(tokens, spec.hidden, spec.vocab, rates, 4 if head_32 else nbytes, head_32)
    if cfg.method is Method.FULL:
        head_b += gemm_seconds(spec.vocab, spec.hidden, tokens, rates, nbytes, fp32)
    return spec.n_layer * forward + head_f, spec.n_layer * backward + head_b


# -- attention ----------------------------------------------------------------------------------------------
def _attention(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates, stack: Stack) -> tuple[float, float]:
    if cfg.attn is Attention.EAGER:
        return _eager_attention(spec, cfg, rates)
    flops = _attention_flops(spec, cfg)
    blocks = cfg.micro_batch * spec.n_head * math.ceil(cfg.seq_len / FA_BLOCK)
    waves = blocks / (math.ceil(blocks / rates.sms) * rates.sms)           # wave quantization of the grid
    tflops = rates.tflops16
    if matmuls_fp32(cfg):
        # FlashAttention has no fp32 kernels: SDPA runs the memory-efficient one, which from Ampere multiplies
        # fp32 on the tensor cores as 3xTF32 (PyTorch mem_eff_attention/gemm_kernel_utils.h, DefaultGemmType
        # for float, OpMultiplyAddFastF32: a third of TF32's rate, itself half the 16-bit rate) and before
        # Ampere on the FP32 cores
        tflops = rates.tflops32 if rates.arch in NO_FLASH_ATTENTION else rates.tflops16 / 6
    masked = _sdpa_masked(spec, cfg) or (matmuls_fp32(cfg) and rates.arch not in NO_FLASH_ATTENTION)
    kernel = (MEM_EFFICIENT_SDPA if masked else 1.0) * stack.attention_speed
    peak = tflops * 1e12 * in_training(rates.arch, rates.key) * waves * kernel
    fwd_eff, bwd_eff = rates.attention
    layers = spec.n_layer
    return layers * flops / (peak * fwd_eff), layers * FA_BACKWARD_FLOPS * flops / (peak * bwd_eff)


def _attention_flops(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Forward FLOPs of one layer's causal attention: QK^T and PV over the blocks a causal kernel visits (half
    the s x s square plus the diagonal blocks), or over the sliding-window band."""
    s = cfg.seq_len
    full = 4 * cfg.micro_batch * spec.n_head * spec.head_dim * s * s
    if spec.sliding_window and spec.sliding_window < s:
        return full * spec.sliding_window / s
    blocks = math.ceil(s / FA_BLOCK)
    return full * (blocks + 1) / (2 * blocks)


def _sdpa_masked(spec: ModelSpec, cfg: TrainConfig) -> bool:
    """transformers hands SDPA an explicit mask (so not the flash backend) for Falcon, sliding windows, padded and
    packed rows."""
    return cfg.attn is Attention.SDPA and sdpa_needs_mask(spec, cfg)


def _eager_attention(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates) -> tuple[float, float]:
    """Two batched GEMMs forward, four backward, and the scores' mask-add, fp32 softmax and casts."""
    s, d, batch, a = cfg.seq_len, spec.head_dim, cfg.micro_batch * spec.n_head, compute_bytes(cfg)
    fp32 = matmuls_fp32(cfg)
    qk = gemm_seconds(s, s, d, rates, a, fp32, batch)
    pv = gemm_seconds(s, d, s, rates, a, fp32, batch)
    per_score = 5 * a + 16 + (6 * a if spec.attn_softcap else 0)   # mask add, fp32 upcast, softmax, downcast
    scores = batch * s * s * per_score / rates.stream_bytes_per_s
    forward = qk + pv + scores
    backward = 2 * (qk + pv) + BACKWARD_TRAFFIC * scores
    return spec.n_layer * forward, spec.n_layer * backward


# -- elementwise ------------------------------------------------------------------------------------------------
def _elementwise_bytes(spec: ModelSpec, cfg: TrainConfig, stack: Stack, tokens: int) -> float:
    """Forward bytes of one micro-batch's non-matmul ops (the backward moves BACKWARD_TRAFFIC times this)."""
    per_token = spec.n_layer * _layer_bytes(spec, cfg, stack) + _outside_bytes(spec, cfg, stack)
    return tokens * per_token + _per_pass_bytes(spec, cfg, stack)


def _layer_bytes(spec: ModelSpec, cfg: TrainConfig, stack: Stack) -> float:
    a, r, h = compute_bytes(cfg), stream_bytes(cfg, stack), spec.hidden
    mlp = spec.experts_per_token * spec.moe_intermediate if spec.is_moe else spec.intermediate
    qk_width = spec.q_dim + spec.kv_dim
    rotary = 0.0 if spec.learned_positions else 10 * a * qk_width * spec.partial_rotary
    if stack.kernels == COMPILED:       # norms fused with the residual adds, rotary and activation in one pass
        gated = 3 * a * mlp if spec.mlp_gated else 2 * a * mlp
        return spec.norms_per_layer * (2 * r + 2 * a) * h + rotary / 5 + 2 * a * spec.q_dim + gated
    norms = spec.norms_per_layer * h * _norm_bytes(spec, stack, r, a) + _qk_norm_bytes(spec, stack, r, a)
    casts = _input_casts(spec, stack, r, a) * h
    residual = 2 * (2 * r + a) * h
    transpose = 2 * a * spec.q_dim                                    # attention output back to (tokens, q)
    activation = (5 * a if spec.mlp_gated else _plain_activation(spec) * a) * mlp
    dropout = 2 * (2 * a + 1) * h if spec.dropout else 0.0
    routing = 4 * a * h * spec.experts_per_token if spec.is_moe else 0.0   # token permutation in and out
    return norms + casts + rotary + residual + transpose + activation + dropout + routing


def _norm_bytes(spec: ModelSpec, stack: Stack, r: int, a: int) -> float:
    """Per element. transformers' RMSNorm: to fp32, pow, mean, mul by rsqrt, back, times the weight (28 + 4r
    bytes; 28 when already fp32); LayerNorm is one kernel; fused kernels read and write once."""
    if stack.kernels != EAGER or spec.norm != "rmsnorm":
        return r + max(r, a)
    return 28 + (4 * r if r == 2 else 0) + (8 if spec.norm_weight_offset else 0)


def _qk_norm_bytes(spec: ModelSpec, stack: Stack, r: int, a: int) -> float:
    if not spec.qk_norm:
        return 0.0
    return (spec.q_dim + spec.kv_dim) * (_norm_bytes(spec, stack, a, a))


def _input_casts(spec: ModelSpec, stack: Stack, r: int, a: int) -> int:
    """An fp32 stream is cast to 16 bit by each linear that reads a norm's output (autocast and bitsandbytes
    cast per call, not once): read 4, write 2 bytes per element per consumer."""
    if r == a or stack.kernels != EAGER:
        return 0
    consumers = sum(1 for lin in spec.linears() if lin.role in ("q", "k", "v", "qkv", "gate", "up", "gate_up",
                                                                 "router"))
    return consumers * (r + a)


def _plain_activation(spec: ModelSpec) -> int:
    """Bytes per element (in units of the compute dtype) of a non-gated activation: one kernel, or GPT-2's
    composite NewGELU (pow, mul, add, tanh, add, mul, mul: ~7 kernels)."""
    return 14 if spec.activation in ("gelu_new", "gelu_fast") else 2


def _outside_bytes(spec: ModelSpec, cfg: TrainConfig, stack: Stack) -> float:
    """Per token outside the layers: embedding gather, final norm, and the loss over the vocabulary (eager:
    logits to fp32, log-softmax; its backward about 1.6x that: 36 bytes per logit in all, 8 compiled)."""
    a, v = compute_bytes(cfg), spec.vocab
    loss = 8 * v if stack.kernels == COMPILED else (24 if head_fp32(cfg, stack) else 36) * v / (1 + BACKWARD_TRAFFIC)
    return 2 * a * spec.hidden + spec.hidden * _norm_bytes(spec, stack, stream_bytes(cfg, stack), a) + loss


def _per_pass_bytes(spec: ModelSpec, cfg: TrainConfig, stack: Stack) -> float:
    """Per forward pass, independent of tokens: autocast casts fp32 weights to 16 bit (read 4, write 2 per
    parameter) each forward; full fine-tuning's weight gradients are cast and accumulated."""
    a = compute_bytes(cfg)
    weights = spec.n_layer * spec.layer_linear_params() + spec.vocab * spec.hidden
    casts = 6 * weights if (stream_bytes(cfg, stack) == 4 and a == 2 and cfg.method is not Method.QLORA
                            and stack.kernels == EAGER) else 0
    grads = 6 * weights / (1 + BACKWARD_TRAFFIC) if cfg.method is Method.FULL and casts else 0
    return casts + grads


# -- LoRA ------------------------------------------------------------------------------------------------------
def _lora(spec: ModelSpec, cfg: TrainConfig, rates: DeviceRates, stack: Stack, tokens: int) -> tuple[float, float]:
    if not cfg.uses_adapters:
        return 0.0, 0.0
    fp32 = adapters_fp32(cfg, stack) or matmuls_fp32(cfg)
    e = 4 if fp32 else compute_bytes(cfg)
    forward = backward = 0.0
    for lin in resolve_targets(spec, cfg.lora_targets):
        f, b = _lora_linear(lin, cfg, rates, stack, tokens, e, fp32, _input_bytes(spec, cfg, stack, lin))
        forward, backward = forward + f, backward + b
    return spec.n_layer * forward, spec.n_layer * backward


def _lora_linear(lin: Linear, cfg: TrainConfig, rates: DeviceRates, stack: Stack, tokens: int, e: int, fp32: bool,
                 x_bytes: int) -> tuple[float, float]:
    r, a = cfg.lora_r, compute_bytes(cfg)
    down = gemm_seconds(tokens, r, lin.d_in, rates, e, fp32)
    up = gemm_seconds(tokens, lin.d_out, r, rates, e, fp32)
    grads = (gemm_seconds(tokens, r, lin.d_out, rates, e, fp32) + gemm_seconds(r, lin.d_out, tokens, rates, e, fp32)
             + gemm_seconds(tokens, lin.d_in, r, rates, e, fp32) + gemm_seconds(lin.d_in, r, tokens, rates, e, fp32))
    cast_in = (x_bytes + e) * lin.d_in if e != x_bytes else 0
    dropout = (2 * e + 1) * lin.d_in if stack.lora_dropout else 0
    cast_out = (e + a) * lin.d_out if e != a else 0                   # peft casts the sum back to the result's dtype
    fwd_bytes = tokens * (cast_in + dropout + (2 * e + a + 2 * e) * lin.d_out + cast_out)   # scale, add
    # backward: through the cast back, the scale, the add's cast to the base branch, the input cast and dropout,
    # and the sum of the two input gradients (read both, write one)
    bwd_bytes = tokens * (2 * cast_out + 2 * e * lin.d_out + cast_in + BACKWARD_TRAFFIC * dropout
                          + 3 * x_bytes * lin.d_in)
    stream = rates.stream_bytes_per_s
    return down + up + fwd_bytes / stream, grads + bwd_bytes / stream


def _input_bytes(spec: ModelSpec, cfg: TrainConfig, stack: Stack, lin: Linear) -> int:
    """dtype of a linear's input: a norm's output (the stream's dtype in eager) or an activation."""
    reads_norm = lin.role in ("q", "k", "v", "qkv", "gate", "up", "gate_up")
    return stream_bytes(cfg, stack) if reads_norm and stack.kernels == EAGER else compute_bytes(cfg)


def _quantized_per_layer(spec: ModelSpec, cfg: TrainConfig) -> int:
    if cfg.method is not Method.QLORA:
        return 0
    return sum(lin.d_in * lin.d_out for lin in spec.linears() if lin.experts == 1)


# -- host ---------------------------------------------------------------------------------------------------
def _host_seconds(spec: ModelSpec, cfg: TrainConfig, stack: Stack) -> float:
    """Host time to launch one micro-batch's ops; 0 where CUDA graphs or compiled regions replace them."""
    if not stack.host_bound:
        return 0.0
    adapted = len(resolve_targets(spec, cfg.lora_targets)) if cfg.uses_adapters else 0
    quantized = sum(1 for lin in spec.linears() if lin.experts == 1) if cfg.method is Method.QLORA else 0
    forward = OPS_FORWARD + OPS_LORA_FORWARD * adapted + OPS_DEQUANT * quantized
    backward = OPS_BACKWARD + OPS_LORA_BACKWARD * adapted + OPS_DEQUANT * quantized
    share, _ = stack.recompute(cfg)
    layer = (1 + OPS_RECOMPUTE * share) * forward * HOST_FORWARD_OP_S + backward * HOST_BACKWARD_OP_S
    return spec.n_layer * layer + OPS_OUTSIDE * (HOST_FORWARD_OP_S + HOST_BACKWARD_OP_S)
