"""Turn the MODEL argument into a ModelSpec: a catalog name, a config.json, or a local model folder.

A folder's safetensors headers give the exact parameter count per dtype; they are read with json and
struct only (8-byte little-endian header length, then a JSON header), so no tensor data is touched.
"""
from __future__ import annotations

import difflib
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from common.errors import InputError
from common.files import parse_json, read_json, regular_file
from profiles.hf_config import spec_from_hf_config
from profiles.spec import ModelSpec
from profiles.models import catalog, find

INDEX_FILE = "model.safetensors.index.json"
# Files next to the real weights that are not the model: Mistral's duplicate checkpoint, peft adapters.
NOT_MODEL_WEIGHTS = ("consolidated", "adapter_model")
MAX_HEADER_BYTES = 100 * 2**20
# Buffers some converted checkpoints saved alongside the weights (old Llama, GPT-2); not parameters.
BUFFER_SUFFIXES = ("rotary_emb.inv_freq", "attn.masked_bias")


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    source: str                           # "catalog" | "config" | "folder"
    exact_params: int | None = None       # from safetensors headers, when a folder has them
    dtypes: dict[str, int] | None = None  # parameters per safetensors dtype ("BF16": 6738415616)


def resolve_model(arg: str) -> ResolvedModel:
    """A catalog name or short name (any case), a path to a config.json, or a local model folder."""
    if not isinstance(arg, str) or not arg.strip():
        raise InputError("Name a model: a catalog name (`fitplan models` lists them), or the path of a local "
                         "config.json or model folder.")
    path = Path(arg.strip()).expanduser()
    kind = _path_kind(path)
    if kind == "folder":
        return _from_folder(path)
    if kind == "file":
        return ResolvedModel(read_config(path, _config_name(path)), "config")
    spec = find(arg)
    if spec is not None:
        return ResolvedModel(spec, "catalog")
    if kind == "other":
        raise InputError(f"{_short(arg)} is neither a regular file nor a folder; give the path of a config.json "
                         "or of a model folder.")
    if _looks_like_path(arg.strip()):
        raise InputError(f"No such file or folder: {_short(str(path))}; check the path, or give a catalog name "
                         f"(`fitplan models` lists them).")
    raise InputError(_unknown_model_message(arg.strip()))


def _path_kind(path: Path) -> str | None:
    """folder, file (regular), other (a FIFO, a device...), or None when nothing is there (or it cannot be)."""
    try:
        if path.is_dir():
            return "folder"
        if path.is_file():
            return "file"
        return "other" if path.exists() else None
    except (OSError, ValueError):   # a name too long for the file system, or with a NUL: not a path
        return None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _looks_like_path(arg: str) -> bool:
    # Hub ids ("org/name") contain a slash too, but never start with one or end in .json.
    return arg.endswith(".json") or arg.startswith(("/", "./", "../", "~", "\\")) or "\\" in arg


def closest_names(arg: str, count: int = 3) -> list[str]:
    """The catalog names closest to a mistyped one (by full or short name), best first."""
    names = {}
    for spec in catalog():
        names.setdefault(spec.name.lower(), spec.name)
        names.setdefault(spec.short_name.lower(), spec.name)
    close = difflib.get_close_matches(arg.lower(), names, n=2 * count, cutoff=0.6)
    return list(dict.fromkeys(names[c] for c in close))[:count]


def _unknown_model_message(arg: str) -> str:
    suggestions = closest_names(arg)
    hint = f" (closest catalog names: {', '.join(suggestions)})" if suggestions else ""
    return (f"Unknown model {_short(arg)!r}{hint}: it is neither a catalog name nor an existing local path; "
            f"run `fitplan models` for the catalog, or give the path of a local config.json or model folder.")


def _config_name(path: Path) -> str:
    # ".../Llama-2-7b-hf/config.json" is best named by its folder.
    return path.resolve().parent.name if path.name == "config.json" else path.stem


