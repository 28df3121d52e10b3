"""Each class of bad input found by trying fitplan as a hostile user: one sentence, exit 2, {"error"} with
--json, no traceback, no partial file and no hang."""
from __future__ import annotations

import json
import os
import re

import pytest

from profiles.hf_config import hf_config_dict
from profiles.models import from_name
from test_fuzz_cli import run

LLAMA = hf_config_dict(from_name("Llama-3.2-1B", n_layer=2))


def refused(*argv: str, says: str) -> None:
    code, out, err = run([*argv, "--json"])
    assert code == 2, (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert len(err) < 1000, err   # a pasted blob or a thousand-digit number is not echoed back whole
    assert not re.search(r"(\?\.|[^.]\.\.)$", err.rstrip()), err   # one full stop, after click's "?" none
    assert json.loads(out) == {"error": err.removeprefix("error: ").rstrip("\n")}


def config_file(tmp_path, **changes) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLAMA, **changes}))
    return str(path)


@pytest.mark.parametrize("changes, says", [
    ({"model_type": ["llama"]}, "has no model_type"),
    ({"num_hidden_layers": 4.0}, "num_hidden_layers = 4.0, which must be a whole number"),
    ({"num_key_value_heads": 0}, "num_key_value_heads = 0"),
    ({"num_hidden_layers": 10**9}, "num_hidden_layers = 1000000000"),
    ({"hidden_size": "2048"}, "hidden_size = '2048'"),
    ({"tie_word_embeddings": "yes"}, "must be true or false"),
    ({"model_type": "gemma3", "text_config": "oops"}, "text_config that is not an object"),
])
def test_wrongly_typed_config_fields(tmp_path, changes, says):
    refused("estimate", config_file(tmp_path, **changes), says=says)


