"""MODEL arguments: catalog names, config.json files and local folders with hand-made safetensors files."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from common.errors import InputError
from planner.model_input import read_safetensors_header, resolve_model
from profiles.hf_config import hf_config_dict
from profiles.spec import ModelSpec
from profiles.models import from_name

BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8, "U8": 1}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], metadata: dict | None = None) -> None:
    """A valid safetensors file: 8-byte little-endian header length, JSON header, zeroed data."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # the data, as zeros, without writing them


def write_config(folder: Path, spec: ModelSpec | dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(spec if isinstance(spec, dict) else hf_config_dict(spec)))
    return path


@pytest.fixture
def tiny() -> ModelSpec:
    return from_name("Llama-3.2-1B", n_layer=2, vocab=1000, hidden=64, intermediate=128, n_head=4,
                               n_kv_head=2, head_dim=16)


def tiny_tensors(spec: ModelSpec) -> dict[str, tuple[str, list[int]]]:
    """The tensors of a checkpoint of `spec` (tied head stored once), all BF16 but the norms in F32."""
    out = {"model.embed_tokens.weight": ("BF16", [spec.vocab, spec.hidden]),
           "model.norm.weight": ("F32", [spec.hidden])}
    for i in range(spec.n_layer):
        for lin in spec.linears():
            block = "self_attn" if lin.role in ("q", "k", "v", "o") else "mlp"
            out[f"model.layers.{i}.{block}.{lin.module}.weight"] = ("BF16", [lin.d_out, lin.d_in])
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = ("F32", [spec.hidden])
    return out


# --- catalog names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["meta-llama/Llama-2-7b-hf", "META-LLAMA/LLAMA-2-7B-HF", "llama-2-7b-hf",
                                 " Llama-2-7b-hf "])
def test_catalog_names_any_case(arg):
    model = resolve_model(arg)
    assert (model.source, model.spec.name, model.exact_params, model.dtypes) == \
        ("catalog", "meta-llama/Llama-2-7b-hf", None, None)
    assert model.spec.params == 6_738_415_616


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InputError) as err:
        resolve_model("Llama-2-7b")
    message = str(err.value)
    assert "meta-llama/Llama-2-7b-hf" in message
    assert "`fitplan models`" in message and "config.json" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_unknown_name_without_close_matches():
    with pytest.raises(InputError, match="Unknown model 'zzzz-qqq'") as err:
        resolve_model("zzzz-qqq")
    assert "closest" not in str(err.value)


# --- config.json ---------------------------------------------------------------------------------------

def test_config_json_path(tmp_path):
    spec = from_name("Qwen2.5-7B")
    path = write_config(tmp_path / "Qwen2.5-7B", spec)
    model = resolve_model(str(path))
    assert model.source == "config"
    assert model.spec.name == "Qwen2.5-7B" and model.spec.source == str(path)
    assert model.spec.params == spec.params and model.exact_params is None


def test_config_with_another_file_name(tmp_path):
    path = tmp_path / "gemma.json"
    path.write_text(json.dumps(hf_config_dict(from_name("gemma-2-2b"))))
    model = resolve_model(str(path))
    assert model.spec.name == "gemma" and model.spec.params == 2_614_341_888


def test_malformed_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",')
    with pytest.raises(InputError, match="not valid JSON .*line 1"):
        resolve_model(str(path))


def test_config_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON list, not an object"):
        resolve_model(str(path))


def test_unreadable_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "\xff\xfe"}')
    with pytest.raises(InputError, match="is not UTF-8 text"):
        resolve_model(str(path))


def test_unsupported_model_type(tmp_path):
    path = write_config(tmp_path, {"model_type": "bloom", "n_layer": 24, "hidden_size": 1024})
    with pytest.raises(InputError, match="'bloom', which fitplan does not support.*llama.*qwen2"):
        resolve_model(str(path))


@pytest.mark.parametrize("arg", ["nope/config.json", "./nope", "/no/such/folder", "~/no-such-model-folder"])
def test_missing_path(arg):
    with pytest.raises(InputError, match="No such file or folder"):
        resolve_model(arg)


def test_hub_id_outside_the_catalog_is_an_unknown_model():
    with pytest.raises(InputError, match="neither a catalog name nor an existing local path"):
        resolve_model("someone/some-model")


