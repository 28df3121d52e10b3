"""`fitplan calibrate`: run reports of real GPU runs -> the user profile -> plans for that card use it;
malformed or mismatched reports are refused and leave the profile byte-identical."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from measure import calibrate as calib
from planner.calibration import SHIPPED, load_profile, overhead_for
from cli.commands.calibrate import show_text
from cli.commands.env import env_lines
from cli.main import cli
from planner.calibration import allocator_reserve_fraction, cuda_context_bytes
from cli_checks import run_main

GiB, MiB = 2**30, 2**20
RTX4090 = "NVIDIA GeForce RTX 4090"
VERSIONS = {"torch": "2.5.1+cu124", "transformers": "4.46.3", "peft": "0.13.2", "bitsandbytes": "0.44.1",
            "accelerate": "1.1.1", "deepspeed": None, "fitplan": "0.1.0"}


def run_report(gpu: str = RTX4090, context: int = 700 * MiB, fraction: float = 0.125, allocated: int = 8 * GiB,
               ranks: int = 1, date: str = "2026-11-20T10:00:00+00:00", **changes) -> dict:
    """A run_report.json as launch/recipe.py's write_report writes it, for a run on `gpu` whose allocator
    reserved `fraction` over the allocated peak and whose CUDA context (NVML used - reserved) is `context`."""
    reserved = int(allocated * (1 + fraction))
    per_rank = [{"device": "cuda", "gpu": gpu, "rss_peak_bytes": 3 * GiB, "allocated_peak_bytes": allocated,
                 "reserved_peak_bytes": reserved, "nvml_used_bytes": reserved + context, "rank": r}
                for r in range(ranks)]
    report = {
        "status": "ok", "plan": "/runs/a/plan.json", "model": "meta-llama/Llama-2-7b-hf",
        "config": {"method": "lora", "micro_batch": 4, "seq_len": 2048},
        "predicted": {"per_gpu": {"allocated_peak_bytes": allocated, "total_bytes": reserved + 500 * MiB}},
        "measured": {"after_steps": 3, "device": "cuda", "per_rank": per_rank, "allocated_peak_bytes": allocated,
                     "reserved_peak_bytes": reserved, "nvml_used_bytes": reserved + context,
                     "rss_peak_bytes": 3 * GiB},
        "steps": 10, "tokens": 81920, "tokens_per_s": 4000.0, "seconds": 20.5, "losses": [2.0, 1.9],
        "final_loss": 1.9, "oom_step": None, "phase": "training", "error": None, "saved": "/runs/a/adapter",
        "versions": dict(VERSIONS), "date": date, "param_bytes_by_dtype": {"bfloat16": 13476831232},
    }
    report.update(changes)
    return report


def write_reports(folder: Path, reports: list[dict]) -> list[str]:
    paths = []
    for i, report in enumerate(reports):
        path = folder / f"run{i}" / "run_report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        paths.append(str(path))
    return paths


@pytest.fixture
def profile(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "config" / "calibration.json"
    monkeypatch.setenv("FITPLAN_CALIBRATION", str(path))
    return path


def estimate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["estimate", "meta-llama/Llama-2-7b-hf", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- calibration moves the plan by exactly what was measured ------------------------------------------------
def test_calibrated_context_and_reserve_move_the_estimate_exactly(tmp_path, profile, monkeypatch, capsys):
    context, fraction = 700 * MiB, 0.125
    before = estimate("--gpu", "RTX 4090")
    assert before["calibration"] == "shipped defaults (uncalibrated)"
    # three runs: the median context is the middle one, the reserve ratio is the same in all
    reports = [run_report(context=context - 8 * MiB, allocated=6 * GiB, date="2026-11-18T09:00:00+00:00"),
               run_report(context=context, allocated=9 * GiB, date="2026-11-20T10:00:00+00:00"),
               run_report(context=context + 30 * MiB, allocated=12 * GiB, date="2026-11-22T11:00:00+00:00")]
    code, out, err = run_main(monkeypatch, capsys, "calibrate", *write_reports(tmp_path, reports))
    assert code == 0, err
    assert "Stored in" in out and str(profile) in out

    after = estimate("--gpu", "RTX 4090")
    allocated = before["per_gpu"]["allocated_peak_bytes"]
    assert after["per_gpu"]["allocated_peak_bytes"] == allocated          # the model itself does not move
    assert after["per_gpu"]["cuda_context_bytes"] == context
    assert after["per_gpu"]["reserved_peak_bytes"] == int(allocated * (1 + fraction))
    assert (after["per_gpu"]["cuda_context_bytes"] - before["per_gpu"]["cuda_context_bytes"]
            == context - cuda_context_bytes("RTX 4090"))
    assert (after["per_gpu"]["reserved_peak_bytes"] - before["per_gpu"]["reserved_peak_bytes"]
            == int(allocated * (1 + fraction)) - int(allocated * (1 + allocator_reserve_fraction("RTX 4090"))))
    assert after["per_gpu"]["total_bytes"] == (after["per_gpu"]["reserved_peak_bytes"] + context
                                              + after["per_gpu"]["paged_bytes"])
    assert after["calibration"] == (
        "calibrated: 3 runs on NVIDIA GeForce RTX 4090, driver not recorded, torch 2.5.1+cu124, "
        "transformers 4.46.3, peft 0.13.2, bitsandbytes 0.44.1, 2026-11-18 to 2026-11-22")
    # the probed card (NVML name) finds it too; other cards keep the defaults, said plainly
    assert overhead_for(RTX4090, (8, 9)).context_bytes == context
    assert estimate("--gpu", "a100-80gb")["calibration"] == "shipped defaults (uncalibrated)"


def test_multi_process_runs_calibrate_the_nccl_buffers(tmp_path, profile, monkeypatch, capsys):
    """One-process runs give the context; runs of several processes give NCCL's buffers on top of it."""
    context, nccl = 600 * MiB, 900 * MiB
    reports = [run_report(context=context), run_report(context=context + nccl, ranks=4,
                                                       date="2026-11-21T10:00:00+00:00")]
    code, _, err = run_main(monkeypatch, capsys, "calibrate", *write_reports(tmp_path, reports))
    assert code == 0, err
    one = estimate("--gpu", "RTX 4090")["per_gpu"]
    four = estimate("--gpu", "RTX 4090", "--gpus", "4", "--sharding", "ddp")["per_gpu"]
    assert one["cuda_context_bytes"] == four["cuda_context_bytes"] == context
    assert one["communicator_bytes"] == 0 and four["communicator_bytes"] == nccl
    only_several = calib.fit(calib.read_runs([Path(p) for p in write_reports(tmp_path / "b", reports[1:])]))
    assert "communicator_bytes" not in only_several and only_several["context_bytes"] == context + nccl


