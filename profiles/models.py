"""The model catalog: presets grouped by family, each listing only what differs from `ModelSpec`'s defaults
and its family's traits (`profiles.hf_config.ARCHS`), with the Hugging Face config it was read from.
Instruct and chat variants whose config.json carries the same numbers as their base are added by the loop
at the end. `find` and `from_name` look entries up by Hugging Face id or short name, in any case.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from profiles.hf_config import family_traits
from profiles.spec import ModelSpec

HF = "https://huggingface.co/{}/blob/main/config.json"


def _spec(name: str, family_defaults: dict | None = None, **numbers) -> ModelSpec:
    """A preset: its model type's traits, the family's shared numbers, then this model's own."""
    fields = {**(family_defaults or {}), **numbers}
    return ModelSpec(name=name, source=HF.format(name), **{**family_traits(fields["hf_type"]), **fields})


def _like(base: ModelSpec, name: str, **changes) -> ModelSpec:
    """A model whose config.json repeats `base`'s numbers except `changes`."""
    return replace(base, name=name, source=HF.format(name), **changes)


_LLAMA3 = dict(hf_type="llama", family="llama-3", vocab=128256, n_kv_head=8)
_QWEN25 = dict(hf_type="qwen2", family="qwen2.5", qkv_bias=True, vocab=152064, max_position=131072)
_QWEN3 = dict(hf_type="qwen3", family="qwen3", qk_norm="head", head_dim=128, n_kv_head=8, vocab=151936,
              max_position=40960)
_GEMMA = dict(hf_type="gemma", family="gemma", head_dim=256, vocab=256000, tied_embeddings=True,
              activation="gelu_pytorch_tanh", max_position=8192)
# Gemma-2 alternates sliding-window and global layers, Gemma-3 has five local ones per global one (config.json layer_types)
_SLIDING_THEN_FULL = ("sliding_attention", "full_attention")
_GEMMA2 = dict(_GEMMA, hf_type="gemma2", family="gemma-2", norms_per_layer=4, sliding_window=4096,
               logit_softcap=30.0, attn_softcap=50.0, layer_types=_SLIDING_THEN_FULL)
# Gemma-3 4b/12b/27b are multimodal (model_type gemma3); these entries are their text_config, which
# transformers builds as Gemma3ForCausalLM (gemma3_text). The SigLIP vision tower is not counted.
_GEMMA3 = dict(_GEMMA, hf_type="gemma3_text", family="gemma-3", norms_per_layer=4, qk_norm="head",
               vocab=262208, sliding_window=1024, max_position=131072,
               layer_types=("sliding_attention",) * 5 + ("full_attention",))
_PHI = dict(hf_type="phi", family="phi", layout="phi", norm="layernorm", norm_bias=True, norms_per_layer=1,
            parallel_block=True, qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=True, mlp_gated=False,
            activation="gelu_new", vocab=51200, max_position=2048)
_PHI3 = dict(hf_type="phi3", family="phi-3", layout="phi3")
_NEOX = dict(hf_type="gpt_neox", layout="neox", norm="layernorm", norm_bias=True, qkv_bias=True, o_bias=True,
             mlp_bias=True, mlp_gated=False, activation="gelu", parallel_block=True, partial_rotary=0.25)
_PYTHIA = dict(_NEOX, family="pythia", vocab=50304, max_position=2048)
_STABLELM = dict(hf_type="stablelm", family="stablelm", norm="layernorm", norm_bias=True, partial_rotary=0.25)
_GPT2 = dict(hf_type="gpt2", family="gpt-2", layout="gpt2", norm="layernorm", norm_bias=True, qkv_bias=True,
             o_bias=True, mlp_bias=True, mlp_gated=False, activation="gelu_new", tied_embeddings=True,
             vocab=50257, learned_positions=1024, max_position=1024, dropout=0.1)
_OLMO2 = dict(hf_type="olmo2", family="olmo-2", qk_norm="full", vocab=100352)
_SMOLLM2 = dict(hf_type="llama", family="smollm2", vocab=49152, tied_embeddings=True, max_position=8192)

