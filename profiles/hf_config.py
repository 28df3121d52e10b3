"""Translate between `ModelSpec` and the `config.json` dict transformers builds a model from.

`hf_config_dict(spec)` writes every key the architecture needs, so transformers' defaults never decide
a number; `spec_from_hf_config(d, name)` reads a real config.json and fills the keys it omits with the
defaults of the transformers config class. Neither imports transformers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

from common.errors import InputError
from profiles.limits import checked_fields
from profiles.spec import ModelSpec, expand

# ModelSpec field -> config.json key, as the Llama-like types spell them.
_LLAMA_KEYS = {"n_layer": "num_hidden_layers", "hidden": "hidden_size", "intermediate": "intermediate_size",
               "n_head": "num_attention_heads", "n_kv_head": "num_key_value_heads", "head_dim": "head_dim",
               "vocab": "vocab_size", "tied_embeddings": "tie_word_embeddings",
               "max_position": "max_position_embeddings", "activation": "hidden_act"}
_NO_HEAD_DIM = {k: v for k, v in _LLAMA_KEYS.items() if k != "head_dim"}
_ATTN_BIAS = {"qkv_bias": "attention_bias", "o_bias": "attention_bias"}
_MOE_KEYS = {"n_experts": "num_experts", "experts_per_token": "num_experts_per_tok",
             "moe_intermediate": "moe_intermediate_size"}
_SOFTCAP_KEYS = {"logit_softcap": "final_logit_softcapping", "attn_softcap": "attn_logit_softcapping"}
_GEMMA2_KEYS = {**_LLAMA_KEYS, **_ATTN_BIAS, **_SOFTCAP_KEYS, "activation": "hidden_activation",
                "sliding_window": "sliding_window"}
_LAYERNORM = {"norm": "layernorm", "norm_bias": True}
_ALL_BIAS = {"qkv_bias": True, "o_bias": True, "mlp_bias": True}
_REQUIRED = ("n_layer", "hidden", "intermediate", "n_head", "vocab")
# Fields a config.json cannot say anything about; everything else must survive the round trip.
_NOT_IN_CONFIG = {"name", "family", "source", "hf_overrides", "note"}


@dataclass(frozen=True)
class _Arch:
    """How one transformers `model_type` spells a ModelSpec."""

    keys: dict[str, str]                                  # ModelSpec field -> config key
    traits: dict = field(default_factory=dict)            # fields the implementation hard-codes
    defaults: dict = field(default_factory=dict)          # config key -> transformers default
    read_extra: Callable[[dict, dict], dict] | None = None   # (config, fields read so far) -> more fields
    write_extra: Callable[[ModelSpec], dict] | None = None   # spec -> more config keys


def _qwen_sliding_read(d: dict, got: dict) -> dict:
    # Qwen configs carry a sliding_window that only applies when use_sliding_window is set.
    return {"sliding_window": d.get("sliding_window") if d.get("use_sliding_window") else None}


def _qwen_sliding_write(spec: ModelSpec) -> dict:
    return {"use_sliding_window": spec.sliding_window is not None, "sliding_window": spec.sliding_window}


def _qwen3_moe_read(d: dict, got: dict) -> dict:
    if d.get("mlp_only_layers") or d.get("decoder_sparse_step", 1) != 1:
        raise InputError("This Qwen3-MoE config mixes dense and expert layers (mlp_only_layers / "
                        "decoder_sparse_step), which fitplan does not model; use a config whose layers are all MoE.")
    return _qwen_sliding_read(d, got)


def _qwen3_moe_write(spec: ModelSpec) -> dict:
    return {**_qwen_sliding_write(spec), "decoder_sparse_step": 1, "mlp_only_layers": []}


def _gemma_read(d: dict, got: dict) -> dict:
    # Hub Gemma configs carry both keys; `hidden_activation` is the one the model runs when set.
    act = d.get("hidden_activation") or d.get("hidden_act")
    return {"activation": act} if act else {}


def _no_qk_layernorm(model_type: str) -> Callable[[dict, dict], dict]:
    def read(d: dict, got: dict) -> dict:
        if d.get("qk_layernorm"):
            raise InputError(f"This {model_type} config uses qk_layernorm, which fitplan does not model yet; "
                            f"use a catalog model or a config without it.")
        return {}
    return read


def _stablelm_norms(d: dict, got: dict) -> dict:
    # With a parallel residual, StableLM drops post_attention_layernorm.
    return {"norms_per_layer": 1 if got.get("parallel_block") else 2}


def _partial_rotary(key: str, default: float) -> Callable[[dict, dict], dict]:
    def read(d: dict, got: dict) -> dict:
        rope = d.get("rope_parameters") or {}
        return {"partial_rotary": d.get(key) or rope.get("partial_rotary_factor") or default}
    return read


def _chain(*readers: Callable[[dict, dict], dict]) -> Callable[[dict, dict], dict]:
    def read(d: dict, got: dict) -> dict:
        out: dict = {}
        for reader in readers:
            out.update(reader(d, {**got, **out}))
        return out
    return read


def _falcon_read(d: dict, got: dict) -> dict:
    heads, hidden = got["n_head"], got["hidden"]
    new_arch = d.get("new_decoder_architecture", False)
    if new_arch or not d.get("multi_query", True):
        kv = d.get("num_kv_heads") or heads
    else:
        kv = 1
    n_ln = d.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 if not got.get("parallel_block", True) else n_ln
    return {"n_kv_head": kv, "norms_per_layer": norms, "intermediate": d.get("ffn_hidden_size") or 4 * hidden}


def _falcon_write(spec: ModelSpec) -> dict:
    new_arch = spec.n_kv_head not in (1, spec.n_head)
    return {"new_decoder_architecture": new_arch, "multi_query": spec.n_kv_head == 1 and not new_arch,
            "num_kv_heads": spec.n_kv_head, "ffn_hidden_size": spec.intermediate, "alibi": False,
            "num_ln_in_parallel_attn": spec.norms_per_layer if spec.parallel_block else None}


def _gpt2_read(d: dict, got: dict) -> dict:
    return {"intermediate": d.get("n_inner") or 4 * got["hidden"]}


def _gpt2_write(spec: ModelSpec) -> dict:
    return {"embd_pdrop": spec.dropout, "attn_pdrop": spec.dropout}  # GPT-2 uses one rate throughout


def _layer_types(default: Callable[[dict, dict], list[str]]) -> Callable[[dict, dict], dict]:
    """layer_types as listed, else as the transformers config class derives them."""
    def read(d: dict, got: dict) -> dict:
        return {"layer_types": d.get("layer_types") or default(d, got)}
    return read


def _every(k: int, each: str, last: str) -> Callable[[dict, dict], list[str]]:
    """Every k-th layer `last`, the others `each` (transformers' default patterns)."""
    return lambda d, got: [last if (i + 1) % k == 0 else each for i in range(got["n_layer"])]


def _gemma3_pattern(d: dict, got: dict) -> list[str]:
    k = d.get("sliding_window_pattern") or d.get("_sliding_window_pattern") or 6
    return _every(k, "sliding_attention", "full_attention")(d, got)


def _no_rope_pattern(d: dict, got: dict) -> dict:
    # 1: the layer applies rotary positions; by default every `no_rope_layer_interval`-th layer does not
    interval = d.get("no_rope_layer_interval") or 4
    return {"no_rope_layers": d.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(got["n_layer"])]}