def test_profile_format_and_provenance(tmp_path, profile):
    reports = [run_report(ranks=2, date="2026-11-20T10:00:00+00:00", driver_version="560.35.03")]
    result = calib.calibrate(write_reports(tmp_path, reports))
    document = json.loads(profile.read_text())
    assert document["version"] == 1
    assert set(document["gpus"]) == {"geforce rtx 4090", "rtx 4090"}
    entry = document["gpus"]["geforce rtx 4090"]
    assert entry["context_bytes"] == 700 * MiB and entry["reserve_fraction"] == 0.125
    assert entry["runs"] == 1 and entry["samples"] == 2
    assert entry["provenance"] == ("1 run on NVIDIA GeForce RTX 4090, driver 560.35.03, torch 2.5.1+cu124, "
                                   "transformers 4.46.3, peft 0.13.2, bitsandbytes 0.44.1, 2026-11-20")
    assert entry["versions"]["torch"] == ["2.5.1+cu124"]
    assert document["gpus"]["rtx 4090"] == {**entry, "alias_of": "geforce rtx 4090"}
    assert result["written"] is True and result["keys"] == ["geforce rtx 4090", "rtx 4090"]
    assert [p.name for p in profile.parent.iterdir()] == ["calibration.json"]   # no temporary file left


def test_other_gpus_entries_are_kept(tmp_path, profile):
    other = {"context_bytes": 600 * MiB, "reserve_fraction": 0.08, "runs": 2, "provenance": "2 runs on H100"}
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps({"version": 1, "gpus": {"h100 sxm": other}}))
    calib.calibrate(write_reports(tmp_path, [run_report()]))
    gpus = json.loads(profile.read_text())["gpus"]
    assert gpus["h100 sxm"] == other and "geforce rtx 4090" in gpus
    assert overhead_for("H100 SXM").source == "calibrated: 2 runs on H100"


def test_a_new_calibration_replaces_the_cards_old_entry(tmp_path, profile, monkeypatch, capsys):
    calib.calibrate(write_reports(tmp_path / "a", [run_report(context=900 * MiB)]))
    code, out, _ = run_main(monkeypatch, capsys, "calibrate",
                            *write_reports(tmp_path / "b", [run_report(context=650 * MiB)]))
    assert code == 0 and "replaces the previous entry" in out
    assert load_profile(profile)["geforce rtx 4090"]["context_bytes"] == 650 * MiB


def test_run_folders_are_accepted(tmp_path, profile):
    paths = write_reports(tmp_path, [run_report()])
    calib.calibrate([str(Path(paths[0]).parent)])
    assert load_profile(profile)["geforce rtx 4090"]["runs"] == 1


