"""Turn a `ModelSpec` into the `config.json` dict transformers builds the same architecture from."""
from __future__ import annotations

from profiles.models import ModelSpec


def hf_config_dict(spec: ModelSpec) -> dict:
    base = {
        "model_type": spec.hf_type,
        "num_hidden_layers": spec.n_layer,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_kv_head,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab,
        "tie_word_embeddings": spec.tied_embeddings,
        "max_position_embeddings": spec.max_position,
        "hidden_act": spec.activation,
        "attention_bias": spec.qkv_bias,
        "mlp_bias": spec.mlp_bias,
    }
    return {**base, **spec.hf_overrides}
