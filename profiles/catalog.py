"""Catalog presets, grouped by family. Each lists only what differs from `ModelSpec`'s defaults,
with the Hugging Face config it was read from."""
from profiles.models import ModelSpec

HF = "https://huggingface.co/{}/blob/main/config.json"


def _spec(name: str, **numbers) -> ModelSpec:
    return ModelSpec(name=name, source=HF.format(name), **numbers)


CATALOG: list[ModelSpec] = [
    # Llama 2
    _spec("meta-llama/Llama-2-7b-hf", hf_type="llama", family="llama-2", n_layer=32, hidden=4096,
          intermediate=11008, n_head=32, vocab=32000),
    # Llama 3.1
    _spec("meta-llama/Llama-3.1-8B", hf_type="llama", family="llama-3", n_layer=32, hidden=4096,
          intermediate=14336, n_head=32, n_kv_head=8, vocab=128256, max_position=131072),
]