def test_unknown_gpu_is_stored_under_its_own_name_and_said_plainly(tmp_path, profile, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "calibrate",
                            *write_reports(tmp_path, [run_report(gpu="NVIDIA Quantum Q9")]))
    assert code == 0 and "not in fitplan's GPU catalog" in out
    assert set(load_profile(profile)) == {"quantum q9"}
    assert overhead_for("NVIDIA Quantum Q9").source.startswith("calibrated: 1 run on NVIDIA Quantum Q9")


def test_dry_run_and_json_write_nothing(tmp_path, profile, monkeypatch, capsys):
    paths = write_reports(tmp_path, [run_report(), run_report(context=710 * MiB, date="2026-11-21T00:00:00Z")])
    code, out, _ = run_main(monkeypatch, capsys, "calibrate", *paths, "--dry-run", "--json")
    assert code == 0 and not profile.exists()
    data = json.loads(out)
    assert data["dry_run"] is True and data["written"] is False and data["profile"] == str(profile)
    assert data["entry"]["context_bytes"] == 705 * MiB and data["entry"]["runs"] == 2
    assert data["defaults"] == {"context_bytes": cuda_context_bytes(RTX4090),
                                "reserve_fraction": allocator_reserve_fraction(RTX4090)}
    code, out, _ = run_main(monkeypatch, capsys, "calibrate", *paths, "--dry-run")
    assert code == 0 and out.startswith("Calibration of NVIDIA GeForce RTX 4090") and "Would store" in out
    assert not profile.exists()


# --- refusals leave the profile byte-identical ---------------------------------------------------------------
def _drop(report: dict, *keys: str) -> dict:
    target = report
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return report


def _rank(report: dict, **values) -> dict:
    report["measured"]["per_rank"][0].update(values)
    return report


BAD = {
    "oom status": (lambda: run_report(status="oom"), "status 'oom'"),
    "cpu run": (lambda: run_report(measured={  # as the recipe writes it for a CPU run
        "after_steps": 3, "device": "cpu", "per_rank": [{"device": "cpu", "rss_peak_bytes": GiB, "rank": 0}],
        "allocated_peak_bytes": None, "reserved_peak_bytes": None, "nvml_used_bytes": None, "rss_peak_bytes": GiB}),
        "not on a CUDA GPU"),
    "no nvml": (lambda: _rank(run_report(), nvml_used_bytes=None), "nvml_used_bytes is None"),
    "negative allocated": (lambda: _rank(run_report(), allocated_peak_bytes=-5), "allocated_peak_bytes is -5"),
    "string bytes": (lambda: _rank(run_report(), reserved_peak_bytes="9000"), "reserved_peak_bytes is '9000'"),
    "reserved below allocated": (lambda: _rank(run_report(), reserved_peak_bytes=GiB), "below its allocated peak"),
    "nvml below reserved": (lambda: _rank(run_report(), nvml_used_bytes=GiB), "not above the reserved peak"),
    "no gpu name": (lambda: _rank(run_report(), gpu=""), "does not name its GPU"),
    "no measured": (lambda: _drop(run_report(), "measured"), "not a fitplan run report"),
    "no torch version": (lambda: _drop(run_report(), "versions", "torch"), "torch version"),
    "bad date": (lambda: run_report(date="yesterday"), "no valid date"),
    "no steps": (lambda: run_report(measured={**run_report()["measured"], "after_steps": 0}),
                 "no training step measured"),
    "ranks on two gpus": (lambda: run_report(measured={**run_report(ranks=2)["measured"], "per_rank": [
        run_report()["measured"]["per_rank"][0], run_report(gpu="NVIDIA A100-SXM4-80GB")["measured"]["per_rank"][0]]}),
        "ranks on different GPUs"),
}


@pytest.fixture
def existing(profile) -> bytes:
    """A profile already holding another card's entry, byte for byte."""
    profile.parent.mkdir(parents=True)
    content = b'{"version": 1, "gpus": {"h100 sxm": {"context_bytes": 1, "reserve_fraction": 0.5}}}  \n'
    profile.write_bytes(content)
    return content


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_report_is_refused_and_the_profile_is_unchanged(case, tmp_path, profile, existing,
                                                                  monkeypatch, capsys):
    make, expected = BAD[case]
    paths = write_reports(tmp_path, [run_report(), make()])
    code, out, err = run_main(monkeypatch, capsys, "calibrate", *paths, "--json")
    assert code == 2
    message = json.loads(out)["error"]
    assert expected in message and paths[1] in message
    assert err.strip().splitlines() == [f"error: {message}"]
    assert profile.read_bytes() == existing