@pytest.mark.parametrize("text, says", [
    ("[" * 50000 + "]" * 50000, "nests too deeply"),
    ('{"model_type": "llama", "num_hidden_layers": NaN}', "NaN is not a JSON number"),
    ('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}", "holds a value JSON cannot carry (an integer of more than 4300 digits);"),
    ("\xff\xfe", "is not UTF-8 text"),
])
def test_malformed_json_files(tmp_path, text, says):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe")
    refused("estimate", str(path), says=says)


def test_a_fifo_named_config_json_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    refused("estimate", str(tmp_path / "config.json"), says="neither a regular file nor a folder")
    refused("estimate", str(tmp_path), says="is not a regular file")


@pytest.mark.parametrize("argv, says", [
    (("estimate", "x" * 300), "Unknown model 'xxxxxxxx"),
    (("plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--margin", "nan"), "'nan' is not a number"),
    (("plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--epochs", "inf"), "'inf' is not a number"),
    (("plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--tokens", "9" * 2000), "--tokens"),
    (("plan", "Llama-3.2-1B", "--gpu", "RTX 4090", "--gpus", "9" * 2000), "--gpus"),
    (("estimate", "Llama-3.2-1B", "--seq-len", "1e45"), "--seq-len"),
    (("estimate", "Llama-3.2-1B", "--seq-len", "99999999999"), "--seq-len"),
    (("plan", "Llama-3.2-1B", "--gpu", "h100x-1"), "not a whole number"),
    (("plan", "Llama-3.2-1B", "--gpu", "h100x1.5"), "not a whole number"),
    (("plan", "Llama-3.2-1B", "--gpu", " ".join(["h100"] * 50)), "is not a GPU name"),
    (("plan", "Llama-3.2-1B", "--gpu", "h100x99999"), "give a count from 1 to 4096"),
    (("plan", "Llama-3.2-1B", "--gpu", "h100x8", "--interconnect", "x" * 3000), 'got "xxxxxxxx'),
    (("estimate", "Llama-3.2-1B", "--method", "y" * 3000), "'yyyyyyyy"),
    (("estimate", "Llama-3.2-1B", "--lora-targets", "q," + "z" * 3000), "zzzzzzzz"),
    (("config", "Llama-3.2-1B", "--gpu", "RTX 4090", "--out", ""), "'--out': an empty path"),
    (("estimate", "Llama-3.2-1B", "--plot", " "), "'--plot': an empty path"),
    (("estimate", "Llama-3.2-1B", "--from", ""), "'--from': an empty path"),
    (("launch", "--plan", "", "--dry-run"), "'--plan': an empty path"),
    (("launch", "Llama-3.2-1B", "--data", "", "--dry-run"), "'--data': an empty path"),
    (("calibrate", ""), "an empty path"),
    (("estimate", "Llama-3.2-1B", "--plot", "/proc/fitplan-step.png"), "choose a writable path for --plot"),
    (("fits", "--gpu", "h100x8", "--gpus", "4"), "Did you mean '--gpu'?"),
])
def test_hostile_options(argv, says):
    refused(*argv, says=says)


@pytest.mark.parametrize("out, says", [("/proc/fitplan-run", "Cannot write"), ("/dev/null", "Cannot write"),
                                       ("{file}", "is a file")])
def test_out_where_nothing_can_be_written(tmp_path, out, says):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    target = str(blocker) if out == "{file}" else out
    refused("config", "Llama-3.2-1B", "--gpu", "RTX 4090", "--out", target, says=says)
    assert blocker.read_text() == "mine"


def test_files_of_one_command_appear_together_or_not_at_all(tmp_path):
    (tmp_path / "accelerate_config.yaml").mkdir()
    refused("config", "Llama-3.2-1B", "--gpu", "RTX 4090", "--out", str(tmp_path),
            says="is not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accelerate_config.yaml"]


@pytest.mark.parametrize("text, says", [("\x00\x01binary", "is not UTF-8 text"),
                                        ('{"version": 1, "config": []}', "lacks fitplan_version"),
                                        ("[]", "not a JSON object"), ("{}", "has no plan version")])
def test_a_binary_or_wrongly_shaped_plan(tmp_path, text, says):
    path = tmp_path / "plan.json"
    path.write_bytes(text.encode("latin1"))
    if says == "is not UTF-8 text":
        path.write_bytes(b"\xff\x00binary")
    refused("launch", "--plan", str(path), "--dry-run", says=says)


def test_calibrate_refuses_absurd_reports_and_unwritable_profiles(tmp_path, monkeypatch):
    from test_calibrate import run_report
    report = run_report()
    report["measured"]["per_rank"][0]["nvml_used_bytes"] = 8 * 10**22 * 2**30
    path = tmp_path / "run_report.json"
    path.write_text(json.dumps(report))
    refused("calibrate", str(path), says="not a number of bytes a GPU can hold")
    bad_rank = run_report()
    bad_rank["measured"]["per_rank"][0]["rank"] = "first"
    path.write_text(json.dumps(bad_rank))
    refused("calibrate", str(path), says="rank is 'first', not a rank number")
    monkeypatch.setenv("FITPLAN_CALIBRATION", "/proc/fitplan/calibration.json")
    path.write_text(json.dumps(run_report()))
    refused("calibrate", str(path), says="Cannot write")


@pytest.mark.parametrize("text, says", [
    ("base_model: meta-llama/Llama-3.2-1B\nmicro_batch_size: " + "9" * 5000 + "\n", "holds a value YAML cannot read"),
    ("base_model: meta-llama/Llama-3.2-1B\nwarmup: 2001-02-30\n", "holds a value YAML cannot read"),
    ("a: " + "[" * 100000 + "]" * 100000 + "\n", "nests too deeply"),
    ("base_model: meta-llama/Llama-3.2-1B\nmicro_batch_size: .nan\n", "must be a whole number"),
    ("base_model: x\nbf16: !!python/object:os.system ls\n", "is not valid YAML"),
])
def test_malformed_training_configs(tmp_path, text, says):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    refused("estimate", "--from", str(path), says=says)
