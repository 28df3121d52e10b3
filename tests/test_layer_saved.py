"""Layer level: the bytes the planner's op walk says one transformer layer saves for backward equal what
autograd really saves in a small CPU model (dropout as CUDA runs it). Exact: any missing or extra tensor
fails. bf16-true is left out for LayerNorm families: the CPU keeps layer_norm's row statistics in bf16,
CUDA (and the planner) in fp32. MoE families run with every expert chosen (top-k = all experts), so routing,
and the index bytes it keeps, does not depend on the random data; transformers runs their experts in bf16
only, so they are checked in bf16-true, as the planner allows them."""
from __future__ import annotations

import pytest

from measure.saved import measure_layer_saved
from planner.activations import kind_saved, layer_saved
from planner.config import TrainConfig
from profiles.models import from_name

TINY = dict(n_layer=3, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)
ALL_EXPERTS = dict(n_experts=4, experts_per_token=4)
SPECS = {
    "llama": ("meta-llama/Llama-3.1-8B", {}),
    "gemma2": ("google/gemma-2-2b", {}),                             # soft-capping: eager
    "olmo2": ("allenai/OLMo-2-1124-7B", {}),                         # norms after, fp32 weight multiply
    "qwen3": ("Qwen/Qwen3-4B", {}),                                  # per-head q/k norms
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", dict(vocab=32064)), # fused qkv and gate_up, rotary by cat
    "phi2": ("microsoft/phi-2", dict(hidden=320, head_dim=80, n_kv_head=4)),  # partial rotary, LayerNorm
    "pythia": ("EleutherAI/pythia-1b", dict(n_kv_head=4)),           # fused qkv, parallel residual
    "gpt2": ("openai-community/gpt2", dict(n_kv_head=4, intermediate=1024)),  # fused qkv, no rotary, dropout
    # the 2025 families
    "mistral-small": ("mistralai/Mistral-Small-24B-Base-2501", dict(head_dim=32)),  # q narrower than hidden
    "phi-4-mini": ("microsoft/Phi-4-mini-instruct", dict(vocab=32064)),           # 3/4 rotary through cat
    "seed-oss": ("ByteDance-Seed/Seed-OSS-36B-Instruct", {}),      # dropout on attention and residual branches
    "smollm3": ("HuggingFaceTB/SmolLM3-3B", dict(vocab=128256, n_layer=8)),       # NoPE every 4th layer
    "olmo3": ("allenai/Olmo-3-1025-7B", dict(n_layer=8, sliding_window=32)),     # sliding (masked) and full
    "gemma3": ("google/gemma-3-270m", dict(n_layer=12, sliding_window=32)),     # (1 + w) q/k norms, 5:1 layers
    "gpt-oss": ("openai/gpt-oss-20b", dict(ALL_EXPERTS, moe_intermediate=512, n_layer=4, sliding_window=32)),
    "llama4": ("meta-llama/Llama-4-Scout-17B-16E",                   # every expert on every token, NoPE
               dict(n_experts=4, experts_per_token=1, moe_intermediate=128, shared_expert_intermediate=128,
                    attention_chunk=32, n_layer=8)),
    "deepseek-v3": ("deepseek-ai/DeepSeek-V3",                       # MLA, dense then MoE layers, shared expert
                    dict(ALL_EXPERTS, moe_intermediate=128, shared_expert_intermediate=128, first_dense_layers=2,
                         n_layer=4, n_group=1, topk_group=1, q_lora_rank=96, kv_lora_rank=64, qk_rope_head_dim=16,
                         qk_nope_head_dim=32, v_head_dim=32, head_dim=48, n_kv_head=4)),
    "qwen3-next": ("Qwen/Qwen3-Next-80B-A3B-Instruct",              # Gated DeltaNet and gated attention
                   dict(ALL_EXPERTS, moe_intermediate=128, shared_expert_intermediate=128, n_layer=8,
                        linear_k_heads=2, linear_v_heads=16, linear_k_head_dim=32, linear_v_head_dim=32)),
}
# Layers whose kinds differ, each measured past the first layer of its kind (rotary tables of a kind are
# saved where that kind first runs, and shared by every later layer)
LAYERS = {"smollm3": (6, 7), "olmo3": (6, 7), "gemma3": (10, 11), "gpt-oss": (2, 3), "llama4": (5, 7),
          "deepseek-v3": (1, 3), "qwen3-next": (5, 7)}
