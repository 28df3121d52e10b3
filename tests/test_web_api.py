"""The page's JSON API (docs/web.md) against a running `fitplan serve`: the same JSON the commands print with
--json, the same one-sentence errors, and no request, however malformed, that breaks the server."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from cli_checks import run_main
from web_checks import assert_sentence, get, post, request

pytest.importorskip("starlette")

MODEL, CARD = "meta-llama/Llama-3.1-8B", "RTX 4090"
OPTIONS = {"method": "qlora", "seq_len": 1024, "micro_batch": 2, "grad_ckpt": True}
FLAGS = ["--method", "qlora", "--seq-len", "1024", "--micro-batch", "2", "--grad-ckpt"]


def cli_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err = run_main(monkeypatch, capsys, *args, "--json")
    assert code in (0, 1), err
    return json.loads(out)


def cli_sentence(monkeypatch, capsys, *args: str) -> str:
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: "), err
    return err.removeprefix("error: ").strip()


# --- the same JSON as the command line ------------------------------------------------------------------------

def test_estimate_is_the_cli_json(page_server, monkeypatch, capsys):
    status, data = post(page_server, "estimate", {"model": MODEL, "gpu": CARD, **OPTIONS})
    assert status == 200
    assert data == cli_json(monkeypatch, capsys, "estimate", MODEL, "--gpu", CARD, *FLAGS)


def test_plan_is_the_cli_json(page_server, monkeypatch, capsys):
    status, data = post(page_server, "plan", {"model": MODEL, "gpu": "h100x8", "tokens": "20M"})
    assert status == 200 and data["recommended"] is not None
    assert data == cli_json(monkeypatch, capsys, "plan", MODEL, "--gpu", "h100x8", "--tokens", "20M")


def test_every_option_of_the_commands_is_a_parameter():
    """What the command line can ask, the API can ask: every training option of estimate, plan and config, named
    as in the JSON; only the command line's own business (files, pictures, output, the trace) stays out."""
    from web.api import COMMAND_OF, PARAMETERS, click_command
    command_line_only = {"as_json", "trace", "plot", "from_files", "out_dir", "main_process_ip",
                         "main_process_port", "machine_rank", "model_path", "help"}
    for endpoint, name in COMMAND_OF.items():
        named = {"no_double_quant": "double_quant"}           # --no-double-quant is double_quant: false
        options = {named.get(p.name, p.name) for p in click_command(name).params if p.name != "model"}
        options -= command_line_only
        assert options <= set(PARAMETERS[endpoint]), (endpoint, sorted(options - set(PARAMETERS[endpoint])))


def test_links_loss_and_loop_are_the_cli_json(page_server, monkeypatch, capsys):
    asked = {"model": MODEL, "gpu": "a100-80gbx8", "method": "full", "sharding": "fsdp", "tokens": "100M"}
    flags = ["plan", MODEL, "--gpu", "a100-80gbx8", "--method", "full", "--sharding", "fsdp", "--tokens", "100M"]
    nvlink = post(page_server, "plan", asked)[1]
    status, pcie = post(page_server, "plan", {**asked, "interconnect": "pcie"})
    assert status == 200 and pcie == cli_json(monkeypatch, capsys, *flags, "--interconnect", "pcie")
    assert pcie["plans"][pcie["recommended"]]["tokens_per_s"] < nvlink["plans"][nvlink["recommended"]]["tokens_per_s"]
    said = assert_sentence(*post(page_server, "plan", {**asked, "interconnect": "carrier pigeon"}))
    assert said == cli_sentence(monkeypatch, capsys, *flags, "--interconnect", "carrier pigeon")
    memory = {"loss": "liger", "loop": "plain", "activation_offload": "checkpoints", "grad_ckpt": True}
    status, data = post(page_server, "estimate", {"model": MODEL, "gpu": CARD, **OPTIONS, **memory})
    assert status == 200 and data == cli_json(monkeypatch, capsys, "estimate", MODEL, "--gpu", CARD, *FLAGS,
                                              "--loss", "liger", "--loop", "plain", "--activation-offload",
                                              "checkpoints")


def test_nothing_fits_is_an_answer_not_an_error(page_server, monkeypatch, capsys):
    status, data = post(page_server, "plan", {"model": "meta-llama/Llama-3.1-405B", "gpu": CARD})
    assert status == 200 and data["recommended"] is None and data["nothing_fits"]["suggestions"]
    assert data == cli_json(monkeypatch, capsys, "plan", "meta-llama/Llama-3.1-405B", "--gpu", CARD)


def test_get_with_a_query_string_is_post_with_json(page_server):
    query = {"model": MODEL, "gpu": CARD, "method": "qlora", "seq_len": "1024", "micro_batch": "2", "grad_ckpt": "on"}
    assert get(page_server, "estimate", query) == post(page_server, "estimate", {"model": MODEL, "gpu": CARD, **OPTIONS})


