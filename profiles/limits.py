"""What a number in a model's config.json may be: its type and a range wide enough for every real model and
narrow enough that arithmetic on it stays exact and fast. Checked with pydantic, imported only when a
config file is read (catalog entries need no check)."""
from __future__ import annotations

from functools import lru_cache

from common.errors import InputError

_INT = {  # ModelSpec field -> (lowest, highest)
    "n_layer": (1, 1024), "hidden": (1, 131072), "intermediate": (1, 1_048_576), "n_head": (1, 4096),
    "n_kv_head": (1, 4096), "head_dim": (1, 4096), "vocab": (1, 10_000_000), "max_position": (1, 2**31),
    "n_experts": (0, 4096), "experts_per_token": (0, 256), "moe_intermediate": (1, 1_048_576),
    "sliding_window": (1, 2**31), "norms_per_layer": (0, 8), "learned_positions": (0, 2**31),
    "first_dense_layers": (0, 1024), "attention_chunk": (1, 2**31), "q_lora_rank": (0, 131072),
    "kv_lora_rank": (0, 131072), "qk_rope_head_dim": (0, 4096), "qk_nope_head_dim": (0, 4096), "v_head_dim": (0, 4096),
    "linear_k_heads": (0, 4096), "linear_v_heads": (0, 4096), "linear_k_head_dim": (0, 4096),
    "linear_v_head_dim": (0, 4096), "linear_conv_kernel": (0, 64), "shared_expert_intermediate": (0, 1_048_576),
    "n_group": (1, 4096), "topk_group": (1, 4096),
}
_FLOAT = {"partial_rotary": (0.0, 1.0), "dropout": (0.0, 1.0), "logit_softcap": (0.0, 1e6), "attn_softcap": (0.0, 1e6),
          "swiglu_limit": (0.0, 1e6)}
_BOOL = ("tied_embeddings", "qkv_bias", "o_bias", "mlp_bias", "lm_head_bias", "parallel_block", "mlp_gated",
         "norm_bias", "final_norm", "norm_weight_fp32", "norm_weight_offset", "rope_by_cat",
         "softmax_in_scores_dtype", "sdpa_always_masked", "attn_temperature", "attn_sinks", "gated_attention",
         "router_bias", "shared_expert_gate", "dropout_on_embeddings", "peft_remaps_mlp", "norm_topk_prob",
         "rope_fp32")
_TEXT = ("activation", "norm", "layout", "qk_norm", "norm_placement", "router", "router_module")
# Per-layer lists: (item type, longest list)
_LISTS = {"layer_types": (str, 1024), "no_rope_layers": (int, 1024)}


@lru_cache(maxsize=1)
def _model():
    from typing import Annotated, Optional

    from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model
    fields = {name: (Optional[Annotated[StrictInt, Field(ge=low, le=high)]], None) for name, (low, high) in _INT.items()}
    fields |= {name: (Optional[Annotated[float, Field(ge=low, le=high, allow_inf_nan=False, strict=True)]], None)
               for name, (low, high) in _FLOAT.items()}
    fields |= {name: (Optional[StrictBool], None) for name in _BOOL}
    fields |= {name: (Optional[Annotated[StrictStr, Field(max_length=64)]], None) for name in _TEXT}
    items = {str: Annotated[StrictStr, Field(max_length=64)], int: Annotated[StrictInt, Field(ge=0, le=1)]}
    fields |= {name: (Optional[Annotated[list[items[kind]], Field(max_length=most)]], None)
               for name, (kind, most) in _LISTS.items()}
    return create_model("ConfigNumbers", __config__=ConfigDict(extra="allow"), **fields)


def checked_fields(values: dict, name: str, keys: dict[str, str]) -> dict:
    """`values` (ModelSpec fields read from a config.json) if every one has a sane type and range; else
    InputError naming the config key, its value and what it must be. `keys`: field -> config.json key."""
    from pydantic import ValidationError
    try:
        _model().model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0])
        value = repr(values.get(field))[:40]
        raise InputError(f"The config of {name} has {keys.get(field, field)} = {value}, which {_must(field)}; "
                         "fix its config.json.") from None
    return values


def _must(field: str) -> str:
    if field in _INT:
        return "must be a whole number from {:,} to {:,}".format(*_INT[field])
    if field in _FLOAT:
        return "must be a number from {} to {:,}".format(*_FLOAT[field])
    if field in _LISTS:
        return "must be a list with one short entry per layer" if _LISTS[field][0] is str else "must list 0 or 1 per layer"
    return "must be true or false" if field in _BOOL else "must be a short string"