LAYERNORM = {"phi2", "pythia", "gpt2"}
BF16_ONLY = {"gpt-oss", "llama4", "deepseek-v3", "qwen3-next"}   # MoE: the planner allows bf16-true only
# DeepSeek's MLA on the CPU: SDPA with q/k heads wider than v falls back to the math kernel (fp32 copies);
# CUDA runs the memory-efficient kernel, which the planner models
EAGER_ONLY = {"deepseek-v3"}


def _precisions(key: str) -> tuple[str, ...]:
    if key in BF16_ONLY:
        return ("bf16-true",)
    return ("fp32", "bf16-mixed") if key in LAYERNORM else ("fp32", "bf16-mixed", "bf16-true")


CASES = [(key, layer, method, precision, attn)
         for key in SPECS for layer in LAYERS.get(key, (1,)) for method in ("full", "lora")
         for attn in (("eager",) if key in EAGER_ONLY else ("sdpa", "eager")) for precision in _precisions(key)]


@pytest.mark.parametrize("key,layer,method,precision,attn", CASES,
                         ids=["-".join(map(str, c)) for c in CASES])
def test_layer_saves_what_autograd_saves(key, layer, method, precision, attn):
    name, overrides = SPECS[key]
    spec = from_name(name, **{**TINY, **overrides})
    cfg = TrainConfig(method=method, precision=precision, attn=attn, micro_batch=2, seq_len=64)
    walk = kind_saved(spec, cfg, spec.layer_kind(layer)) if key in LAYERS else layer_saved(spec, cfg)
    assert walk.bytes(cfg.micro_batch * cfg.seq_len) == measure_layer_saved(spec, cfg, layer)


def test_delta_net_chunks_scale_with_the_sequence():
    """Several 64-token chunks: each keeps its recurrent state and its v_new."""
    name, overrides = SPECS["qwen3-next"]
    spec = from_name(name, **{**TINY, **overrides})
    cfg = TrainConfig(method="full", precision="bf16-true", micro_batch=1, seq_len=192)
    assert kind_saved(spec, cfg, spec.layer_kind(5)).bytes(192) == measure_layer_saved(spec, cfg, 5)


def test_a_model_of_mixed_layers_saves_their_mean_and_peaks_like_the_largest():
    spec = from_name("google/gemma-3-270m")
    cfg = TrainConfig(method="lora", precision="bf16-true", micro_batch=1, seq_len=1024)
    kinds = {kind: kind_saved(spec, cfg, kind) for kind, _ in spec.layer_kinds()}
    rest = layer_saved(spec, cfg)
    layers = [kinds[spec.layer_kind(i)] for i in range(1, spec.n_layer)]
    assert 0 <= rest.per_token * len(layers) - sum(w.per_token for w in layers) < len(layers)
    assert rest.backward_peak(1024) == max(w.backward_peak(1024) for w in kinds.values())


# Padded rows (an attention mask with padding) and packed ones (position ids restarting): SDPA gets a b x 1 x s x s
# mask, saves it as a bias in the compute dtype and, with grouped KV heads, saves repeat_kv's copies
PRECISIONS = ("fp32", "bf16-mixed", "bf16-true")
BATCHING_KEYS = ("llama", "gemma2", "olmo2", "qwen3", "phi3", "phi2", "pythia", "gpt2")


def _precision(key: str, turn: int) -> str:
    """Each case a different precision in turn (bf16-true left out for LayerNorm families, as above)."""
    choices = PRECISIONS[:2] if key in LAYERNORM else PRECISIONS
    return choices[turn % len(choices)]


