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
from profiles.spec import ModelSpec

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
_NOT_IN_CONFIG = {"name", "family", "source", "hf_overrides"}


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
    "qwen3_moe": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS, **_MOE_KEYS}, traits={"qk_norm": "head"},
                       defaults={"max_position_embeddings": 32768, "num_experts": 128, "num_experts_per_tok": 8,
                                 "moe_intermediate_size": 768},
                       read_extra=_qwen3_moe_read, write_extra=_qwen3_moe_write),
    "gemma": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS}, traits=_GEMMA_NORM,
                   defaults={"head_dim": 256, "tie_word_embeddings": True, "max_position_embeddings": 8192,
                             "hidden_act": "gelu_pytorch_tanh"},
                   read_extra=_gemma_read),
    "gemma2": _Arch(_GEMMA2_KEYS, traits={**_GEMMA_NORM, **_SANDWICH},
                    defaults={"head_dim": 256, "tie_word_embeddings": True, "max_position_embeddings": 8192,
                              "hidden_activation": "gelu_pytorch_tanh", "sliding_window": 4096,
                              "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0}),
    # Gemma3TextConfig's defaults matter: the text_config of a multimodal gemma3 config.json is sparse.
    "gemma3_text": _Arch(_GEMMA2_KEYS, traits={**_GEMMA_NORM, **_SANDWICH, "qk_norm": "head"},
                         defaults={"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                                   "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                                   "head_dim": 256, "tie_word_embeddings": True,
                                   "max_position_embeddings": 131072, "hidden_activation": "gelu_pytorch_tanh",
                                   "sliding_window": 4096}),
    "olmo2": _Arch({**_LLAMA_KEYS, **_ATTN_BIAS},
                   traits={"qk_norm": "full", "norm_placement": "post", "norm_weight_fp32": True},
                   defaults={"max_position_embeddings": 2048}),
    "phi": _Arch({**_LLAMA_KEYS, "partial_rotary": "partial_rotary_factor"}, traits=_PHI_TRAITS,
                 defaults={"max_position_embeddings": 2048, "hidden_act": "gelu_new"},
                 read_extra=_chain(_partial_rotary("partial_rotary_factor", 0.5), _no_qk_layernorm("phi"))),
    "phi3": _Arch({**_LLAMA_KEYS, "sliding_window": "sliding_window"}, traits={"layout": "phi3", "rope_by_cat": True},
                  defaults={"max_position_embeddings": 4096}),
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
_TEXT_PART = {"gemma3": "gemma3_text"}
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
        out[key] = getattr(spec, name)
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


def spec_from_hf_config(d: dict, name: str) -> ModelSpec:
    """Read a config.json dict of any supported model_type into a ModelSpec; every number is checked for its
    type and a sane range first (`profiles.limits`), so a malformed config is one sentence, never a crash."""
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
    try:
        return ModelSpec(name=name, hf_type=model_type, family=model_type, **got)
    except (TypeError, ValueError) as err:
        raise InputError(f"The config of {name} has inconsistent numbers ({err}); check its config.json.") from None