def test_models_and_gpus_are_the_cli_json(page_server, monkeypatch, capsys):
    assert get(page_server, "models") == (200, cli_json(monkeypatch, capsys, "models"))
    assert get(page_server, "models", {"family": "qwen3"}) == (200, cli_json(monkeypatch, capsys, "models",
                                                                              "--family", "qwen3"))
    status, found = get(page_server, "models", {"q": "llama 3.1 8b"})
    assert status == 200 and MODEL in [m["model"] for m in found] and len(found) < 5
    assert get(page_server, "gpus", {"catalog": "true"}) == (200, cli_json(monkeypatch, capsys, "gpus", "--catalog"))
    assert get(page_server, "gpus") == (200, cli_json(monkeypatch, capsys, "gpus"))


def test_timeline_is_the_estimate_moment_by_moment(page_server):
    _, estimate = post(page_server, "estimate", {"model": MODEL, "gpu": CARD, **OPTIONS})
    status, data = post(page_server, "timeline", {"model": MODEL, "gpu": CARD, **OPTIONS})
    assert status == 200 and {k: v for k, v in data.items() if k != "timeline"} == estimate
    peak = data["timeline"]["peak"]
    assert peak["allocated_bytes"] == max(p["allocated_bytes"] for p in data["timeline"]["points"])
    assert peak["allocated_bytes"] == estimate["per_gpu"]["allocated_peak_bytes"]
    assert peak["phase"] == estimate["per_gpu"]["peak_phase"]


def test_a_dropped_config_is_planned_like_its_file(page_server, monkeypatch, capsys, tmp_path):
    from profiles.hf_config import hf_config_dict
    from profiles.models import from_name
    config = hf_config_dict(from_name("Qwen/Qwen2.5-7B"))
    path = tmp_path / "Qwen2.5-7B" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    cli = cli_json(monkeypatch, capsys, "estimate", str(path), "--gpu", CARD)
    for sent in (config, json.dumps(config)):   # the object, or the file's text as the page reads it
        status, data = post(page_server, "estimate", {"config": sent, "config_name": "config.json", "gpu": CARD})
        assert status == 200 and data["per_gpu"] == cli["per_gpu"] and data["params_total"] == cli["params_total"]


# --- the configs: what `fitplan config` writes, as text ----------------------------------------------------------

def test_configs_are_the_files_config_writes(page_server, monkeypatch, capsys, tmp_path, deepspeed_world):
    from accelerate.commands.config.config_args import ClusterConfig
    from deepspeed.runtime.config import DeepSpeedConfig
    capsys.readouterr()   # what importing deepspeed printed
    asked = {"model": MODEL, "gpu": "h100x8", "method": "full", "sharding": "zero3", "grad_ckpt": True}
    status, data = post(page_server, "configs", asked)
    assert status == 200 and set(data["files"]) == {"plan.json", "accelerate_config.yaml", "deepspeed.json"}
    code, out, _ = run_main(monkeypatch, capsys, "config", MODEL, "--gpu", "h100x8", "--method", "full", "--sharding",
                            "zero3", "--grad-ckpt", "--out", str(tmp_path / "run"), "--json")
    written = json.loads(out)["plan"]
    assert code == 0 and {**data["plan"], "created": None} == {**written, "created": None}
    (tmp_path / "accelerate_config.yaml").write_text(data["files"]["accelerate_config.yaml"])
    assert ClusterConfig.from_yaml_file(tmp_path / "accelerate_config.yaml").distributed_type.value == "DEEPSPEED"
    deepspeed_world(8)
    assert DeepSpeedConfig(json.loads(data["files"]["deepspeed.json"])).zero_optimization_stage == 3
    assert data["launch"] == f"fitplan launch --plan {data['run_dir']}/plan.json"


def test_one_config_file_downloads(page_server):
    status, headers, body = request(page_server, "/api/configs?model=Llama-3.1-8B&gpu=RTX+4090&download=plan.json")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="plan.json"'
    assert json.loads(body)["model"] == MODEL
    status, _, body = request(page_server, "/api/configs?model=Llama-3.1-8B&gpu=RTX+4090&download=x.txt")
    assert_sentence(status, json.loads(body), "download names one of the files")


# --- the same sentences as the command line ---------------------------------------------------------------------

