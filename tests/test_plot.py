"""`estimate --plot` and `plan --plot`: a PNG, an SVG or a self-contained HTML page of the same answer the
JSON gives, written all at once (an existing picture replaced, a half-written one never left), and a wrong
file name refused in one sentence before any work."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from cli_checks import run_main

pytest.importorskip("matplotlib")

MODEL = "meta-llama/Llama-3.1-8B"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def estimate_plot(monkeypatch, capsys, path: Path, *options: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "estimate", MODEL, "--gpu", "RTX 4090", "--plot", str(path), *options)


def embedded_data(page: str) -> dict:
    """The JSON an HTML picture carries beside its SVG."""
    block = re.search(r'<script type="application/json" id="fitplan-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_png_of_the_step(tmp_path, monkeypatch, capsys):
    path = tmp_path / "step.png"
    code, out, err = estimate_plot(monkeypatch, capsys, path, "--method", "qlora", "--grad-ckpt")
    assert code == 0 and f"wrote {path}" in err and "allocated peak" in out
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 20_000


def test_svg_names_phases_components_and_lines(tmp_path, monkeypatch, capsys):
    path = tmp_path / "step.svg"
    assert estimate_plot(monkeypatch, capsys, path, "--method", "lora", "--grad-ckpt")[0] == 0
    text = path.read_text()
    ElementTree.fromstring(text.encode())   # well-formed
    for words in ("forward", "backward", "optimizer", "activations", "LoRA adapters", "usable", "CUDA context",
                  "peak", "GiB per GPU", "recomputed"):
        assert words in text, words


def test_html_is_self_contained_and_carries_the_json(tmp_path, monkeypatch, capsys):
    path = tmp_path / "step.html"
    code, out, _ = estimate_plot(monkeypatch, capsys, path, "--method", "qlora", "--json")
    page = path.read_text()
    assert code == 0 and "<svg" in page and not re.search(r"(src|href)=\"?https?:", page)
    data = embedded_data(page)
    assert {k: v for k, v in data.items() if k != "timeline"} == json.loads(out)
    assert data["timeline"]["peak"]["allocated_bytes"] == data["per_gpu"]["allocated_peak_bytes"]


def test_an_existing_picture_is_replaced(tmp_path, monkeypatch, capsys):
    path = tmp_path / "step.svg"
    path.write_text("old picture")
    assert estimate_plot(monkeypatch, capsys, path)[0] == 0
    assert path.read_text().startswith("<?xml")


def test_a_failed_drawing_leaves_the_old_picture_and_no_partial_file(tmp_path, monkeypatch, capsys):
    import common.files

    path = tmp_path / "step.png"
    path.write_bytes(b"old picture")

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(common.files.os, "replace", broken)
    code, _, err = estimate_plot(monkeypatch, capsys, path)
    assert code == 2 and err.count("\n") == 1 and "disk full" in err
    assert path.read_bytes() == b"old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.png"]


@pytest.mark.parametrize("name, says", [("step.jpg", "takes a file ending in .png, .svg or .html"),
                                        ("folder.png/", "is a directory")])
def test_a_wrong_name_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys, name, says):
    path = tmp_path / name
    if name.endswith("/"):
        path.mkdir()
    code, out, err = estimate_plot(monkeypatch, capsys, path, "--json")
    assert code == 2 and says in err and err.count("\n") == 1 and json.loads(out) == {"error": err[7:].strip()}


def test_plans_side_by_side(tmp_path, monkeypatch, capsys):
    path = tmp_path / "plans.svg"
    code, out, err = run_main(monkeypatch, capsys, "plan", "meta-llama/Llama-2-70b-hf", "--gpu", "h100x8",
                              "--plot", str(path), "--json")
    data = json.loads(out)
    text = path.read_text()
    assert code == 0 and len(data["plans"]) > 2 and f"wrote {path}" in err
    for words in ("tokens/s", "usable", "card", "allocator reserve", "recommended", "GiB per GPU"):
        assert words in text, words
    assert data["usable_bytes"] == int(data["hardware"]["gpus"][0]["memory_bytes"] * 0.9)


def test_nothing_fits_is_drawn_too(tmp_path, monkeypatch, capsys):
    path = tmp_path / "plans.html"
    code, _, _ = run_main(monkeypatch, capsys, "plan", "meta-llama/Llama-3.1-405B", "--gpu", "RTX 4090",
                          "--plot", str(path))
    page = path.read_text()
    assert code == 1 and "Nothing fits" in page and embedded_data(page)["recommended"] is None


def test_measured_phases_are_drawn_over_the_prediction(tmp_path):
    from cli.commands.estimate import draw_timeline
    from planner.api import evaluate
    from planner.config import TrainConfig
    from planner.hardware import hardware_from_catalog
    from planner.serialize import estimate_dict

    evaluation = evaluate(MODEL, TrainConfig(seq_len=512), hardware_from_catalog("RTX 4090"))
    traced = {**estimate_dict(evaluation), "source": "trace"}
    path = tmp_path / "traced.html"
    draw_timeline(str(path), evaluation, traced)
    page = path.read_text()
    assert "measured phase peak" in page
    assert embedded_data(page)["trace"]["phases"] == traced["per_gpu"]["phases"]


def test_a_trace_draws_its_measurement(tmp_path, monkeypatch, capsys):
    """A real trace of a tiny model: its phase peaks land on the picture of the prediction."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from profiles.hf_config import hf_config_dict
    from profiles.models import from_name

    spec = from_name(MODEL, n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)
    config = tmp_path / "tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(hf_config_dict(spec)))
    path = tmp_path / "traced.html"
    code, out, err = run_main(monkeypatch, capsys, "estimate", str(config), "--seq-len", "64", "--gpu", "RTX 4090",
                              "--trace", "--plot", str(path), "--json")
    assert code == 0, err
    assert embedded_data(path.read_text())["trace"]["phases"] == json.loads(out)["per_gpu"]["phases"]