def _first_dense(key: str) -> Callable[[dict, dict], dict]:
    """Dense layers given as a list (`mlp_only_layers`): fitplan models them only as the first k layers."""
    def read(d: dict, got: dict) -> dict:
        dense = sorted(d.get(key) or [])
        if dense != list(range(len(dense))) or d.get("decoder_sparse_step", 1) != 1:
            raise InputError(f"This {d['model_type']} config mixes dense and expert layers other than a dense first "
                             f"few ({key} / decoder_sparse_step), which fitplan does not model; use a config whose "
                             "expert layers follow any dense ones.")
        return {"first_dense_layers": len(dense)}
    return read


def _first_dense_write(key: str) -> Callable[[ModelSpec], dict]:
    return lambda spec: {key: list(range(spec.first_dense_layers)), "decoder_sparse_step": 1}


def _gpt_oss_write(spec: ModelSpec) -> dict:
    return {"experts_per_token": spec.experts_per_token}  # the Hub config repeats num_experts_per_tok


def _llama4_read(d: dict, got: dict) -> dict:
    n = got["n_layer"]
    moe = d.get("moe_layers")
    if moe is None:
        step = d.get("interleave_moe_layer_step") or 1
        moe = list(range(step - 1, n, step))
    first = min(moe, default=n)
    if sorted(moe) != list(range(first, n)):
        raise InputError("This Llama-4 config interleaves dense and expert layers (moe_layers / "
                         "interleave_moe_layer_step, as Maverick does), which fitplan does not model yet; "
                         "use a config whose expert layers follow any dense ones (Scout).")
    rope = _no_rope_pattern(d, got)
    chunk = d.get("attention_chunk_size", 8192)
    types = d.get("layer_types") or ["chunked_attention" if r and chunk is not None else "full_attention"
                                     for r in rope["no_rope_layers"]]
    return {**rope, "layer_types": types, "first_dense_layers": first, "attention_chunk": chunk,
            "qk_norm": "weightless" if d.get("use_qk_norm", True) else None,
            "shared_expert_intermediate": got.get("moe_intermediate")}


