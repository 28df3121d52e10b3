"""`fitplan config` and `fitplan launch` as a user runs them: files written, refusals, dry runs, OOM recovery."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
MODEL = "meta-llama/Llama-3.1-8B"


def fitplan(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FITPLAN, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_config_writes_plan_and_launcher_files(tmp_path):
    out = tmp_path / "run"
    done = fitplan("config", MODEL, "--gpus", "8", "--sharding", "zero3", "--offload", "optimizer",
                   "--method", "full", "--micro-batch", "2", "--global-batch", "64", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["files"]) == {"plan", "accelerate", "deepspeed"}
    plan = json.loads((out / "plan.json").read_text())
    assert plan["config"]["grad_accum"] == 4 and plan["config"]["global_batch"] == 64
    assert json.loads((out / "deepspeed.json").read_text())["train_batch_size"] == 64


def test_config_refuses_to_overwrite_without_force(tmp_path):
    out = str(tmp_path / "run")
    assert fitplan("config", MODEL, "--out", out).returncode == 0
    before = (tmp_path / "run" / "plan.json").read_text()
    again = fitplan("config", MODEL, "--micro-batch", "4", "--out", out)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip().startswith("error:") and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert (tmp_path / "run" / "plan.json").read_text() == before
    forced = fitplan("config", MODEL, "--micro-batch", "4", "--out", out, "--force")
    assert forced.returncode == 0
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["config"]["micro_batch"] == 4


@pytest.mark.parametrize("args, message", [
    (("config", "no/such-model"), "unknown model"),
    (("config", MODEL, "--method", "auto", "--gpu", "rtx3060", "--seq-len", "65536"), "no plan fits on RTX 3060"),
    (("config", MODEL, "--nodes", "2"), "--main-process-ip"),
    (("config", MODEL, "--lora-targets", "q,nope"), "nope"),
])
def test_user_mistakes_are_one_sentence(tmp_path, args, message):
    done = fitplan(*args, "--out", str(tmp_path / "x"), "--json")
    assert done.returncode == 2, done.stderr
    assert message.lower() in done.stderr.lower() and "Traceback" not in done.stderr
    assert message.lower() in json.loads(done.stdout)["error"].lower()


def test_method_auto_takes_the_planners_recommendation(tmp_path):
    done = fitplan("config", MODEL, "--method", "auto", "--gpu", "RTX 4090", "--seq-len", "1024",
                   "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["config"]["method"] in ("lora", "qlora") and plan["config"]["seq_len"] == 1024
    assert plan["hardware"]["gpu"] == "RTX 4090" and plan["hardware"]["memory_bytes"] > 20 * 2**30
    assert plan["per_gpu"]["total_bytes"] < plan["hardware"]["memory_bytes"]


def test_explicit_options_are_estimated_not_searched(tmp_path):
    done = fitplan("config", MODEL, "--method", "full", "--gpu", "h100x8", "--sharding", "zero3",
                   "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (plan["config"]["method"], plan["config"]["gpus"], plan["config"]["sharding"]) == ("full", 8, "zero3")
    assert plan["per_gpu"]["allocated_peak_bytes"] == sum(plan["per_gpu"]["components"].values())


def test_dry_run_prints_one_command_per_node_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    args = ("--gpus", "8", "--nodes", "2", "--sharding", "zero2", "--main-process-ip", "10.0.0.1", "--out", str(out))
    done = fitplan("launch", MODEL, *args, "--machine-rank", "1", "--dry-run")
    assert done.returncode == 0, done.stderr
    config_file = out / "accelerate_config.yaml"
    plan_file = out / "plan.json"
    assert done.stdout.splitlines() == [
        "# node 0",
        f"accelerate launch --quiet --config_file {config_file} --machine_rank 0 -m launch.recipe --plan {plan_file}",
        "# node 1",
        f"accelerate launch --quiet --config_file {config_file} --machine_rank 1 -m launch.recipe --plan {plan_file}",
    ]
    assert not out.exists()
    # the plan remembers where the nodes meet: a launch from it needs only the rank
    assert fitplan("config", MODEL, *args, "--machine-rank", "1").returncode == 0
    assert "machine_rank: 1" in config_file.read_text() and "main_process_ip: 10.0.0.1" in config_file.read_text()
    again = fitplan("launch", "--plan", str(plan_file), "--machine-rank", "0", "--dry-run", "--json")
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)["commands"]) == 2
    assert "machine_rank: 1" in config_file.read_text()   # a dry run leaves the folder as it was


def test_a_global_batch_that_does_not_split_is_rounded_up_with_a_warning(tmp_path):
    done = fitplan("config", MODEL, "--micro-batch", "3", "--global-batch", "8", "--out", str(tmp_path / "x"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plan"]["config"]["global_batch"] == 9
    assert "A global batch of 8 does not split over micro-batch 3 x 1 GPUs; the plan uses 9." in done.stderr


def test_dry_run_passes_the_users_script_and_its_args(tmp_path):
    (tmp_path / "train.py").write_text("print('training')\n")
    done = fitplan("launch", MODEL, "--out", str(tmp_path / "run"), "--dry-run", "--",
                   "train.py", "--epochs", "2", "--plan", "mine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("accelerate_config.yaml train.py --epochs 2 --plan mine")


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_missing_script_is_refused_before_anything_starts(tmp_path, dry_run):
    done = fitplan("launch", MODEL, "--out", str(tmp_path / "run"), *dry_run, "--", "missing.py", cwd=tmp_path)
    assert done.returncode == 2 and "error: Cannot read the training script missing.py" in done.stderr
    assert not (tmp_path / "run").exists()


def test_plan_fixes_the_training_options(tmp_path):
    assert fitplan("config", MODEL, "--out", str(tmp_path)).returncode == 0
    done = fitplan("launch", "--plan", str(tmp_path / "plan.json"), "--micro-batch", "8", "--dry-run")
    assert done.returncode == 2 and "drop --micro-batch" in done.stderr


def test_plans_for_another_launcher_are_refused(tmp_path):
    assert fitplan("config", MODEL, "--out", str(tmp_path)).returncode == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    (tmp_path / "plan.json").write_text(json.dumps({**plan, "launcher": "deepspeed"}))
    done = fitplan("launch", "--plan", str(tmp_path / "plan.json"), "--dry-run")
    assert done.returncode == 2 and "accelerate only" in done.stderr


FAKE_SCRIPT = textwrap.dedent("""
    # Stands in for a training script: "runs out of memory" above micro-batch 1, as the recipe reports it.
    import json, os, sys
    plan = json.load(open(os.environ["FITPLAN_PLAN"]))
    config = plan["config"]
    with open(os.path.join(os.environ["FITPLAN_RUN_DIR"], "attempts.jsonl"), "a") as log:
        log.write(json.dumps({"micro_batch": config["micro_batch"], "grad_accum": config["grad_accum"],
                              "argv": sys.argv[1:]}) + "\\n")
    if config["micro_batch"] > 1:
        open(os.environ["FITPLAN_OOM_FILE"], "w").write("{}")
        sys.exit(3)
