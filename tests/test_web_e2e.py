"""The planning page as a person uses it, in a real headless Chromium (Debian's, driven by playwright): load
it, pick a model and a card, read the recommended plan, change the sequence length and see it update,
download the configs and load them with Accelerate and DeepSpeed, drop a config.json, and get the command
line's sentence for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from web.browser import browser, chromium_path, choose, wait_until_planned
from web_checks import post

if chromium_path() is None:
    pytest.skip("chromium is not installed (apt-get install chromium): the page's end-to-end tests need a browser",
                allow_module_level=True)
pytest.importorskip("playwright", reason="playwright drives the browser: pip install 'fitplan[test]'")

MODEL, CARD = "meta-llama/Llama-3.1-8B", "RTX 4090"
EXPECTED_CONSOLE = "Failed to load resource: the server responded with a status of 400"   # bad input, on purpose


@pytest.fixture(scope="module")
def context():
    with browser() as chromium:
        yield chromium


@pytest.fixture
def page(context, page_server):
    """The page, loaded; no script error may happen while a test uses it."""
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and EXPECTED_CONSOLE not in m.text else None)
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(page_server)
    wait_until_planned(page)
    yield page
    page.close()
    assert not problems


def gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


def recommended(page_server: str, **params) -> dict:
    _, plan = post(page_server, "plan", {"model": MODEL, "gpu": CARD, "seq_len": 2048, "method": "auto",
                                         "margin": 0.1, "prefer": "balanced", **params})
    return plan["plans"][plan["recommended"]]


def test_pick_a_model_and_a_card_and_read_the_recommended_plan(page, page_server):
    choose(page, MODEL, CARD)
    chosen = recommended(page_server)
    summary = page.inner_text("#recommended-summary")
    assert chosen["method"] in summary and gib(chosen["per_gpu"]["total_bytes"]) in summary
    assert page.locator("#plans tbody tr").count() == len(post(page_server, "plan", {"model": MODEL, "gpu": CARD})[1]["plans"])
    assert page.locator("#timeline").is_visible() and "layer by layer" in page.inner_text("#timeline-caption")
    assert page.inner_text("#status").startswith(f"Planned {MODEL} on 1 x {CARD}")


def test_change_the_sequence_length_and_see_the_plan_update(page, page_server):
    choose(page, MODEL, CARD)
    before = page.inner_text("#recommended-summary")
    page.fill("#f-seq_len", "512")
    wait_until_planned(page)
    after = page.inner_text("#recommended-summary")
    chosen = recommended(page_server, seq_len=512)
    assert after != before and "512 tokens" in after and gib(chosen["per_gpu"]["total_bytes"]) in after
    assert "512" in page.inner_text("#plans tbody tr.recommended")


def test_batching_and_liger_kernels_are_offered_and_plan_as_the_api(page, page_server):
    """The page's batching and Liger switches reach the search: its answer is the API's for the same options."""
    choose(page, MODEL, CARD)
    page.select_option("#f-batching", "padded")
    page.select_option("#f-liger_kernels", "true")
    page.fill("#f-seq_len", "4096")   # a change the page sees last, so the answer below is for all three
    wait_until_planned(page)
    chosen = recommended(page_server, seq_len=4096, batching="padded", liger_kernels=True)
    assert gib(chosen["per_gpu"]["total_bytes"]) in page.inner_text("#recommended-summary")


def test_the_links_between_gpus_change_the_speed(page, page_server):
    choose(page, MODEL, "A100 80GB")
    page.fill("#f-gpus", "8")
    page.select_option("#f-method", "full")
    page.select_option("#f-sharding", "fsdp")
    wait_until_planned(page)
    asked = {"gpus": 8, "method": "full", "sharding": "fsdp"}
    for links in ("nvlink", "pcie"):
        page.fill("#f-interconnect", links)
        wait_until_planned(page)
        _, plan = post(page_server, "plan", {"model": MODEL, "gpu": "A100 80GB", "seq_len": 2048, "margin": 0.1,
                                             "prefer": "balanced", "interconnect": links, **asked})
        chosen = plan["plans"][plan["recommended"]]
        assert f"{round(chosen['tokens_per_s']):,} tokens/s" in page.inner_text("#recommended-summary"), links
    page.select_option("#f-loss", "liger")
    wait_until_planned(page)
    assert not page.locator("#error").is_visible() and page.locator("#recommended").is_visible()


def test_search_the_catalog_as_you_type(page):
    page.fill("#model", "qwen2.5 7b")
    options = page.locator("#model-list li")
    assert "Qwen/Qwen2.5-7B" in options.all_inner_texts()[0]
    page.press("#model", "ArrowDown")
    page.press("#model", "Enter")
    wait_until_planned(page)
    assert page.input_value("#model") == "Qwen/Qwen2.5-7B"
    assert page.inner_text("#status").startswith("Planned Qwen/Qwen2.5-7B")


def test_download_the_configs_and_load_them(page, tmp_path, capsys, deepspeed_world):
    from accelerate.commands.config.config_args import load_config_from_file
    from deepspeed.runtime.config import DeepSpeedConfig
    from launch import planfile

    choose(page, MODEL, "H100 SXM")
    page.fill("#f-gpus", "8")
    page.select_option("#f-sharding", "zero3")
    wait_until_planned(page)
    saved = {}
    for name in ("plan.json", "accelerate_config.yaml", "deepspeed.json"):
        with page.expect_download() as download:
            page.click(f'#downloads button[data-file="{name}"]')
        saved[name] = tmp_path / name
        download.value.save_as(saved[name])
    plan = planfile.read_plan(saved["plan.json"])
    assert plan["model"] == MODEL and plan["config"]["sharding"] == "zero3" and plan["config"]["gpus"] == 8
    accelerate = load_config_from_file(str(saved["accelerate_config.yaml"]))
    assert accelerate.distributed_type.value == "DEEPSPEED" and accelerate.num_processes == 8
    deepspeed_world(8)
    ds = DeepSpeedConfig(json.loads(saved["deepspeed.json"].read_text()))
    assert ds.zero_optimization_stage == 3 and ds.train_micro_batch_size_per_gpu == plan["config"]["micro_batch"]
    assert "fitplan launch --plan runs/Llama-3.1-8B/plan.json" in page.inner_text("#launch")


def test_bad_input_shows_the_command_lines_sentence(page, monkeypatch, capsys):
    from cli_checks import run_main

    choose(page, MODEL, CARD)
    page.fill("#f-seq_len", "0")
    wait_until_planned(page)
    code, _, err = run_main(monkeypatch, capsys, "plan", MODEL, "--gpu", CARD, "--seq-len", "0")
    assert page.locator("#error").is_visible()
    assert page.inner_text("#error") == err.removeprefix("error: ").strip()
    assert not page.locator("#recommended").is_visible()
    page.fill("#f-seq_len", "1024")
    wait_until_planned(page)
    assert not page.locator("#error").is_visible() and page.locator("#recommended").is_visible()


def test_drop_a_config_json(page, tmp_path):
    from profiles.hf_config import hf_config_dict
    from profiles.models import from_name

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**hf_config_dict(from_name("Qwen/Qwen2.5-1.5B")), "_name_or_path": "my-org/my-model"}))
    page.select_option("#gpu", CARD)
    page.set_input_files("#config-file", str(config))
    wait_until_planned(page)
    assert page.inner_text("#status").startswith("Planned my-org/my-model")
    assert page.locator("#recommended").is_visible()
    binary = tmp_path / "weights.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    page.set_input_files("#config-file", str(binary))
    # the page was already "ready": wait for the sentence itself, not the state the last answer left
    page.locator("#error", has_text="The config.json is not valid JSON").wait_for(timeout=30_000)
    assert page.inner_text("#error").startswith("The config.json is not valid JSON")


def test_nothing_fits_says_what_would(page):
    choose(page, "meta-llama/Llama-3.1-405B", CARD)
    assert page.locator("#nothing").is_visible() and page.locator("#suggestions li").count() >= 1
    assert "usable" in page.inner_text("#nothing-summary")
    assert not page.locator("#timeline-box").is_visible()


def test_a_screenshot_of_the_page(page, tmp_path):
    choose(page, MODEL, CARD)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert Path(tmp_path / "page.png").read_bytes().startswith(b"\x89PNG")