# The 2025 models. Each entry says above it where its numbers were read (a stored copy of the Hub config.json:
# no live Hub access here) and its total as transformers 5.25 builds it on the meta device (tests/test_catalog.py).
_SLIDING_3_FULL = ("sliding_attention",) * 3 + ("full_attention",)
_NOPE_EVERY_4TH = (1, 1, 1, 0)  # no_rope_layers: 0 marks a layer without rotary positions
_MXFP4 = ("Experts ship in MXFP4. transformers dequantizes them to bf16 at load wherever the Triton MXFP4 kernels are "
          "missing (triton >= 3.4 and the kernels package), and its MXFP4 path refuses training "
          "(Mxfp4HfQuantizer.is_trainable is False); fine-tuning loads Mxfp4Config(dequantize=True), so fitplan plans "
          "bf16 experts.")
_GPT_OSS = dict(hf_type="gpt_oss", family="gpt-oss", hidden=2880, intermediate=2880, n_head=64, n_kv_head=8, head_dim=64,
                vocab=201088, max_position=131072, sliding_window=128, layer_types=_SLIDING_THEN_FULL, qkv_bias=True,
                o_bias=True, experts_per_token=4, swiglu_limit=7.0, note=_MXFP4)
_MISTRAL_SMALL = dict(hf_type="mistral", family="mistral-small", n_layer=40, hidden=5120, intermediate=32768, n_head=32,
                      n_kv_head=8, head_dim=128, vocab=131072)