def _llama4_write(spec: ModelSpec) -> dict:
    return {"moe_layers": list(range(spec.first_dense_layers, spec.n_layer)), "attention_chunk_size": spec.attention_chunk,
            "use_qk_norm": spec.qk_norm == "weightless"}


def _smollm3_read(d: dict, got: dict) -> dict:
    rope = _no_rope_pattern(d, got)
    window = d.get("sliding_window") if d.get("use_sliding_window") else None
    types = d.get("layer_types") or ["sliding_attention" if window and not r else "full_attention"
                                     for r in rope["no_rope_layers"]]
    return {**rope, "layer_types": types, "sliding_window": window}


def _deepseek_read(d: dict, got: dict) -> dict:
    shared = (d.get("n_shared_experts") or 0) * got.get("moe_intermediate", 2048)
    return {"q_lora_rank": d.get("q_lora_rank") or 0, "shared_expert_intermediate": shared,
            "head_dim": got.get("qk_nope_head_dim", 128) + got.get("qk_rope_head_dim", 64)}


def _deepseek_write(spec: ModelSpec) -> dict:
    shared = spec.shared_expert_intermediate // spec.moe_intermediate if spec.moe_intermediate else 0
    return {"q_lora_rank": spec.q_lora_rank or None, "n_shared_experts": shared}


def _seed_oss_write(spec: ModelSpec) -> dict:
    return {"attention_dropout": spec.dropout}  # Seed-OSS drops out residual branches and attention alike


_FALCON_KEYS = {"n_layer": "num_hidden_layers", "hidden": "hidden_size", "n_head": "num_attention_heads",
                "vocab": "vocab_size", "tied_embeddings": "tie_word_embeddings",
                "max_position": "max_position_embeddings", "activation": "activation",
                "qkv_bias": "bias", "o_bias": "bias", "mlp_bias": "bias", "parallel_block": "parallel_attn"}
_GPT2_KEYS = {"n_layer": "n_layer", "hidden": "n_embd", "n_head": "n_head", "intermediate": "n_inner",
              "vocab": "vocab_size", "tied_embeddings": "tie_word_embeddings", "activation": "activation_function",
              "max_position": "n_positions", "learned_positions": "n_positions", "dropout": "resid_pdrop"}
# GPT-NeoX has neither GQA nor a head_dim key.
_GPT_NEOX_KEYS = {**{k: v for k, v in _NO_HEAD_DIM.items() if k != "n_kv_head"}, **_ATTN_BIAS,
                  "parallel_block": "use_parallel_residual", "partial_rotary": "rotary_pct"}
_MOE_LOCAL = {"n_experts": "num_local_experts", "experts_per_token": "num_experts_per_tok"}
_GPT_OSS_KEYS = {**_LLAMA_KEYS, **_ATTN_BIAS, **_MOE_LOCAL, "moe_intermediate": "intermediate_size",
                 "sliding_window": "sliding_window", "layer_types": "layer_types", "swiglu_limit": "swiglu_limit"}
_LLAMA4_KEYS = {**_LLAMA_KEYS, **_ATTN_BIAS, **_MOE_LOCAL, "intermediate": "intermediate_size_mlp",
                "moe_intermediate": "intermediate_size", "no_rope_layers": "no_rope_layers",
                "layer_types": "layer_types", "attn_temperature": "attn_temperature_tuning"}