SAME_AS_CLI = [  # (API parameters, the same options on the command line, the endpoints that refuse them)
    ({"seq_len": 0}, ["--seq-len", "0"], ("estimate", "plan")),
    ({"seq_len": "abc"}, ["--seq-len", "abc"], ("estimate", "plan")),
    ({"method": "bogus"}, ["--method", "bogus"], ("estimate", "plan")),
    ({"margin": 2}, ["--margin", "2"], ("estimate", "plan")),
    ({"gpu": "RTX 9999"}, ["--gpu", "RTX 9999"], ("estimate", "plan")),
    ({"gpu": "h100x8", "gpus": 4}, ["--gpu", "h100x8", "--gpus", "4"], ("estimate", "plan")),
    ({"lora_r": 100000}, ["--lora-r", "100000"], ("estimate",)),
    ({"method": "qlora", "sharding": "zero3", "gpus": 2}, ["--method", "qlora", "--sharding", "zero3", "--gpus", "2"],
     ("estimate",)),   # plan answers it: nothing fits, and why
]


@pytest.mark.parametrize("endpoint, params, flags", [(e, p, f) for p, f, endpoints in SAME_AS_CLI for e in endpoints],
                         ids=lambda x: str(x)[:40])
def test_bad_input_is_the_cli_sentence(page_server, monkeypatch, capsys, endpoint, params, flags):
    status, data = post(page_server, endpoint, {"model": MODEL, "gpu": CARD, **params})
    said = assert_sentence(status, data)
    flags = flags if "--gpu" in flags else ["--gpu", CARD, *flags]
    assert said == cli_sentence(monkeypatch, capsys, endpoint, MODEL, *flags)


@pytest.mark.parametrize("payload, says", [
    ({}, "Name a model"),
    ({"model": "Lama-3.1-8B"}, "closest catalog names: meta-llama/Llama-3.1-8B"),
    ({"model": "/etc/passwd"}, "Unknown model"),      # never a path: the server reads no file for a request
    ({"model": MODEL, "config": {"model_type": "llama"}}, "not both"),
    ({"config": {"model_type": "llama"}}, "lacks"),
    ({"config": "\u0000\u0001\u00ff binary"}, "The config.json is not valid JSON"),
    ({"config": [1, 2]}, "holds a JSON list"),
    ({"model": MODEL, "surprise": 1}, "takes no parameter 'surprise'"),
    ({"model": MODEL, "seq_len": [1, 2]}, "--seq-len takes one value"),
    ({"model": MODEL, "grad_ckpt": "maybe"}, "--grad-ckpt is true or false"),
    ({"model": MODEL, "seq_len": 10**400}, "is not in the range"),
    ({"model": MODEL, "method": "auto"}, "estimate takes one configuration"),
])
def test_bad_input_is_one_sentence(page_server, payload, says):
    assert_sentence(*post(page_server, "estimate", {"gpu": CARD, **payload} if payload else {}), says)


@pytest.mark.parametrize("body, says", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8"),
    (b'{"model": "x", "seq_len": NaN}', "NaN is not a JSON number"),
    (b'{"model": "x", "seq_len": 1' + b"0" * 5000 + b"}", "holds a value JSON cannot carry (an integer of more than 4300 digits);"),
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b'["Llama-3.1-8B"]', "holds a JSON list"),
    (b"{not json", "is not valid JSON"),
    (b"{}" + b" " * (5 * 2**20), "over 4 MiB"),
])
def test_malformed_bodies_are_one_sentence(page_server, body, says):
    status, _, answer = request(page_server, "/api/plan", body, {"Content-Type": "application/json"})
    assert_sentence(status, json.loads(answer), says)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False)
                           | st.text(max_size=30), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
KEYS = st.sampled_from(["model", "config", "gpu", "method", "precision", "seq_len", "micro_batch", "grad_ckpt", "loss",
                        "loop", "activation_offload", "grad_accum", "interconnect",
                        "gpus", "sharding", "margin", "lora_targets", "tokens", "force", "double_quant"]) | st.text(max_size=8)


@given(endpoint=st.sampled_from(["estimate", "plan", "timeline", "configs", "models", "gpus"]),
       payload=st.dictionaries(KEYS, JSON_VALUES, max_size=5), with_model=st.booleans())
def test_no_payload_breaks_the_server(page_server, endpoint, payload, with_model):
    if with_model and endpoint not in ("models", "gpus"):
        payload = {"model": MODEL, "gpu": CARD, **payload}
    status, data = post(page_server, endpoint, payload)
    assert status in (200, 400), (status, data)
    if status == 400:
        assert_sentence(status, data)


def test_the_server_still_answers_and_refuses_strangers(page_server):
    assert get(page_server, "models", {"q": "gpt2"})[0] == 200
    status, _, body = request(page_server, "/api/models", headers={"Host": "attacker.example"})
    assert status == 400 and b"Invalid host header" in body
    status, _, body = request(page_server, "/api/plan", method="DELETE")
    assert status == 405 and json.loads(body) == {"error": "/api/plan takes GET or POST, not DELETE."}
    status, _, body = request(page_server, "/api/nothing")
    assert status == 404 and "There is no /api/nothing" in json.loads(body)["error"]


