"""The catalog against transformers: every preset is built on the meta device (no weights, no download)
and must have exactly the parameter count and module names `ModelSpec` claims."""
from __future__ import annotations

import functools
import json
import re
from dataclasses import replace

import pytest

from common.errors import InputError
from profiles.models import CATALOG, from_name
from profiles.hf_config import SUPPORTED_TYPES, hf_config_dict, spec_from_hf_config
from profiles.spec import ModelSpec
from profiles.models import find
from planner.params import target_modules

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

IDS = [spec.name for spec in CATALOG]
# One preset per transformers model_type, for the slower checks.
ONE_PER_TYPE = list({spec.hf_type: spec for spec in reversed(CATALOG)}.values())

REQUIRED = [
    *[f"meta-llama/Llama-2-{s}-hf" for s in ("7b", "13b", "70b")],
    *[f"meta-llama/Meta-Llama-3-{s}" for s in ("8B", "70B")],
    *[f"meta-llama/Llama-3.1-{s}" for s in ("8B", "70B", "405B")],
    *[f"meta-llama/Llama-3.2-{s}" for s in ("1B", "3B")],
    "mistralai/Mistral-7B-v0.1", "mistralai/Mixtral-8x7B-v0.1",
    *[f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")],
    *[f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B")],
    "google/gemma-2b", "google/gemma-7b", *[f"google/gemma-2-{s}" for s in ("2b", "9b", "27b")],
    *[f"google/gemma-3-{s}-pt" for s in ("1b", "4b", "12b", "27b")],
    "microsoft/phi-2", "microsoft/phi-1_5", "microsoft/Phi-3-mini-4k-instruct", "microsoft/phi-4",
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", "tiiuae/falcon-7b",
    "stabilityai/stablelm-base-alpha-3b", "01-ai/Yi-34B",
    *[f"openai-community/{s}" for s in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")],
    "allenai/OLMo-2-1124-7B", "allenai/OLMo-2-1124-13B",
    *[f"deepseek-ai/DeepSeek-R1-Distill-{s}" for s in ("Qwen-1.5B", "Qwen-7B", "Qwen-14B", "Qwen-32B",
                                                         "Llama-8B", "Llama-70B")],
]

# Published totals (model cards, papers), independent of both fitplan and transformers.
PUBLISHED = {
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,
    "openai-community/gpt2": 124_439_808,
    "EleutherAI/pythia-160m": 162_322_944,
    "microsoft/phi-2": 2_779_683_840,
    "tiiuae/falcon-7b": 6_921_720_704,
    "Qwen/Qwen3-30B-A3B": 30_532_122_624,
}


@functools.lru_cache(maxsize=None)
def _build(config_json: str):
    """The transformers model for one config dict, on the meta device; variants share one build."""
    config = transformers.AutoConfig.for_model(**json.loads(config_json))
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def meta_model(spec: ModelSpec):
    return _build(json.dumps(hf_config_dict(spec), sort_keys=True))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spec", CATALOG, ids=IDS)
def test_params_match_transformers(spec):
    assert n_params(meta_model(spec)) == spec.params


@pytest.mark.parametrize("name, total", PUBLISHED.items())
def test_params_match_published_totals(name, total):
    assert from_name(name).params == total


@pytest.mark.parametrize("spec", CATALOG, ids=IDS)
def test_hf_config_round_trip(spec):
    back = spec_from_hf_config(hf_config_dict(spec), spec.name)
    assert back.params == spec.params
    assert replace(back, family=spec.family, source=spec.source) == spec


def _linear_names_in_layers(model, routers: set[str]) -> set[str]:
    """Leaf names of the linear modules of any layer (layers of different kinds carry different ones), routers
    left out (Llama-4's router and Qwen3-Next's shared-expert gate are nn.Linear, fitplan never adapts them)."""
    linear_types = (torch.nn.Linear, transformers.pytorch_utils.Conv1D)
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, linear_types) and re.search(r"\.\d+\.", name)}
    return names - routers


@pytest.mark.parametrize("spec", CATALOG, ids=IDS)
def test_lora_targets_exist_in_model(spec):
    model = meta_model(spec)
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    param_names = [name for name, _ in model.named_parameters()]
    for lin in spec.linears():
        if "." in lin.module:  # a fused expert parameter such as experts.gate_up_proj
            assert any(p.endswith("." + lin.module) for p in param_names), lin
        else:
            assert lin.module in module_names, lin
    plain = {lin.module for lin in spec.linears() if lin.role != "router" and "." not in lin.module}
    routers = {lin.module for lin in spec.linears() if lin.role == "router"}
    assert _linear_names_in_layers(model, routers) == plain


@pytest.mark.parametrize("spec", ONE_PER_TYPE, ids=[s.hf_type for s in ONE_PER_TYPE])
def test_lora_adapter_shapes_match_peft(spec):
    """peft on a two-layer shrink of the preset adds r * (d_in + d_out) per targeted linear and expert."""
    peft = pytest.importorskip("peft")
    small = from_name(spec.name, n_layer=2)
    modules = target_modules(small, ("all-linear",))  # what fitplan hands peft (routers left out)
    experts = sorted({lin.module for lin in small.linears() if lin.experts > 1})
    config = peft.LoraConfig(r=4, target_modules=modules, target_parameters=experts or None)
    fresh = _build.__wrapped__(json.dumps(hf_config_dict(small)))  # peft mutates it: keep it out of the cache
    model = peft.get_peft_model(fresh, config)
    added = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert added == sum(layers * 4 * (lin.d_in + lin.d_out) * lin.experts
                        for lin, layers in small.layer_linears() if lin.module in modules or lin.experts > 1)


@pytest.mark.parametrize("name", [s.name for s in ONE_PER_TYPE if s.is_moe and s.shared_expert_intermediate])
def test_peft_remaps_mlp_names_where_the_spec_says(name):
    """peft rewrites gate_proj / up_proj / down_proj targets of qwen2_moe-style types into the routed experts'
    fused parameters: there, fitplan leaves the dense and shared MLPs out of its LoRA targets."""
    peft = pytest.importorskip("peft")
    small = from_name(name, n_layer=2, first_dense_layers=1)
    fresh = _build.__wrapped__(json.dumps(hf_config_dict(small)))
    model = peft.get_peft_model(fresh, peft.LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_" in n}
    reaches_dense = any(n.endswith(("mlp.gate_proj", "shared_expert.gate_proj", "shared_experts.gate_proj"))
                        for n in adapted)
    assert reaches_dense is not small.peft_remaps_mlp
    assert ("gate_proj" in target_modules(small, ("all-linear",))) is not small.peft_remaps_mlp


def test_catalog_size_and_families():
    assert len(CATALOG) >= 40
    assert len({spec.family for spec in CATALOG}) >= 12
    assert len({spec.name for spec in CATALOG}) == len(CATALOG)


def test_required_models_present():
    missing = [name for name in REQUIRED if find(name) is None]
    assert not missing


def test_every_entry_has_a_release_record():
    from profiles.releases import RELEASES
    assert set(RELEASES) == {spec.name for spec in CATALOG}
    assert all(2019 <= r.year <= 2025 and r.licence and r.confidence in ("high", "medium", "low")
               for r in RELEASES.values())


def test_short_names_are_unambiguous():
    shorts = [spec.short_name.lower() for spec in CATALOG]
    assert len(set(shorts)) == len(shorts)


@pytest.mark.parametrize("spec", CATALOG, ids=IDS)
def test_every_entry_has_a_source(spec):
    assert spec.source == f"https://huggingface.co/{spec.name}/blob/main/config.json"


def test_from_name_is_case_insensitive_and_takes_short_names():
    full = from_name("meta-llama/Llama-2-7b-hf")
    assert from_name("META-LLAMA/llama-2-7B-HF") is full
    assert from_name("llama-2-7b-hf") is full
    assert from_name("  GPT2 ").name == "openai-community/gpt2"


def test_from_name_overrides_shrink_a_preset():
    small = from_name("Llama-3.1-8B", n_layer=2)
    assert (small.n_layer, small.n_kv_head, small.vocab) == (2, 8, 128256)
    with pytest.raises(KeyError):
        from_name("no-such-model")


@pytest.mark.parametrize("bad", [
    dict(n_layer=0), dict(hidden=0), dict(vocab=0), dict(intermediate=-1), dict(layout="conv"),
    dict(n_head=32, n_kv_head=5),
])
def test_incomplete_specs_are_rejected(bad):
    numbers = dict(name="x", hf_type="llama", family="x", n_layer=2, hidden=64, intermediate=128, n_head=4,
                   vocab=100)
    with pytest.raises(ValueError):
        ModelSpec(**{**numbers, **bad})


def test_spec_missing_a_number_is_rejected():
    with pytest.raises(TypeError):
        ModelSpec(name="x", hf_type="llama", family="x", n_layer=2, hidden=64, n_head=4, vocab=100)


def test_hf_config_refuses_what_the_model_type_cannot_build():
    llama = from_name("Llama-2-7b-hf")
    with pytest.raises(ValueError, match="norm"):
        hf_config_dict(replace(llama, norm="layernorm"))
    with pytest.raises(ValueError):
        hf_config_dict(replace(llama, hf_type="bloom"))


def test_gemma3_multimodal_config_reads_its_text_part():
    # google/gemma-3-4b-pt: a sparse text_config, the rest are Gemma3TextConfig defaults
    config = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                              "num_hidden_layers": 34, "sliding_window": 1024,
                              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
              "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}}
    spec = spec_from_hf_config(config, "gemma-3-4b-pt")
    assert spec.hf_type == "gemma3_text"
    assert spec.params == from_name("google/gemma-3-4b-pt").params


def test_hub_spellings_are_read():
    falcon = {"model_type": "falcon", "n_layer": 32, "n_head": 71, "hidden_size": 4544, "vocab_size": 65024,
              "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False}
    assert spec_from_hf_config(falcon, "falcon").params == PUBLISHED["tiiuae/falcon-7b"]
    gpt2 = {"model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
            "vocab_size": 50257, "n_inner": None, "activation_function": "gelu_new"}
    assert spec_from_hf_config(gpt2, "gpt2").params == PUBLISHED["openai-community/gpt2"]
    qwen = {**hf_config_dict(from_name("Qwen2.5-7B")), "use_sliding_window": False,
            "sliding_window": 131072}
    assert spec_from_hf_config(qwen, "qwen").sliding_window is None


def test_unsupported_configs_raise_one_sentence():
    with pytest.raises(InputError, match="'bloom', which fitplan does not support") as err:
        spec_from_hf_config({"model_type": "bloom", "n_layer": 2}, "bigscience/bloom")
    message = str(err.value)
    assert all(t in message for t in SUPPORTED_TYPES) and message.count(". ") == 0
    with pytest.raises(InputError, match="model_type"):
        spec_from_hf_config({"hidden_size": 8}, "x")
    with pytest.raises(InputError, match="mlp_only_layers"):
        moe = hf_config_dict(from_name("Qwen3-30B-A3B"))
        spec_from_hf_config({**moe, "mlp_only_layers": [0]}, "x")
    with pytest.raises(InputError, match="num_hidden_layers"):
        spec_from_hf_config({"model_type": "llama", "hidden_size": 64}, "x")
    with pytest.raises(InputError, match="inconsistent"):
        llama = hf_config_dict(from_name("Llama-2-7b-hf"))
        spec_from_hf_config({**llama, "num_key_value_heads": 5}, "x")