_BASES: list[ModelSpec] = [
    # Llama 2
    _spec("meta-llama/Llama-2-7b-hf", hf_type="llama", family="llama-2", n_layer=32, hidden=4096,
          intermediate=11008, n_head=32, vocab=32000),
    _spec("meta-llama/Llama-2-13b-hf", hf_type="llama", family="llama-2", n_layer=40, hidden=5120,
          intermediate=13824, n_head=40, vocab=32000),
    _spec("meta-llama/Llama-2-70b-hf", hf_type="llama", family="llama-2", n_layer=80, hidden=8192,
          intermediate=28672, n_head=64, n_kv_head=8, vocab=32000),
    # Llama 3, 3.1, 3.2
    _spec("meta-llama/Meta-Llama-3-8B", _LLAMA3, n_layer=32, hidden=4096, intermediate=14336, n_head=32,
          max_position=8192),
    _spec("meta-llama/Meta-Llama-3-70B", _LLAMA3, n_layer=80, hidden=8192, intermediate=28672, n_head=64,
          max_position=8192),
    _spec("meta-llama/Llama-3.1-8B", _LLAMA3, n_layer=32, hidden=4096, intermediate=14336, n_head=32,
          max_position=131072),
    _spec("meta-llama/Llama-3.1-70B", _LLAMA3, n_layer=80, hidden=8192, intermediate=28672, n_head=64,
          max_position=131072),
    _spec("meta-llama/Llama-3.1-405B", _LLAMA3, n_layer=126, hidden=16384, intermediate=53248, n_head=128,
          max_position=131072),
    _spec("meta-llama/Llama-3.2-1B", _LLAMA3, n_layer=16, hidden=2048, intermediate=8192, n_head=32,
          head_dim=64, tied_embeddings=True, max_position=131072),
    _spec("meta-llama/Llama-3.2-3B", _LLAMA3, n_layer=28, hidden=3072, intermediate=8192, n_head=24,
          head_dim=128, tied_embeddings=True, max_position=131072),
    # Llama 4 Scout, the text model (Llama4ForCausalLM): 16 experts, top-1 with a shared expert in every layer;
    # chunked attention (8192) on rotary layers, every 4th layer NoPE and global with temperature tuning.
    # Numbers: the printed Llama4Config of the base (text_config), cross-checked with the Instruct config in
    # github.com/ai-dynamo/aiconfigurator@095f58a5 aic-core/src/aiconfigurator_core/model_configs/; built 107,769,861,120
    _spec("meta-llama/Llama-4-Scout-17B-16E", hf_type="llama4_text", family="llama-4", n_layer=48, hidden=5120,
          intermediate=16384, moe_intermediate=8192, shared_expert_intermediate=8192, n_head=40, n_kv_head=8,
          head_dim=128, vocab=202048, max_position=262144, n_experts=16, experts_per_token=1,
          no_rope_layers=_NOPE_EVERY_4TH, layer_types=("chunked_attention",) * 3 + ("full_attention",),
          attention_chunk=8192, qk_norm="weightless", attn_temperature=True,
          note="The text model (what AutoModelForCausalLM builds): the vision encoder and projector (871,932,416 "
               "parameters) are not counted. Meta's config.json sets attn_temperature_tuning to the int 4, which "
               "transformers 5 refuses: fitplan reads it as true. transformers runs all 16 experts on every token "
               "(unrouted ones weighted 0), so expert activations are 16 times a dense MLP's."),
    # TinyLlama: Llama-2 architecture, GQA
    _spec("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", hf_type="llama", family="tinyllama", n_layer=22,
          hidden=2048, intermediate=5632, n_head=32, n_kv_head=4, vocab=32000, max_position=2048),
    # SmolLM2: small Llama-architecture models with tied embeddings
    _spec("HuggingFaceTB/SmolLM2-135M", _SMOLLM2, n_layer=30, hidden=576, intermediate=1536, n_head=9,
          n_kv_head=3),
    _spec("HuggingFaceTB/SmolLM2-360M", _SMOLLM2, n_layer=32, hidden=960, intermediate=2560, n_head=15,
          n_kv_head=5),
    _spec("HuggingFaceTB/SmolLM2-1.7B", _SMOLLM2, n_layer=24, hidden=2048, intermediate=8192, n_head=32),
    # SmolLM3: Llama layers, every 4th without rotary positions (NoPE), tied embeddings.
    # Numbers: copies of the Hub config.json in three test suites; built 3,075,098,624
    _spec("HuggingFaceTB/SmolLM3-3B", hf_type="smollm3", family="smollm3", n_layer=36, hidden=2048, intermediate=11008,
          n_head=16, n_kv_head=4, vocab=128256, tied_embeddings=True, max_position=65536,
          no_rope_layers=_NOPE_EVERY_4TH, layer_types=("full_attention",)),
    # Yi: Llama architecture, GQA
    _spec("01-ai/Yi-6B", hf_type="llama", family="yi", n_layer=32, hidden=4096, intermediate=11008, n_head=32,
          n_kv_head=4, vocab=64000),
    _spec("01-ai/Yi-9B", hf_type="llama", family="yi", n_layer=48, hidden=4096, intermediate=11008, n_head=32,
          n_kv_head=4, vocab=64000),
    _spec("01-ai/Yi-34B", hf_type="llama", family="yi", n_layer=60, hidden=7168, intermediate=20480, n_head=56,
          n_kv_head=8, vocab=64000),
    # Mistral: v0.1 slides a 4096-token window, v0.2 Instruct and v0.3 do not
    _spec("mistralai/Mistral-7B-v0.1", hf_type="mistral", family="mistral", n_layer=32, hidden=4096,
          intermediate=14336, n_head=32, n_kv_head=8, vocab=32000, max_position=32768, sliding_window=4096),
    _spec("mistralai/Mistral-7B-Instruct-v0.2", hf_type="mistral", family="mistral", n_layer=32, hidden=4096,
          intermediate=14336, n_head=32, n_kv_head=8, vocab=32000, max_position=32768),
    _spec("mistralai/Mistral-7B-v0.3", hf_type="mistral", family="mistral", n_layer=32, hidden=4096,
          intermediate=14336, n_head=32, n_kv_head=8, vocab=32768, max_position=32768),
    _spec("mistralai/Mistral-Nemo-Base-2407", hf_type="mistral", family="mistral", n_layer=40, hidden=5120,
          intermediate=14336, n_head=32, n_kv_head=8, head_dim=128, vocab=131072, max_position=1024000),
    # Mistral Small 3 (24B) and its text fine-tunes: head_dim 128 (q width 4096 < hidden 5120), Tekken vocabulary.
    # Numbers: Mistral-Small-24B test fixtures and the Mistral-Small-3.1 text_config (reconstructed: no verbatim copy
    # was found; every size key agrees across copies); built 23,572,403,200
    _spec("mistralai/Mistral-Small-24B-Base-2501", _MISTRAL_SMALL, max_position=32768),
    # Ministral 8B: config.json is a plain mistral with one 32768-token window, as long as its context
    # Numbers: a verbatim dict of the Hub config.json in a benchmark file; built 8,019,808,256 (= the model card)
    _spec("mistralai/Ministral-8B-Instruct-2410", hf_type="mistral", family="ministral", n_layer=36, hidden=4096,
          intermediate=12288, n_head=32, n_kv_head=8, head_dim=128, vocab=131072, max_position=32768,
          sliding_window=32768,
          note="Hugging Face's config.json has one 32768-token window for every layer (the whole context): the "
               "interleaved sliding window of the model card runs only in vLLM and mistral-inference."),
    # Mixtral: 8 experts, 2 per token; experts are fused 3-D parameters in transformers 5
    _spec("mistralai/Mixtral-8x7B-v0.1", hf_type="mixtral", family="mixtral", n_layer=32, hidden=4096,
          intermediate=14336, n_head=32, n_kv_head=8, vocab=32000, max_position=32768, n_experts=8,
          experts_per_token=2),
    # Qwen2.5: q/k/v biases; the small ones tie embeddings
    _spec("Qwen/Qwen2.5-0.5B", _QWEN25, vocab=151936, tied_embeddings=True, max_position=32768,
          n_layer=24, hidden=896, intermediate=4864, n_head=14, n_kv_head=2),
    _spec("Qwen/Qwen2.5-1.5B", _QWEN25, vocab=151936, tied_embeddings=True, max_position=32768,
          n_layer=28, hidden=1536, intermediate=8960, n_head=12, n_kv_head=2),
    _spec("Qwen/Qwen2.5-3B", _QWEN25, vocab=151936, tied_embeddings=True, max_position=32768,
          n_layer=36, hidden=2048, intermediate=11008, n_head=16, n_kv_head=2),
    _spec("Qwen/Qwen2.5-7B", _QWEN25, n_layer=28, hidden=3584, intermediate=18944, n_head=28, n_kv_head=4),
    _spec("Qwen/Qwen2.5-14B", _QWEN25, n_layer=48, hidden=5120, intermediate=13824, n_head=40, n_kv_head=8),
    _spec("Qwen/Qwen2.5-32B", _QWEN25, n_layer=64, hidden=5120, intermediate=27648, n_head=40, n_kv_head=8),
    _spec("Qwen/Qwen2.5-72B", _QWEN25, n_layer=80, hidden=8192, intermediate=29568, n_head=64, n_kv_head=8),
    # Qwen3: per-head q/k RMSNorm, head_dim 128 regardless of width
    _spec("Qwen/Qwen3-0.6B", _QWEN3, n_layer=28, hidden=1024, intermediate=3072, n_head=16,
          tied_embeddings=True),
    _spec("Qwen/Qwen3-1.7B", _QWEN3, n_layer=28, hidden=2048, intermediate=6144, n_head=16,
          tied_embeddings=True),
    _spec("Qwen/Qwen3-4B", _QWEN3, n_layer=36, hidden=2560, intermediate=9728, n_head=32, tied_embeddings=True),
    _spec("Qwen/Qwen3-8B", _QWEN3, n_layer=36, hidden=4096, intermediate=12288, n_head=32),
    _spec("Qwen/Qwen3-14B", _QWEN3, n_layer=40, hidden=5120, intermediate=17408, n_head=40),
    _spec("Qwen/Qwen3-32B", _QWEN3, n_layer=64, hidden=5120, intermediate=25600, n_head=64),
    # Qwen3-MoE: 128 experts, 8 per token, every layer MoE
    _spec("Qwen/Qwen3-30B-A3B", _QWEN3, hf_type="qwen3_moe", family="qwen3-moe", n_kv_head=4,
          n_layer=48, hidden=2048, intermediate=6144, n_head=32, n_experts=128, experts_per_token=8,
          moe_intermediate=768),
    _spec("Qwen/Qwen3-235B-A22B", _QWEN3, hf_type="qwen3_moe", family="qwen3-moe", n_kv_head=4,
          n_layer=94, hidden=4096, intermediate=12288, n_head=64, n_experts=128, experts_per_token=8,
          moe_intermediate=1536),
    # Qwen3-Next: 3 Gated DeltaNet (linear attention) layers per gated full-attention layer, 512 experts (10 per
    # token) plus a gated shared expert in every layer. Numbers: the Hub config.json of the Thinking sibling (same
    # architecture), github.com/ai-dynamo/aiconfigurator@1b7cfb10 src/aiconfigurator/model_configs/; built 79,674,391,296
    _spec("Qwen/Qwen3-Next-80B-A3B-Instruct", hf_type="qwen3_next", family="qwen3-next", n_layer=48, hidden=2048,
          intermediate=5120, n_head=16, n_kv_head=2, head_dim=256, vocab=151936, max_position=262144,
          n_experts=512, experts_per_token=10, moe_intermediate=512, shared_expert_intermediate=512,
          partial_rotary=0.25, layer_types=("linear_attention",) * 3 + ("full_attention",), norm_topk_prob=True,
          linear_k_heads=16,
          linear_v_heads=32, linear_k_head_dim=128, linear_v_head_dim=128, linear_conv_kernel=4,
          note="transformers builds no multi-token-prediction layer (the checkpoint has one, ~81B in all): fitplan "
               "plans what transformers builds. The linear-attention layers are planned as transformers' torch "
               "path runs them (it keeps each 64-token chunk's recurrent state for backward); with the "
               "flash-linear-attention kernels installed a run needs less."),
    # Gemma: head_dim 256, GeGLU, tied embeddings; the 2b is multi-query
    _spec("google/gemma-2b", _GEMMA, n_layer=18, hidden=2048, intermediate=16384, n_head=8, n_kv_head=1),
    _spec("google/gemma-7b", _GEMMA, n_layer=28, hidden=3072, intermediate=24576, n_head=16),
    # Gemma 2: pre- and post-norms around attention and MLP, logit soft-capping, alternating sliding window
    _spec("google/gemma-2-2b", _GEMMA2, n_layer=26, hidden=2304, intermediate=9216, n_head=8, n_kv_head=4),
    _spec("google/gemma-2-9b", _GEMMA2, n_layer=42, hidden=3584, intermediate=14336, n_head=16, n_kv_head=8),
    _spec("google/gemma-2-27b", _GEMMA2, n_layer=46, hidden=4608, intermediate=36864, n_head=32, n_kv_head=16,
          head_dim=128, hf_overrides={"query_pre_attn_scalar": 144}),
    # Gemma 3: Gemma-2 norms plus per-head q/k norm, 5 local : 1 global layers; 1b is text-only
    # Numbers: a verbatim dict of the Hub config.json in circuit-tracer's tests; built 268,098,176
    _spec("google/gemma-3-270m", _GEMMA3, vocab=262144, sliding_window=512, max_position=32768,
          n_layer=18, hidden=640, intermediate=2048, n_head=4, n_kv_head=1),
    _spec("google/gemma-3-1b-pt", _GEMMA3, vocab=262144, sliding_window=512, max_position=32768,
          n_layer=26, hidden=1152, intermediate=6912, n_head=4, n_kv_head=1),
    _spec("google/gemma-3-4b-pt", _GEMMA3, n_layer=34, hidden=2560, intermediate=10240, n_head=8, n_kv_head=4),
    _spec("google/gemma-3-12b-pt", _GEMMA3, n_layer=48, hidden=3840, intermediate=15360, n_head=16,
          n_kv_head=8),
    _spec("google/gemma-3-27b-pt", _GEMMA3, n_layer=62, hidden=5376, intermediate=21504, n_head=32,
          n_kv_head=16, head_dim=128, hf_overrides={"query_pre_attn_scalar": 168}),
    # Phi-1.5 / Phi-2: parallel block, one LayerNorm, biases everywhere, partial rotary
    _spec("microsoft/phi-1_5", _PHI, n_layer=24, hidden=2048, intermediate=8192, n_head=32, partial_rotary=0.5),
    _spec("microsoft/phi-2", _PHI, n_layer=32, hidden=2560, intermediate=10240, n_head=32, partial_rotary=0.4),
    # Phi-3 / Phi-4: fused qkv_proj and gate_up_proj
    _spec("microsoft/Phi-3-mini-4k-instruct", _PHI3, n_layer=32, hidden=3072, intermediate=8192, n_head=32,
          vocab=32064, sliding_window=2047),
    _spec("microsoft/Phi-3-medium-4k-instruct", _PHI3, n_layer=40, hidden=5120, intermediate=17920,
          n_head=40, n_kv_head=10, vocab=32064, sliding_window=2047),
    _spec("microsoft/phi-4", _PHI3, n_layer=40, hidden=5120, intermediate=17920, n_head=40, n_kv_head=10,
          vocab=100352, max_position=16384),
    # Phi-4-mini: rotary over 3/4 of each head, tied embeddings, 200k vocabulary.
    # Numbers: a markdown dump of the Hub config.json, cross-checked with a Swift test copy; built 3,836,021,760
    _spec("microsoft/Phi-4-mini-instruct", _PHI3, n_layer=32, hidden=3072, intermediate=8192, n_head=24, n_kv_head=8,
          vocab=200064, tied_embeddings=True, max_position=131072, sliding_window=262144, partial_rotary=0.75),
    # Falcon-7B: multi-query, parallel attention, one LayerNorm per layer, no linear biases
    _spec("tiiuae/falcon-7b", hf_type="falcon", family="falcon", layout="neox", norm="layernorm", norm_bias=True,
          norms_per_layer=1, parallel_block=True, mlp_gated=False, activation="gelu", tied_embeddings=True,
          n_layer=32, hidden=4544, intermediate=18176, n_head=71, n_kv_head=1, vocab=65024, max_position=2048),
    # Pythia (GPT-NeoX): parallel residual, two LayerNorms, quarter rotary, untied head
    _spec("EleutherAI/pythia-160m", _PYTHIA, n_layer=12, hidden=768, intermediate=3072, n_head=12),
    _spec("EleutherAI/pythia-410m", _PYTHIA, n_layer=24, hidden=1024, intermediate=4096, n_head=16),
    _spec("EleutherAI/pythia-1b", _PYTHIA, n_layer=16, hidden=2048, intermediate=8192, n_head=8),
    _spec("EleutherAI/pythia-1.4b", _PYTHIA, n_layer=24, hidden=2048, intermediate=8192, n_head=16),
    _spec("EleutherAI/pythia-2.8b", _PYTHIA, n_layer=32, hidden=2560, intermediate=10240, n_head=32),
    _spec("EleutherAI/pythia-6.9b", _PYTHIA, vocab=50432, n_layer=32, hidden=4096, intermediate=16384,
          n_head=32),
    _spec("EleutherAI/pythia-12b", _PYTHIA, vocab=50688, n_layer=36, hidden=5120, intermediate=20480,
          n_head=40),
    # StableLM: the alpha models are GPT-NeoX; StableLM-3B-4E1T and StableLM-2 have their own type
    _spec("stabilityai/stablelm-base-alpha-3b", _NEOX, family="stablelm", n_layer=16, hidden=4096,
          intermediate=16384, n_head=32, vocab=50688, max_position=4096),
    _spec("stabilityai/stablelm-3b-4e1t", _STABLELM, n_layer=32, hidden=2560, intermediate=6912, n_head=32,
          vocab=50304),
    _spec("stabilityai/stablelm-2-1_6b", _STABLELM, n_layer=24, hidden=2048, intermediate=5632, n_head=32,
          vocab=100352, qkv_bias=True),
    # GPT-2: learned positions, Conv1D projections with biases, tied head
    _spec("openai-community/gpt2", _GPT2, n_layer=12, hidden=768, intermediate=3072, n_head=12),
    _spec("openai-community/gpt2-medium", _GPT2, n_layer=24, hidden=1024, intermediate=4096, n_head=16),
    _spec("openai-community/gpt2-large", _GPT2, n_layer=36, hidden=1280, intermediate=5120, n_head=20),
    _spec("openai-community/gpt2-xl", _GPT2, n_layer=48, hidden=1600, intermediate=6400, n_head=25),
    # OLMo 2: post-norms only (after attention and MLP), q/k RMSNorm over the whole projection
    _spec("allenai/OLMo-2-0425-1B", _OLMO2, n_layer=16, hidden=2048, intermediate=8192, n_head=16),
    _spec("allenai/OLMo-2-1124-7B", _OLMO2, n_layer=32, hidden=4096, intermediate=11008, n_head=32),
    _spec("allenai/OLMo-2-1124-13B", _OLMO2, n_layer=40, hidden=5120, intermediate=13824, n_head=40),
    _spec("allenai/OLMo-2-0325-32B", _OLMO2, n_layer=64, hidden=5120, intermediate=27648, n_head=40,
          n_kv_head=8),
    # OLMo 3: OLMo-2 layers, 3 sliding-window (4096) layers per global one.
    # Numbers: OLMo-3-7B copies in prime-rl and mini-sglang tests (reconstructed, every size key agreeing);
    # built 7,298,011,136
    _spec("allenai/Olmo-3-1025-7B", hf_type="olmo3", family="olmo-3", n_layer=32, hidden=4096, intermediate=11008,
          n_head=32, vocab=100278, max_position=65536, sliding_window=4096, layer_types=_SLIDING_3_FULL),
    # gpt-oss: 32 or 128 experts (4 per token) with biases and a clamped SwiGLU, learned attention sinks, biases on
    # every attention projection, sliding (128) and full layers alternating; no SDPA in transformers (eager).
    # Numbers: github.com/ai-dynamo/aiconfigurator@095f58a5 aic-core/src/aiconfigurator_core/model_configs/openai--gpt-oss-{20b,120b}_config.json
    # (verbatim Hub copies); built 20,914,757,184 and 116,829,156,672 (= the model card's 20.91B and 116.8B)
    _spec("openai/gpt-oss-20b", _GPT_OSS, n_layer=24, n_experts=32),
    _spec("openai/gpt-oss-120b", _GPT_OSS, n_layer=36, n_experts=128),
    # Seed-OSS: q/k/v biases (not o), q width 10240 > hidden 5120, dropout 0.1 on attention and residual branches.
    # Numbers: a trimmed copy of the config.json (mlx-community), dropouts as the model card's config; built 36,151,104,512
    _spec("ByteDance-Seed/Seed-OSS-36B-Instruct", hf_type="seed_oss", family="seed-oss", n_layer=64, hidden=5120,
          intermediate=27648, n_head=80, n_kv_head=8, head_dim=128, vocab=155136, max_position=524288, qkv_bias=True,
          dropout=0.1,
          note="config.json keeps attention and residual dropout at 0.1, so training keeps dropout masks (one byte "
               "per element, as CUDA does); set both to 0 in the config to save them."),
    # DeepSeek-V3: multi-head latent attention (q rank 1536, KV latent 512 + 64 rotary), 3 dense layers, then 256
    # experts (8 per token, sigmoid group-limited routing) plus a shared expert.
    # Numbers: github.com/ai-dynamo/aiconfigurator@095f58a5 aic-core/src/aiconfigurator_core/model_configs/deepseek-ai--DeepSeek-V3_config.json (verbatim);
    # built 671,026,404,352 (the checkpoint's 685B adds the 14B multi-token-prediction module)
    _spec("deepseek-ai/DeepSeek-V3", hf_type="deepseek_v3", family="deepseek-v3", n_layer=61, hidden=7168,
          intermediate=18432, moe_intermediate=2048, shared_expert_intermediate=2048, n_head=128, n_kv_head=128,
          head_dim=192, vocab=129280, max_position=163840, n_experts=256, experts_per_token=8, first_dense_layers=3,
          n_group=8, topk_group=4, norm_topk_prob=True,
          q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
          note="transformers builds the 671B main model, not the 14B multi-token-prediction module of the 685B "
               "checkpoint; the FP8 (e4m3, 128x128 block) weights are planned as bf16, as training loads them."),
]