def read_config(path: Path, name: str) -> ModelSpec:
    """The ModelSpec of one config.json file."""
    config = read_json(path, "config.json")
    if not isinstance(config, dict):
        raise InputError(f"{_short(str(path))} holds a JSON {type(config).__name__}, not an object; "
                         f"give the model's config.json.")
    return replace(spec_from_hf_config(config, name), source=str(path))


def _from_folder(folder: Path) -> ResolvedModel:
    config = folder / "config.json"
    if not config.exists():
        raise InputError(f"The folder {folder} has no config.json; point at a model folder downloaded from the "
                        f"Hugging Face Hub (it contains config.json), or give a catalog name.")
    spec = read_config(config, folder.resolve().name)
    dtypes = safetensors_dtypes(weight_files(folder))
    if not dtypes:
        return ResolvedModel(spec, "folder")
    return ResolvedModel(spec, "folder", exact_params=sum(dtypes.values()), dtypes=dtypes)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files that hold the model: the shards its index names, else the loose files."""
    index = folder / INDEX_FILE
    if index.exists():
        return [folder / shard for shard in sorted(set(_read_index(index).values()))]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    return [p for p in sorted(folder.glob("*.safetensors")) if not p.name.startswith(NOT_MODEL_WEIGHTS)]


def _read_index(index: Path) -> dict[str, str]:
    data = read_json(index, "shard index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"The shard index {index} has no weight_map of file names; download it again or remove it.")
    if any(Path(v).name != v for v in weight_map.values()):   # a shard is a file of this folder, nothing else
        raise InputError(f"The shard index {index} names files outside its folder; download it again or remove it.")
    return weight_map


def safetensors_dtypes(files: list[Path]) -> dict[str, int]:
    """Parameter count per dtype over the given safetensors files, from their headers."""
    counts: dict[str, int] = {}
    for path in files:
        for name, info in read_safetensors_header(path).items():
            dtype, shape = _dtype_and_shape(name, info, path)
            if not _is_buffer(name, shape):
                counts[dtype] = counts.get(dtype, 0) + math.prod(shape)
    return counts


def _dtype_and_shape(name: str, info, path: Path) -> tuple[str, list[int]]:
    """A tensor entry's dtype and shape, when they are what safetensors writes (a short string, whole sizes)."""
    dtype = info.get("dtype") if isinstance(info, dict) else None
    shape = info.get("shape") if isinstance(info, dict) else None
    sizes_ok = isinstance(shape, list) and len(shape) <= 8 and all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 2**40 for n in shape)
    if not (isinstance(dtype, str) and len(dtype) <= 16 and sizes_ok):
        raise InputError(f"Tensor {str(name)[:60]!r} in {path} has no valid dtype/shape in its header; "
                         f"download the file again.")
    return dtype, shape


def _is_buffer(name: str, shape: list[int]) -> bool:
    # GPT-2's causal mask is saved as a 4-D `attn.bias`; a real bias is 1-D.
    return name.endswith(BUFFER_SUFFIXES) or (name.endswith("attn.bias") and len(shape) == 4)


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensors' {name: {"dtype", "shape", "data_offsets"}} of one safetensors file."""
    if not path.exists():
        raise InputError(f"The weights file {path} is missing although the shard index lists it; "
                         f"download the missing shard or point at the config.json instead.")
    regular_file(path, "weights file")
    try:
        with path.open("rb") as f:
            size_bytes = f.read(8)
            size = struct.unpack("<Q", size_bytes)[0] if len(size_bytes) == 8 else -1
            if not 0 < size <= MAX_HEADER_BYTES:
                raise ValueError("bad header length")
            text = f.read(size).decode("utf-8")
    except (OSError, ValueError) as err:   # UnicodeDecodeError is a ValueError
        raise InputError(f"{path} is not a readable safetensors file ({err.__class__.__name__}); "
                         f"download it again or point at the config.json instead.") from None
    header = parse_json(text, f"The safetensors header of {path}")
    if not isinstance(header, dict):
        raise InputError(f"{path} has a malformed safetensors header; download it again.")
    header.pop("__metadata__", None)
    return header