_DEEPSEEK_KEYS = {**_NO_HEAD_DIM, **_ATTN_BIAS, "n_experts": "n_routed_experts", "experts_per_token": "num_experts_per_tok",
                  "moe_intermediate": "moe_intermediate_size", "first_dense_layers": "first_k_dense_replace",
                  "kv_lora_rank": "kv_lora_rank", "qk_rope_head_dim": "qk_rope_head_dim",
                  "qk_nope_head_dim": "qk_nope_head_dim", "v_head_dim": "v_head_dim", "n_group": "n_group",
                  "topk_group": "topk_group", "norm_topk_prob": "norm_topk_prob"}
_QWEN3_NEXT_KEYS = {**_LLAMA_KEYS, **_ATTN_BIAS, **_MOE_KEYS, "partial_rotary": "partial_rotary_factor",
                    "shared_expert_intermediate": "shared_expert_intermediate_size", "layer_types": "layer_types",
                    "linear_k_heads": "linear_num_key_heads", "linear_v_heads": "linear_num_value_heads",
                    "linear_k_head_dim": "linear_key_head_dim", "linear_v_head_dim": "linear_value_head_dim",
                    "linear_conv_kernel": "linear_conv_kernel_dim", "norm_topk_prob": "norm_topk_prob"}
# Per-layer patterns: written out for every layer, read back as their shortest period (ModelSpec keeps that).
_PATTERNS = ("layer_types", "no_rope_layers")
# Gemma's RMSNorm scales by (1 + weight) in fp32; Gemma-2/3 also normalise each sub-block's output.
_GEMMA_NORM = {"norm_weight_fp32": True, "norm_weight_offset": True}
_SANDWICH = {"norms_per_layer": 4, "norm_placement": "sandwich"}
_PHI_TRAITS = {"layout": "phi", **_LAYERNORM, **_ALL_BIAS, "norms_per_layer": 1, "parallel_block": True,
               "lm_head_bias": True, "mlp_gated": False}

