"""Reading a training config from disk: YAML or JSON into a mapping of plain values, checked for shape (a
mapping at the top, names as keys, no absurd nesting or size), and which tool it is for, told from its keys."""
from __future__ import annotations

from pathlib import Path

import yaml

from common.errors import InputError
from common.files import parse_json, read_text
from planner.foreign import keys

MAX_DEPTH = 24          # real configs nest 3 deep (zero_optimization.offload_param.device)
MAX_NODES = 200_000     # values in all; YAML aliases can make a small file enormous
WHAT = "training config"
TOOLS = {"axolotl": "axolotl", "llama-factory": "LLaMA-Factory", "trl": "TRL", "transformers": "Transformers",
         "accelerate": "Accelerate", "deepspeed": "DeepSpeed"}

# What each tool reads (LLaMA-Factory and TRL take every Trainer argument too), and the keys only one tool
# reads: what tells the formats apart. A file of Trainer arguments alone is plain Transformers.
VOCABULARY = {"axolotl": keys.AXOLOTL, "llama-factory": keys.LLAMA_FACTORY | keys.TRAINER,
              "trl": keys.TRL | keys.TRAINER, "accelerate": keys.ACCELERATE, "deepspeed": keys.DEEPSPEED}
DISTINCT = {tool: words - frozenset().union(*(w for t, w in VOCABULARY.items() if t != tool))
            for tool, words in VOCABULARY.items()}


def load(path: str) -> dict:
    """The mapping a YAML or JSON file holds, or one sentence saying why it is not one."""
    text = read_text(path, WHAT)
    where = f"The {WHAT} {path}"
    data = parse_json(text, where) if _is_json(path, text) else _parse_yaml(text, where)
    if not isinstance(data, dict):
        raise InputError(f"{where} holds {_kind(data)}, not a mapping of settings; give the YAML or JSON file "
                         "the tool reads.")
    _check_shape(data, where)
    return data


def _is_json(path: str, text: str) -> bool:
    return Path(path).suffix.lower() == ".json" or text.lstrip().startswith("{")


def _parse_yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or "a syntax error").split())[:80]
        raise InputError(f"{where} is not valid YAML ({problem}{at}); fix the file.") from None
    except RecursionError:
        raise InputError(f"{where} nests too deeply to be a real file; fix the file.") from None
    except ValueError as err:   # an integer of thousands of digits, a date that is no date
        raise InputError(f"{where} holds a value YAML cannot read ({str(err)[:80]}); fix the file.") from None


def _kind(data) -> str:
    if data is None:
        return "nothing"
    return {list: "a list", str: "a string"}.get(type(data), f"a {type(data).__name__}")


def _check_shape(data: dict, where: str) -> None:
    """Keys are names; nesting and size are what a real config can be (walked without recursion)."""
    stack, seen = [(data, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH or seen > MAX_NODES:
            raise InputError(f"{where} nests too deeply or holds too many values to be a real config; fix the file.")
        if isinstance(node, dict):
            bad = next((k for k in node if not isinstance(k, str)), None)
            if bad is not None:
                raise InputError(f"{where} has a key {str(bad)[:40]!r} that is not a name; quote it or fix the file.")
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def detect(data: dict, path: str) -> str:
    """Which tool the file is for: the one with the most keys only it reads."""
    scores = {tool: len(DISTINCT[tool] & set(data)) for tool in DISTINCT}
    if isinstance(data.get("fp16"), dict) or isinstance(data.get("bf16"), dict):
        scores["deepspeed"] += 1   # DeepSpeed's precision sections; the others take booleans
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    (best, top), (second, runner_up) = ranked[0], ranked[1]
    if top == 0 and set(data) & keys.TRAINER:
        return "transformers"
    if top == 0:
        raise InputError(f"The {WHAT} {path} has no keys of axolotl, LLaMA-Factory, TRL or Transformers, Accelerate "
                         "or DeepSpeed; give the YAML or JSON file one of those tools reads.")
    if top == runner_up:
        raise InputError(f"The {WHAT} {path} reads as {TOOLS[best]} and as {TOOLS[second]} equally; give one tool's "
                         "config per file.")
    return best
