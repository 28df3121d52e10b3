"""`fitplan models`: the model catalog, as a table or as JSON with the raw numbers."""
from __future__ import annotations

import json
from typing import Iterable

import click

from cli.table import text_table

from common.errors import InputError
from profiles.spec import ModelSpec
from profiles.models import catalog
from profiles.releases import release_of

# Fields that change no byte of memory: an instruct variant may differ from its base only in these.
_NOT_MEMORY = ("name", "source", "max_position", "hf_overrides", "note")


@click.command("models")
@click.option("--family", default=None, metavar="NAME", help="Only this family (llama-2, qwen2.5, gemma-2, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(family: str | None, as_json: bool) -> None:
    """The model catalog: the names MODEL accepts, with their architecture numbers.

    \b
    Examples:
      fitplan models
      fitplan models --family qwen3 --json
    """
    specs = select(catalog(), family)
    click.echo(json.dumps(models_dict(specs), indent=2) if as_json else models_table(specs))


def select(specs: Iterable[ModelSpec], family: str | None = None, bases_only: bool = False) -> list[ModelSpec]:
    """The catalog entries of one family (any case), optionally without instruct / chat variants."""
    specs = list(specs)
    if family:
        wanted = family.strip().lower()
        families = list(dict.fromkeys(spec.family for spec in specs))
        if wanted not in families:
            raise InputError(f"Unknown model family {family!r}; choose one of: {', '.join(families)}.")
        specs = [spec for spec in specs if spec.family == wanted]
    if bases_only:
        variants = variant_of(specs)
        specs = [spec for spec in specs if spec.name not in variants]
    return specs


def variant_of(specs: Iterable[ModelSpec]) -> dict[str, str]:
    """{variant name: base name}: the catalog lists each base followed by its instruct / chat variants,
    so a variant is an entry whose memory numbers repeat those of the base just before it."""
    out: dict[str, str] = {}
    base: ModelSpec | None = None
    for spec in specs:
        if base is not None and _memory_key(spec) == _memory_key(base):
            out[spec.name] = base.name
        else:
            base = spec
    return out


def _memory_key(spec: ModelSpec) -> tuple:
    return tuple(getattr(spec, f) for f in spec.__dataclass_fields__ if f not in _NOT_MEMORY)


def models_dict(specs: list[ModelSpec]) -> list[dict]:
    """One dict of raw numbers per model."""
    variants = variant_of(catalog())
    return [{"model": s.name, "family": s.family, "hf_type": s.hf_type, "params": s.params,
             "n_layer": s.n_layer, "hidden": s.hidden, "intermediate": s.intermediate, "n_head": s.n_head,
             "n_kv_head": s.n_kv_head, "head_dim": s.head_dim, "vocab": s.vocab,
             "tied_embeddings": s.tied_embeddings, "n_experts": s.n_experts,
             "experts_per_token": s.experts_per_token, "max_position": s.max_position,
             "variant_of": variants.get(s.name), **_release_fields(s.name), "note": s.note or None,
             "source": s.source} for s in specs]


def _release_fields(name: str) -> dict:
    release = release_of(name)
    if release is None:
        return {"released": None, "gated": None, "licence": None, "licence_confidence": None}
    return {"released": release.year, "gated": release.gated, "licence": release.licence,
            "licence_confidence": release.confidence}


def _terms(name: str) -> str:
    """The licence, and whether the Hub gates the download: what a user must accept before fine-tuning."""
    release = release_of(name)
    if release is None:
        return "-"
    return release.licence + (", gated" if release.gated else "")


def models_table(specs: list[ModelSpec]) -> str:
    """The catalog as a text table."""
    headers = ["Model", "Family", "Params", "Layers", "Hidden", "Heads/KV", "Vocab", "Tied", "MoE", "Year", "Licence"]
    rows = [[s.name, s.family, billions(s.params), str(s.n_layer), str(s.hidden), f"{s.n_head}/{s.n_kv_head}",
             str(s.vocab), "yes" if s.tied_embeddings else "no",
             f"{s.n_experts}/{s.experts_per_token}" if s.is_moe else "-", _year(s.name), _terms(s.name)]
            for s in specs]
    table = text_table(headers, rows, right={"Params", "Layers", "Hidden", "Heads/KV", "Vocab", "Year"})
    return (f"{table}\n{len(specs)} models. Params: billions. MoE: experts / experts per token. Year: released. "
            "Licence: the Hub's tag; gated: the Hub asks for an access request first.")


def _year(name: str) -> str:
    release = release_of(name)
    return str(release.year) if release else "-"


def billions(params: int) -> str:
    value = params / 1e9
    return f"{value:.2f} B" if value < 10 else f"{value:.1f} B"