ARCHS: dict[str, _Arch] = {
    "llama": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS, "mlp_bias": "mlp_bias"},
                   defaults={"max_position_embeddings": 2048}),
    "mistral": _Arch({**_LLAMA_KEYS, "sliding_window": "sliding_window"},
                     defaults={"max_position_embeddings": 131072, "sliding_window": 4096}),
    "mixtral": _Arch({**_LLAMA_KEYS, "sliding_window": "sliding_window", "n_experts": "num_local_experts",
                      "experts_per_token": "num_experts_per_tok"},
                     defaults={"max_position_embeddings": 131072, "num_local_experts": 8,
                               "num_experts_per_tok": 2}),
    "qwen2": _Arch(_LLAMA_KEYS, traits={"qkv_bias": True}, defaults={"max_position_embeddings": 32768},
                   read_extra=_qwen_sliding_read, write_extra=_qwen_sliding_write),
    "qwen3": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS}, traits={"qk_norm": "head"},
                   defaults={"max_position_embeddings": 32768, "head_dim": 128},
                   read_extra=_qwen_sliding_read, write_extra=_qwen_sliding_write),
    "qwen3_moe": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS, **_MOE_KEYS}, traits={"qk_norm": "head", "peft_remaps_mlp": True},
                       defaults={"max_position_embeddings": 32768, "num_experts": 128, "num_experts_per_tok": 8,
                                 "moe_intermediate_size": 768},
                       read_extra=_qwen3_moe_read, write_extra=_qwen3_moe_write),
    "gemma": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS}, traits=_GEMMA_NORM,
                   defaults={"head_dim": 256, "tie_word_embeddings": True, "max_position_embeddings": 8192,
                             "hidden_act": "gelu_pytorch_tanh"},
                   read_extra=_gemma_read),
    "gemma2": _Arch({**_GEMMA2_KEYS, "layer_types": "layer_types"}, traits={**_GEMMA_NORM, **_SANDWICH},
                    defaults={"head_dim": 256, "tie_word_embeddings": True, "max_position_embeddings": 8192,
                              "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 4096,
                              "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
                    read_extra=_layer_types(_every(2, "sliding_attention", "full_attention"))),
    # Gemma3TextConfig's defaults matter: the text_config of a multimodal gemma3 config.json is sparse.
    "gemma3_text": _Arch({**_GEMMA2_KEYS, "layer_types": "layer_types"},
                         traits={**_GEMMA_NORM, **_SANDWICH, "qk_norm": "head"},
                         defaults={"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                                   "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                                   "head_dim": 256, "tie_word_embeddings": True,
                                   "max_position_embeddings": 131072, "hidden_activation": "gelu_pytorch_tanh",
                                   "sliding_window": 4096},
                         read_extra=_layer_types(_gemma3_pattern)),
    "olmo2": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS},
                   traits={"qk_norm": "full", "norm_placement": "post", "norm_weight_fp32": True},
                   defaults={"max_position_embeddings": 2048}),
    "olmo3": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS, "sliding_window": "sliding_window", "layer_types": "layer_types"},
                   traits={"qk_norm": "full", "norm_placement": "post", "norm_weight_fp32": True, "rope_fp32": True},
                   defaults={"max_position_embeddings": 2048, "sliding_window": 4096},
                   read_extra=_layer_types(_every(4, "sliding_attention", "full_attention"))),
    "seed_oss": _Arch({**_LLAMA_KEYS, "qkv_bias": "attention_bias", "o_bias": "attention_out_bias",
                       "mlp_bias": "mlp_bias", "dropout": "residual_dropout"},
                      traits={"dropout_on_embeddings": False},
                      defaults={"vocab_size": 155136, "hidden_size": 4096, "intermediate_size": 27648,
                                "num_hidden_layers": 64, "num_attention_heads": 80, "num_key_value_heads": 8,
                                "head_dim": 128, "max_position_embeddings": 524288, "attention_bias": True,
                                "attention_out_bias": False, "residual_dropout": 0.1},
                      write_extra=_seed_oss_write),
    "smollm3": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS, "mlp_bias": "mlp_bias"},
                     defaults={"max_position_embeddings": 32768, "tie_word_embeddings": True},
                     read_extra=_smollm3_read,
                     write_extra=lambda spec: {"no_rope_layers": expand(spec.no_rope_layers or (1,), spec.n_layer),
                                               "use_sliding_window": spec.sliding_window is not None,
                                               "sliding_window": spec.sliding_window,
                                               "layer_types": expand(spec.layer_types or ("full_attention",),
                                                                     spec.n_layer)}),
    "gpt_oss": _Arch(_GPT_OSS_KEYS,
                     traits={"mlp_bias": True, "router": "softmax_topk", "router_bias": True, "router_module": "router",
                             "attn_sinks": True, "norm_weight_fp32": True, "softmax_in_scores_dtype": True},
                     defaults={"num_hidden_layers": 36, "num_local_experts": 128, "vocab_size": 201088,
                               "hidden_size": 2880, "intermediate_size": 2880, "head_dim": 64,
                               "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
                               "max_position_embeddings": 131072, "num_experts_per_tok": 4, "attention_bias": True,
                               "swiglu_limit": 7.0},
                     read_extra=_layer_types(_every(2, "sliding_attention", "full_attention")),
                     write_extra=_gpt_oss_write),
    "llama4_text": _Arch(_LLAMA4_KEYS, traits={"router": "sigmoid_all", "router_module": "router", "rope_fp32": True,
                                               "softmax_in_scores_dtype": True},
                         defaults={"vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
                                   "intermediate_size_mlp": 16384, "num_hidden_layers": 48,
                                   "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
                                   "max_position_embeddings": 131072, "num_experts_per_tok": 1,
                                   "num_local_experts": 16, "attn_temperature_tuning": True},
                         read_extra=_llama4_read, write_extra=_llama4_write),
    "qwen3_next": _Arch(_QWEN3_NEXT_KEYS,
                        traits={"qk_norm": "head", "gated_attention": True, "shared_expert_gate": True,
                                "norm_weight_fp32": True, "norm_weight_offset": True, "peft_remaps_mlp": True},
                        defaults={"max_position_embeddings": 32768, "head_dim": 256, "num_experts": 512,
                                  "num_experts_per_tok": 10, "moe_intermediate_size": 512,
                                  "shared_expert_intermediate_size": 512, "linear_num_key_heads": 16,
                                  "linear_num_value_heads": 32, "linear_key_head_dim": 128,
                                  "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "norm_topk_prob": True},
                        read_extra=_chain(_partial_rotary("partial_rotary_factor", 0.25), _first_dense("mlp_only_layers"),
                                          lambda d, got: {"layer_types": d.get("layer_types") or _every(
                                              d.get("full_attention_interval") or 4, "linear_attention",
                                              "full_attention")(d, got)}),
                        write_extra=_first_dense_write("mlp_only_layers")),
    "deepseek_v3": _Arch(_DEEPSEEK_KEYS, traits={"router": "sigmoid_group", "peft_remaps_mlp": True},
                         defaults={"vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                                   "moe_intermediate_size": 2048, "num_hidden_layers": 61,
                                   "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
                                   "kv_lora_rank": 512, "qk_rope_head_dim": 64, "v_head_dim": 128,
                                   "qk_nope_head_dim": 128, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                                   "n_group": 8, "topk_group": 4, "norm_topk_prob": True},
                         read_extra=_deepseek_read, write_extra=_deepseek_write),
    "phi": _Arch({**_LLAMA_KEYS, "partial_rotary": "partial_rotary_factor"}, traits=_PHI_TRAITS,
                 defaults={"max_position_embeddings": 2048, "hidden_act": "gelu_new"},
                 read_extra=_chain(_partial_rotary("partial_rotary_factor", 0.5), _no_qk_layernorm("phi"))),
    "phi3": _Arch({**_LLAMA_KEYS, "sliding_window": "sliding_window", "partial_rotary": "partial_rotary_factor"},
                  traits={"layout": "phi3", "rope_by_cat": True}, defaults={"max_position_embeddings": 4096},
                  read_extra=_partial_rotary("partial_rotary_factor", 1.0)),
    "gpt_neox": _Arch(_GPT_NEOX_KEYS,
                      traits={"layout": "neox", **_LAYERNORM, "mlp_bias": True, "mlp_gated": False},
                      defaults={"max_position_embeddings": 2048, "hidden_act": "gelu", "attention_bias": True,
                                "use_parallel_residual": True},
                      read_extra=_partial_rotary("rotary_pct", 0.25)),
    "stablelm": _Arch({**_NO_HEAD_DIM, "qkv_bias": "use_qkv_bias", "parallel_block": "use_parallel_residual",
                       "partial_rotary": "partial_rotary_factor"}, traits=_LAYERNORM,
                      defaults={"max_position_embeddings": 4096},
                      read_extra=_chain(_partial_rotary("partial_rotary_factor", 0.25),
                                        _no_qk_layernorm("stablelm"), _stablelm_norms)),
    "falcon": _Arch(_FALCON_KEYS, traits={"layout": "neox", **_LAYERNORM, "mlp_gated": False,
                                          "softmax_in_scores_dtype": True, "sdpa_always_masked": True},
                    defaults={"num_hidden_layers": 32, "hidden_size": 4544, "num_attention_heads": 71,
                              "vocab_size": 65024, "tie_word_embeddings": True, "max_position_embeddings": 2048,
                              "activation": "gelu", "bias": False, "parallel_attn": True},
                    read_extra=_falcon_read, write_extra=_falcon_write),
    "gpt2": _Arch(_GPT2_KEYS, traits={"layout": "gpt2", **_LAYERNORM, **_ALL_BIAS, "mlp_gated": False,
                                      "softmax_in_scores_dtype": True},
                  defaults={"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257,
                            "tie_word_embeddings": True, "n_positions": 1024, "activation_function": "gelu_new",
                            "resid_pdrop": 0.1},
                  read_extra=_gpt2_read, write_extra=_gpt2_write),
}
# Old spellings some hub configs still use, mapped to the ones transformers 5 reads.
_ALIASES = {"falcon": {"n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_embed": "hidden_size"}}
# Multimodal types whose language model fitplan plans for (the vision tower is not counted).
_TEXT_PART = {"gemma3": "gemma3_text", "llama4": "llama4_text"}
SUPPORTED_TYPES = tuple(sorted([*ARCHS, *_TEXT_PART]))