# --- folders -------------------------------------------------------------------------------------------

def test_folder_with_config_only(tmp_path, tiny):
    write_config(tmp_path / "tiny-llama", tiny)
    model = resolve_model(str(tmp_path / "tiny-llama"))
    assert (model.source, model.spec.name, model.exact_params, model.dtypes) == ("folder", "tiny-llama", None, None)


def test_folder_without_config_json(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F32", [2, 2])})
    with pytest.raises(InputError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_folder_with_unreadable_config(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(InputError, match="is not a regular file"):
        resolve_model(str(tmp_path))


def test_folder_with_one_safetensors_file(tmp_path, tiny):
    write_config(tmp_path, tiny)
    write_safetensors(tmp_path / "model.safetensors", tiny_tensors(tiny), metadata={"format": "pt"})
    model = resolve_model(str(tmp_path))
    norms = tiny.hidden * (2 * tiny.n_layer + 1)
    assert model.source == "folder"
    assert model.exact_params == tiny.params
    assert model.dtypes == {"BF16": tiny.params - norms, "F32": norms}


def test_sharded_folder_reads_the_shards_of_its_index(tmp_path, tiny):
    write_config(tmp_path, tiny)
    tensors = list(tiny_tensors(tiny).items())
    half = len(tensors) // 2
    shards = {"model-00001-of-00002.safetensors": dict(tensors[:half]),
              "model-00002-of-00002.safetensors": dict(tensors[half:])}
    for shard, part in shards.items():
        write_safetensors(tmp_path / shard, part)
    weight_map = {name: shard for shard, part in shards.items() for name in part}
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    # Mistral repos also ship the same weights as one consolidated file; it must not count twice.
    write_safetensors(tmp_path / "consolidated.safetensors", dict(tensors))
    model = resolve_model(str(tmp_path))
    assert model.exact_params == tiny.params


def test_loose_shards_without_index_are_summed(tmp_path):
    write_config(tmp_path, from_name("gpt2"))
    write_safetensors(tmp_path / "part-1.safetensors", {"a": ("F16", [3, 4]), "b": ("I64", [])})
    write_safetensors(tmp_path / "part-2.safetensors", {"c": ("F16", [5])})
    write_safetensors(tmp_path / "adapter_model.safetensors", {"lora": ("F32", [100])})
    assert resolve_model(str(tmp_path)).dtypes == {"F16": 17, "I64": 1}


def test_saved_buffers_are_not_parameters(tmp_path):
    write_config(tmp_path, from_name("gpt2"))
    write_safetensors(tmp_path / "model.safetensors", {
        "h.0.attn.c_attn.bias": ("F32", [6]), "h.0.attn.bias": ("U8", [1, 1, 4, 4]),
        "h.0.attn.masked_bias": ("F32", []), "model.layers.0.self_attn.rotary_emb.inv_freq": ("F32", [8])})
    assert resolve_model(str(tmp_path)).dtypes == {"F32": 6}


def test_sharded_folder_with_missing_shard(tmp_path, tiny):
    write_config(tmp_path, tiny)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(InputError, match="missing although the shard index lists it"):
        resolve_model(str(tmp_path))


def test_broken_shard_index(tmp_path, tiny):
    write_config(tmp_path, tiny)
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(InputError, match="shard index"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"\x05\x00", struct.pack("<Q", 2**40) + b"{}",
                                     struct.pack("<Q", 4) + b"{no}", struct.pack("<Q", 2) + b"[]"])
def test_corrupt_safetensors_file(tmp_path, tiny, content):
    write_config(tmp_path, tiny)
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(InputError, match="safetensors"):
        resolve_model(str(tmp_path))


def test_header_reader_agrees_with_the_safetensors_library(tmp_path):
    torch = pytest.importorskip("torch")
    save_file = pytest.importorskip("safetensors.torch").save_file
    path = tmp_path / "real.safetensors"
    save_file({"w": torch.zeros(3, 5, dtype=torch.bfloat16), "b": torch.zeros(7)}, str(path),
              metadata={"format": "pt"})
    header = read_safetensors_header(path)
    assert {name: (t["dtype"], t["shape"]) for name, t in header.items()} == \
        {"w": ("BF16", [3, 5]), "b": ("F32", [7])}