""")


def test_oom_in_first_steps_relaunches_with_smaller_micro_batch(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_SCRIPT)
    out = tmp_path / "run"
    done = fitplan("launch", MODEL, "--micro-batch", "4", "--global-batch", "8", "--out", str(out), "--json",
                   "--", str(script), "--tag", "x")
    assert done.returncode == 0, done.stderr
    attempts = [json.loads(line) for line in (out / "attempts.jsonl").read_text().splitlines()]
    assert [(a["micro_batch"], a["grad_accum"]) for a in attempts] == [(4, 2), (2, 4), (1, 8)]
    assert all(a["argv"] == ["--tag", "x"] for a in attempts)
    assert "relaunching with micro-batch 2 x grad-accum 4" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and len(result["oom_history"]) == 2
    report = json.loads((out / "run_report.json").read_text())
    assert [(h["micro_batch"], h["next_micro_batch"]) for h in report["oom_history"]] == [(4, 2), (2, 1)]
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["config"]["micro_batch"], plan["config"]["grad_accum"], plan["config"]["global_batch"]) == (1, 8, 8)


def test_oom_retries_are_bounded(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_SCRIPT)
    out = tmp_path / "run"
    done = fitplan("launch", MODEL, "--micro-batch", "8", "--out", str(out), "--oom-retries", "1", "--", str(script))
    assert done.returncode == 3
    assert "out of memory even at micro-batch 4" in done.stderr
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"] == "oom" and len(report["oom_history"]) == 2
    assert report["oom_history"][-1]["next_micro_batch"] is None


def test_run_folders_are_ignored_by_git_wherever_they_are_made():
    """`config` and `launch` write runs/ under the folder they run in; git never offers it for a commit."""
    import shutil
    import subprocess
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("runs/llama1b/plan.json", "tests/runs/x/plan.json", "examples/runs/a/run_report.json"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0, path