def family_traits(model_type: str) -> dict:
    """The fields every model of this transformers type shares (layout, norms, biases, kernels' quirks)."""
    return dict(ARCHS[model_type].traits)


def hf_config_dict(spec: ModelSpec) -> dict:
    """A config.json dict from which transformers builds exactly this architecture."""
    arch = ARCHS.get(spec.hf_type)
    if arch is None:
        raise ValueError(f"{spec.name}: no transformers mapping for model_type {spec.hf_type!r}")
    out: dict = {"model_type": spec.hf_type}
    for name, key in arch.keys.items():
        value = getattr(spec, name)
        out[key] = expand(value, spec.n_layer) if name in _PATTERNS and value else value
    if arch.write_extra:
        out.update(arch.write_extra(spec))
    out.update(spec.hf_overrides)
    lost = _round_trip_losses(spec, out)
    if lost:
        raise ValueError(f"{spec.name}: a {spec.hf_type} config cannot express {', '.join(lost)}")
    return out


def _round_trip_losses(spec: ModelSpec, d: dict) -> list[str]:
    back = spec_from_hf_config(d, spec.name)
    return [f.name for f in fields(ModelSpec)
            if f.name not in _NOT_IN_CONFIG and getattr(back, f.name) != getattr(spec, f.name)]