_BY_NAME = {spec.name: spec for spec in _BASES}

# DeepSeek-R1 distillations: Qwen2.5 / Llama-3 architectures fine-tuned on R1 outputs.
_R1 = "deepseek-ai/DeepSeek-R1-Distill-"
_BASES += [
    # the 1.5B comes from Qwen2.5-Math-1.5B, whose head is untied
    _like(_BY_NAME["Qwen/Qwen2.5-1.5B"], _R1 + "Qwen-1.5B", family="deepseek-r1-distill", tied_embeddings=False,
          max_position=131072),
    _like(_BY_NAME["Qwen/Qwen2.5-7B"], _R1 + "Qwen-7B", family="deepseek-r1-distill"),
    _like(_BY_NAME["Qwen/Qwen2.5-14B"], _R1 + "Qwen-14B", family="deepseek-r1-distill"),
    _like(_BY_NAME["Qwen/Qwen2.5-32B"], _R1 + "Qwen-32B", family="deepseek-r1-distill"),
    _like(_BY_NAME["meta-llama/Llama-3.1-8B"], _R1 + "Llama-8B", family="deepseek-r1-distill"),
    _like(_BY_NAME["meta-llama/Llama-3.1-70B"], _R1 + "Llama-70B", family="deepseek-r1-distill"),
]