BATCHED = [(key, method, _precision(key, i + 2 * j), batching)
           for key in BATCHING_KEYS for i, method in enumerate(("full", "lora")) for j, batching in enumerate(("padded", "packed"))]


@pytest.mark.parametrize("key,method,precision,batching", BATCHED, ids=["-".join(c) for c in BATCHED])
def test_batched_layer_saves_what_autograd_saves(key, method, precision, batching):
    name, overrides = SPECS[key]
    spec = from_name(name, **{**TINY, **overrides})
    cfg = TrainConfig(method=method, precision=precision, attn="sdpa", micro_batch=2, seq_len=64, batching=batching)
    assert layer_saved(spec, cfg).bytes(cfg.micro_batch * cfg.seq_len) == measure_layer_saved(spec, cfg)


# Liger's RMSNorm, SwiGLU / GeGLU and RoPE (measure/liger_kernels.py's stand-ins save what Liger's Functions save)
LIGER = {"llama", "gemma2", "olmo2", "qwen3", "phi3"}
LIGER_CASES = [(key, method, precision, "fixed") for key in sorted(LIGER) for method in ("full", "lora")
               for precision in PRECISIONS]
LIGER_CASES += [(key, method, _precision(key, i + 1), "padded") for key in sorted(LIGER)
                for i, method in enumerate(("full", "lora"))]


@pytest.mark.parametrize("key,method,precision,batching", LIGER_CASES, ids=["-".join(c) for c in LIGER_CASES])
def test_liger_layer_saves_what_autograd_saves(key, method, precision, batching):
    name, overrides = SPECS[key]
    spec = from_name(name, **{**TINY, **overrides})
    cfg = TrainConfig(method=method, precision=precision, attn="sdpa", micro_batch=2, seq_len=64, batching=batching,
                      liger_kernels=True)
    assert layer_saved(spec, cfg).bytes(cfg.micro_batch * cfg.seq_len) == measure_layer_saved(spec, cfg)


def test_liger_saves_less_and_leaves_other_families_alone():
    llama, gpt2 = (from_name(SPECS[k][0], **{**TINY, **SPECS[k][1]}) for k in ("llama", "gpt2"))
    cfg = TrainConfig(method="full", precision="bf16-true", micro_batch=2, seq_len=64)
    liger = cfg.with_(liger_kernels=True)
    assert layer_saved(llama, liger).per_token < layer_saved(llama, cfg).per_token
    assert layer_saved(gpt2, liger) == layer_saved(gpt2, cfg)


# flash-attention: transformers' flash path on stand-ins for flash-attn 2 (measure/flash.py). Fixed and packed rows
# run as one sequence per row (is_causal) or by cu_seqlens; padded rows are unpadded (q, k, v gathered, an index)
FLASH_CASES = [(key, method, batching) for key in ("llama", "qwen3", "phi3") for method in ("full", "lora")
               for batching in ("fixed", "packed", "padded")]


@pytest.mark.parametrize("key,method,batching", FLASH_CASES, ids=["-".join(c) for c in FLASH_CASES])
def test_flash_layer_saves_what_autograd_saves(key, method, batching):
    name, overrides = SPECS[key]
    spec = from_name(name, **{**TINY, **overrides})
    cfg = TrainConfig(method=method, precision="bf16-true", attn="flash", micro_batch=2, seq_len=64, batching=batching)
    expected = layer_saved(spec, cfg).bytes(cfg.micro_batch * cfg.seq_len)
    if batching == "padded":   # the planner takes every token as real; the probe's batch has one padding token,
        # which the gathers leave out (q, k, v and the output in bf16, the int64 index, the fp32 log-sum-exp),
        # and varlen's cu_seqlens (int32, one per row and one more) are made inside the layer
        expected -= (2 * spec.q_dim + 2 * spec.kv_dim) * 2 + 8 + 4 * spec.n_head - 4 * (cfg.micro_batch + 1)
    assert expected == measure_layer_saved(spec, cfg)