def transformers_ready(config: dict) -> tuple[dict, list[str]]:
    """`config` with the published values transformers 5 refuses put as it accepts them, and a note on each.

    Meta's Llama-4 config.json sets attn_temperature_tuning to the int 4, where transformers 5's strict
    Llama4TextConfig takes a bool (any nonzero value meant "on" in Meta's code): read as true."""
    if not isinstance(config, dict):
        return config, []
    notes: list[str] = []
    text = config.get("text_config")
    if config.get("model_type") == "llama4" and isinstance(text, dict):
        fixed, notes = _llama4_text_ready(text)
        return ({**config, "text_config": fixed} if notes else config), notes
    if config.get("model_type") == "llama4_text":
        return _llama4_text_ready(config)
    return config, notes


def _llama4_text_ready(text: dict) -> tuple[dict, list[str]]:
    value = text.get("attn_temperature_tuning")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text, []
    note = (f"attn_temperature_tuning = {value} in the config read as {bool(value)}: transformers 5 takes a bool "
            "and rejects the int Meta's config.json gives")
    return {**text, "attn_temperature_tuning": bool(value)}, [note]


def spec_from_hf_config(d: dict, name: str) -> ModelSpec:
    """Read a config.json dict of any supported model_type into a ModelSpec; every number is checked for its
    type and a sane range first (`profiles.limits`), so a malformed config is one sentence, never a crash."""
    d, _ = transformers_ready(d)
    model_type, d = _typed_config(d, name)
    arch = ARCHS.get(model_type)
    if arch is None:
        raise InputError(f"The config of {name} has model_type {model_type[:60]!r}, which fitplan does not support; "
                         f"give a catalog name or a config of one of these model types: "
                         f"{', '.join(SUPPORTED_TYPES)}.")
    d = _unalias(d, model_type)
    got = dict(arch.traits)
    for name_, key in arch.keys.items():
        value = d[key] if key in d else arch.defaults.get(key)
        if value is not None:
            got[name_] = value
    got = checked_fields(got, name, arch.keys)
    if arch.read_extra:
        try:
            extra = arch.read_extra(d, got)
        except (TypeError, ValueError, KeyError, AttributeError):
            raise InputError(f"The config of {name} has a field of the wrong type; check its config.json "
                             f"against the {model_type} model's.") from None
        got.update(checked_fields(extra, name, arch.keys))
    missing = [arch.keys.get(f, f) for f in _REQUIRED if f not in got]
    if missing:
        raise InputError(f"The config of {name} lacks {', '.join(missing)}; "
                         f"give a complete {model_type} config.json.")
    return _build(name, model_type, got)


def _typed_config(d, name: str) -> tuple[str, dict]:
    """(model_type, the dict to read): a multimodal config's text part for the types fitplan reads that way."""
    if not isinstance(d, dict) or not isinstance(d.get("model_type"), str) or not d["model_type"]:
        raise InputError(f"The config of {name} has no model_type (a string); give the config.json of a "
                         "Hugging Face model.")
    model_type = d["model_type"]
    if model_type not in _TEXT_PART:
        return model_type, d
    text = d.get("text_config") or {}
    if not isinstance(text, dict):
        raise InputError(f"The config of {name} has a text_config that is not an object; give the model's "
                         "config.json as it was published.")
    return _TEXT_PART[model_type], {**text, "model_type": _TEXT_PART[model_type]}


def _unalias(d: dict, model_type: str) -> dict:
    aliases = _ALIASES.get(model_type, {})
    out = dict(d)
    for old, new in aliases.items():
        if old in d and new not in d:
            out[new] = d[old]
    return out


def _build(name: str, model_type: str, got: dict) -> ModelSpec:
    got = {k: tuple(v) if k in _PATTERNS else v for k, v in got.items()}
    try:
        return ModelSpec(name=name, hf_type=model_type, family=model_type, **got)
    except (TypeError, ValueError) as err:
        raise InputError(f"The config of {name} has inconsistent numbers ({err}); check its config.json.") from None