def test_reports_from_two_gpu_models_are_refused(tmp_path, profile, existing, monkeypatch, capsys):
    paths = write_reports(tmp_path, [run_report(), run_report(gpu="NVIDIA A100-SXM4-80GB")])
    code, _, err = run_main(monkeypatch, capsys, "calibrate", *paths)
    assert code == 2 and "calibrate one GPU model at a time" in err and "A100" in err
    assert profile.read_bytes() == existing


def test_not_json_and_duplicates_and_missing_files_are_refused(tmp_path, profile, existing, monkeypatch, capsys):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    paths = write_reports(tmp_path, [run_report()])
    for args, expected in (([paths[0], str(garbage)], "is not valid JSON"),
                           ([paths[0], paths[0]], "are the same run report"),
                           ([paths[0], str(tmp_path / "missing.json")], "neither a run report file"),
                           ([], "Give the run_report.json files")):
        code, _, err = run_main(monkeypatch, capsys, "calibrate", *args)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
        assert profile.read_bytes() == existing


def test_an_unreadable_profile_is_not_overwritten(tmp_path, profile, monkeypatch, capsys):
    profile.parent.mkdir(parents=True)
    profile.write_bytes(b"{broken")
    code, _, err = run_main(monkeypatch, capsys, "calibrate", *write_reports(tmp_path, [run_report()]))
    assert code == 2 and "not readable JSON" in err
    assert profile.read_bytes() == b"{broken"


# --- the shipped file, show and env -------------------------------------------------------------------------
def test_show_says_an_unusable_profile_is_ignored(profile, monkeypatch, capsys):
    profile.parent.mkdir(parents=True)
    profile.write_text('{"version": 1, "gpus": {"rtx 4090": {"context_bytes": NaN}}}')
    code, out, _ = run_main(monkeypatch, capsys, "calibrate", "--show")
    assert code == 0 and "(ignored, plans use the defaults: The calibration profile" in out and "NaN" in out
    assert overhead_for("RTX 4090").source == "shipped defaults (uncalibrated)"


def test_shipped_calibration_has_no_invented_numbers_and_loads():
    data = json.loads(SHIPPED.read_text())
    assert data["version"] == 1 and data["gpus"] == {}
    assert "provenance" in data["note"] and "real" in data["note"]
    assert load_profile(SHIPPED) == {}
    for name in ("RTX 4090", RTX4090, "H100 SXM", None):
        assert overhead_for(name).source == "shipped defaults (uncalibrated)"


def test_show_lists_the_profile_and_entries(tmp_path, profile, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "calibrate", "--show")
    assert code == 0 and f"calibration profile: {profile} (none yet)" in out and "shipped defaults" in out
    calib.calibrate(write_reports(tmp_path, [run_report()]))
    code, out, _ = run_main(monkeypatch, capsys, "calibrate", "--show", "--json")
    data = json.loads(out)
    assert data["profile"] == str(profile) and data["profile_exists"] is True
    assert data["gpus"]["geforce rtx 4090"]["context_bytes"] == 700 * MiB
    assert data["gpus"]["rtx 4090"]["alias_of"] == "geforce rtx 4090"
    assert data["shipped_gpus"] == {}
    text = show_text(calib.show())
    assert "geforce rtx 4090: context 0.68 GiB, reserve +12.50 %; 1 run on NVIDIA GeForce RTX 4090" in text
    assert "rtx 4090: same entry as geforce rtx 4090" in text


def test_env_shows_the_profile_and_the_calibration_each_gpu_gets(tmp_path, profile):
    calib.calibrate(write_reports(tmp_path, [run_report()]))
    lines = env_lines([(RTX4090, (8, 9)), ("NVIDIA A100-SXM4-80GB", (8, 0))])
    assert lines[0].startswith(f"- fitplan calibration: {profile} (1 GPU entry;")
    assert lines[1].startswith(f"    {RTX4090}: calibrated: 1 run on {RTX4090}")
    assert lines[2] == "    NVIDIA A100-SXM4-80GB: shipped defaults (uncalibrated)"
    output = CliRunner().invoke(cli, ["env"]).stdout
    assert f"- fitplan calibration: {profile} (1 GPU entry;" in output


@pytest.mark.parametrize("content", ['{"gpus": []}', '{"gpus": {"h100 sxm": {"reserve_fraction": 0.1}}}',
                                     '{"gpus": {"h100 sxm": {"context_bytes": "lots", "reserve_fraction": 0.1}}}',
                                     "not json"])
def test_a_garbled_profile_falls_back_to_defaults(tmp_path, monkeypatch, content):
    from planner.calibration import overhead_for
    path = tmp_path / "calibration.json"
    path.write_text(content)
    monkeypatch.setenv("FITPLAN_CALIBRATION", str(path))
    assert overhead_for("H100 SXM").source.startswith("shipped")