# Instruct / chat variants: (base, variant, what its config.json changes, usually nothing).
_VARIANTS: list[tuple[str, str, dict]] = [
    *[(f"meta-llama/Llama-2-{s}-hf", f"meta-llama/Llama-2-{s}-chat-hf", {}) for s in ("7b", "13b", "70b")],
    *[(f"meta-llama/Meta-Llama-3-{s}", f"meta-llama/Meta-Llama-3-{s}-Instruct", {}) for s in ("8B", "70B")],
    *[(f"meta-llama/Llama-3.1-{s}", f"meta-llama/Llama-3.1-{s}-Instruct", {}) for s in ("8B", "70B", "405B")],
    ("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.3-70B-Instruct", {}),
    *[(f"meta-llama/Llama-3.2-{s}", f"meta-llama/Llama-3.2-{s}-Instruct", {}) for s in ("1B", "3B")],
    ("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", {}),
    *[(f"HuggingFaceTB/SmolLM2-{s}", f"HuggingFaceTB/SmolLM2-{s}-Instruct", {}) for s in ("135M", "360M", "1.7B")],
    ("01-ai/Yi-6B", "01-ai/Yi-6B-Chat", {}),
    ("01-ai/Yi-34B", "01-ai/Yi-34B-Chat", {}),
    ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1", {}),
    ("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", {}),
    ("mistralai/Mistral-Nemo-Base-2407", "mistralai/Mistral-Nemo-Instruct-2407", {}),
    ("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1", {}),
    *[(f"Qwen/Qwen2.5-{s}", f"Qwen/Qwen2.5-{s}-Instruct", {}) for s in ("0.5B", "1.5B", "3B")],
    # from 7B up the instruct configs declare a 32K context where the bases say 128K
    *[(f"Qwen/Qwen2.5-{s}", f"Qwen/Qwen2.5-{s}-Instruct", {"max_position": 32768})
      for s in ("7B", "14B", "32B", "72B")],
    *[(f"google/gemma-{s}", f"google/gemma-{s}-it", {}) for s in ("2b", "7b")],
    *[(f"google/gemma-2-{s}", f"google/gemma-2-{s}-it", {}) for s in ("2b", "9b", "27b")],
    *[(f"google/gemma-3-{s}-pt", f"google/gemma-3-{s}-it", {}) for s in ("1b", "4b", "12b", "27b")],
    ("tiiuae/falcon-7b", "tiiuae/falcon-7b-instruct", {}),
    *[(f"allenai/OLMo-2-1124-{s}", f"allenai/OLMo-2-1124-{s}-Instruct", {}) for s in ("7B", "13B")],
    ("allenai/Olmo-3-1025-7B", "allenai/Olmo-3-7B-Instruct-SFT", {}),
    # reasoning and coding fine-tunes of Mistral Small 3.1's text model: only the declared context differs
    ("mistralai/Mistral-Small-24B-Base-2501", "mistralai/Magistral-Small-2506", {"max_position": 40960}),
    ("mistralai/Mistral-Small-24B-Base-2501", "mistralai/Devstral-Small-2505", {"max_position": 131072}),
]


def _with_variants(bases: list[ModelSpec], variants: list[tuple[str, str, dict]]) -> list[ModelSpec]:
    """The presets in family order, each followed by its instruct / chat variants."""
    after: dict[str, list[ModelSpec]] = {}
    for base, name, changes in variants:
        after.setdefault(base, []).append(_like(_BY_NAME[base], name, **changes))
    return [out for spec in bases for out in (spec, *after.get(spec.name, ()))]


CATALOG: list[ModelSpec] = _with_variants(_BASES, _VARIANTS)


def _index() -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for spec in CATALOG:
        index[spec.name.lower()] = spec
        index.setdefault(spec.short_name.lower(), spec)
    return index


_INDEX = _index()


def find(name: str) -> ModelSpec | None:
    """The catalog entry of a Hugging Face id or short name (any case), or None."""
    return _INDEX.get(name.strip().lower())


def from_name(name: str, **overrides) -> ModelSpec:
    """A catalog preset, with overrides (tests shrink real presets this way); KeyError if unknown."""
    spec = find(name)
    if spec is None:
        raise KeyError(name)
    return replace(spec, **overrides) if overrides else spec


def catalog() -> Iterator[ModelSpec]:
    return iter(CATALOG)