def test_the_page_loads_nothing_from_elsewhere(page_server):
    status, headers, page = request(page_server, "/")
    assert status == 200 and b"/static/app.js" in page
    assert "script-src 'self'" in headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/chart.umd.min.js"):
        assert request(page_server, path)[0] == 200, path
    for text in (page, request(page_server, "/static/app.js")[2], request(page_server, "/static/style.css")[2]):
        assert b"http://" not in text and b"https://" not in text   # nothing fetched from elsewhere
    status, _, form = request(page_server, "/form.json")
    assert status == 200 and "zero3" in json.loads(form)["sharding"]["choices"]


def real_config() -> dict:
    from profiles.hf_config import hf_config_dict
    from profiles.models import from_name
    return hf_config_dict(from_name("meta-llama/Llama-3.2-1B"))


@given(changes=st.dictionaries(st.sampled_from(sorted(real_config())), JSON_VALUES, min_size=1, max_size=3),
       endpoint=st.sampled_from(["estimate", "plan", "timeline", "configs"]))
def test_no_dropped_config_breaks_the_server(page_server, changes, endpoint):
    status, data = post(page_server, endpoint, {"config": {**real_config(), **changes}, "gpu": CARD})
    assert status in (200, 400), (status, data)
    if status == 400:
        assert_sentence(status, data)


PLAN_FIELDS = ["method", "precision", "optimizer", "micro_batch", "seq_len", "grad_ckpt", "attn", "sharding", "offload",
               "gpus", "nodes", "lora_r", "lora_alpha", "lora_targets"]   # what the page sends back (app.js)


@pytest.mark.parametrize("asked", [{"gpu": CARD}, {"gpu": CARD, "seq_len": 4096}, {"gpu": "h100x8", "method": "full"},
                                   {"gpu": "a100-80gb", "prefer": "speed", "global_batch": 64}])
def test_the_page_shows_the_timeline_and_files_of_the_recommended_plan_itself(page_server, asked):
    """The page asks for the recommended plan's timeline and files by sending its configuration back, fixed."""
    _, plan = post(page_server, "plan", {"model": MODEL, **asked})
    chosen = plan["plans"][plan["recommended"]]
    fixed = {"model": MODEL, "gpu": asked["gpu"], **{k: chosen[k] for k in PLAN_FIELDS if k in chosen}}
    status, timeline = post(page_server, "timeline", {**fixed, "grad_accum": chosen["grad_accum"]})
    assert status == 200 and timeline["per_gpu"] == chosen["per_gpu"]
    assert timeline["timeline"]["peak"]["allocated_bytes"] == chosen["per_gpu"]["allocated_peak_bytes"]
    status, configs = post(page_server, "configs", {**fixed, "global_batch": chosen["global_batch"]})
    written = configs["plan"]["config"]
    assert status == 200 and configs["plan"]["per_gpu"] == chosen["per_gpu"]
    assert {k: written[k] for k in ("micro_batch", "grad_accum", "global_batch")} == \
        {k: chosen[k] for k in ("micro_batch", "grad_accum", "global_batch")}


def test_every_planning_option_of_the_commands_is_a_parameter():
    """What the command line plans with, the API takes: a new option cannot be left off the page's API."""
    from web import api
    not_planning = {"as_json", "trace", "plot", "from_files", "out_dir", "main_process_ip", "main_process_port",
                    "machine_rank", "model_path", "no_double_quant", "grad_ckpt", "model"}
    for endpoint, command in api.COMMAND_OF.items():
        names = {p.name for p in api.click_command(command).params} - not_planning
        assert names <= set(api.PARAMETERS[endpoint]), (endpoint, names - set(api.PARAMETERS[endpoint]))


def test_the_newer_options_are_the_cli_json(page_server, monkeypatch, capsys):
    asked = {"loss": "liger", "loop": "plain", "activation_offload": "checkpoints", "grad_accum": 2}
    status, data = post(page_server, "estimate", {"model": MODEL, "gpu": CARD, **OPTIONS, **asked})
    assert status == 200 and data["config"]["loss"] == "liger"
    assert data == cli_json(monkeypatch, capsys, "estimate", MODEL, "--gpu", CARD, *FLAGS, "--loss", "liger", "--loop",
                            "plain", "--activation-offload", "checkpoints", "--grad-accum", "2")
    status, data = post(page_server, "plan", {"model": MODEL, "gpu": "h100x8", "interconnect": "pcie"})
    assert status == 200 and data == cli_json(monkeypatch, capsys, "plan", MODEL, "--gpu", "h100x8", "--interconnect", "pcie")
