"""From options to a run: the plan (via `plan_for`, the seam to the planner), the run folder, the
`accelerate launch` command of each node, and relaunching with a smaller micro-batch after an early OOM."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import signal as signalling
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.files import write_files
from launch import emit, planfile
from planner.api import Choice, card_for_estimate, evaluate
from planner.config import TrainConfig
from planner.model_input import ResolvedModel, resolve_model
from planner.params import resolve_targets
from planner.serialize import per_gpu_dict
from profiles.models import find

OOM_EXIT = 3                      # the recipe's exit status for an out-of-memory in its first steps
OOM_SIGNAL = "oom_signal.json"    # ...and the file it leaves, since `accelerate launch` does not pass statuses on
REPORT_NAME = "run_report.json"
RECIPE_MODULE = "launch.recipe"
NEW_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def make_plan(model: ResolvedModel, model_arg: str, choice: Choice, model_path: str | None = None) -> dict:
    """A validated plan.json dict of the chosen configuration (weights from `model_path` when given)."""
    cfg, evaluation = choice.cfg, choice.evaluation
    if cfg.uses_adapters:
        resolve_targets(model.spec, cfg.lora_targets)  # unknown targets fail now, not after loading the model
    card = evaluation.hardware.card if evaluation.hardware else None
    hardware = {"gpu": card.name, "memory_bytes": card.memory_bytes} if card else None
    plan = planfile.build_plan(model.spec.name, model_source(model_path or model_arg), cfg, hardware,
                               per_gpu_dict(evaluation.estimate, evaluation.overhead))
    return planfile.validate_plan(plan)


def model_source(model_arg: str) -> dict:
    """Where the weights of MODEL come from: {"kind": catalog|folder|config|hub, "path": ...}."""
    path = Path(model_arg).expanduser()
    if path.is_dir():
        return {"kind": "folder", "path": str(path.resolve())}
    if path.is_file():
        return {"kind": "config", "path": str(path.resolve())}
    return {"kind": "catalog" if find(model_arg) else "hub", "path": None}


def default_run_dir(plan: dict) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{plan['model'].split('/')[-1]}-{stamp}"


def multi_node(plan: dict | None, ip: str | None, port: int | None, machine_rank: int) -> emit.MultiNode:
    """Where the nodes meet: the command line first, then what the plan remembers."""
    saved = (plan or {}).get("multi_node") or {}
    return emit.MultiNode(ip or saved.get("main_process_ip"),
                          port or saved.get("main_process_port") or emit.DEFAULT_PORT, machine_rank)


def write_run_folder(out_dir: str | Path, plan: dict, nodes: emit.MultiNode, force: bool,
                     config: TrainConfig | None = None) -> dict[str, Path]:
    """plan.json plus the launcher configs (of `config`, else the plan's), all refused together when any exists
    and not forced."""
    out_dir = Path(out_dir).resolve()
    config = config or planfile.plan_config(plan)
    files = emit.render_configs(out_dir, config, nodes)
    if config.nodes > 1:  # so `fitplan launch --plan` on every node needs only --machine-rank
        plan = {**plan, "multi_node": {"main_process_ip": nodes.main_process_ip,
                                       "main_process_port": nodes.main_process_port}}
    named = {"plan": (out_dir / planfile.PLAN_NAME, planfile.plan_text(plan)), **files}
    write_files({path: text for path, text in named.values()}, force)
    return {name: path for name, (path, _) in named.items()}


@dataclass
class Launch:
    """One `fitplan launch`: the run folder, what to train with, and how far to go."""

    run_dir: Path
    plan: dict
    nodes: emit.MultiNode = emit.MultiNode()
    script: list[str] = field(default_factory=list)       # user script and its args; empty: built-in recipe
    recipe_args: list[str] = field(default_factory=list)  # --data/--steps/... for the built-in recipe
    oom_retries: int = 3
    config: TrainConfig = field(init=False)   # the plan's configuration, read from it once

    def __post_init__(self) -> None:
        self.config = planfile.plan_config(self.plan)

    @property
    def plan_path(self) -> Path:
        return self.run_dir / planfile.PLAN_NAME


def node_command(job: Launch, machine_rank: int, display: bool = False) -> list[str]:
    """`accelerate launch` for one node; `display` spells it as a user would type it."""
    launcher = ["accelerate", "launch"] if display else [sys.executable, "-m", "accelerate.commands.launch"]
    # --quiet: a failed single process exits 1 instead of adding accelerate's own traceback to the script's
    cmd = [*launcher, "--quiet", "--config_file", str(job.run_dir / emit.ACCELERATE_NAME)]
    if job.config.nodes > 1:
        cmd += ["--machine_rank", str(machine_rank)]
    if job.script:
        return cmd + list(job.script)
    return cmd + ["-m", RECIPE_MODULE, "--plan", str(job.plan_path), *job.recipe_args]


def all_node_commands(job: Launch) -> list[str]:
    return [shlex.join(node_command(job, rank, display=True)) for rank in range(job.config.nodes)]


def child_env(job: Launch) -> dict[str, str]:
    return {**os.environ, "FITPLAN_PLAN": str(job.plan_path), "FITPLAN_RUN_DIR": str(job.run_dir),
            "FITPLAN_OOM_FILE": str(job.run_dir / OOM_SIGNAL)}


def run_once(job: Launch, stdout=None) -> tuple[int, bool]:
    """Run this node's command; returns (exit status, whether it ran out of memory in its first steps)."""
    signal = job.run_dir / OOM_SIGNAL
    for stale in (signal, job.run_dir / REPORT_NAME):  # each attempt reports afresh
        stale.unlink(missing_ok=True)
    # its own process group: on Ctrl-C we forward the signal and can wait until every rank has saved
    process = subprocess.Popen(node_command(job, job.nodes.machine_rank), env=child_env(job), stdout=stdout,
                               **NEW_GROUP)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = stop_gently(process)
    wait_for_group(process.pid)
    return code, code == OOM_EXIT or signal.exists()


def stop_gently(process: subprocess.Popen) -> int:
    """Ctrl-C: the training saves and exits; a second Ctrl-C stops it at once."""
    signal_workers(process.pid, signalling.SIGINT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signalling.SIGKILL)
        raise


def signal_workers(launcher: int, sig: int) -> None:
    """Signal the training processes, not the launcher: `accelerate launch` (1.16 and newer) answers a
    Ctrl-C of its own by terminating its workers within seconds, in the middle of their save."""
    import psutil
    try:
        workers = psutil.Process(launcher).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in workers or [psutil.Process(launcher)]:   # no worker yet: stop the launcher itself
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def wait_for_group(group: int, timeout_s: float = 120.0) -> None:
    """Wait until no process of the run's group is left (the launcher may exit before its workers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def smaller_micro_batch(config: TrainConfig) -> TrainConfig | None:
    """The next smaller micro-batch that keeps the global batch (more accumulation); None at 1."""
    global_batch = config.micro_batch * config.grad_accum * config.world_size
    for micro in range(config.micro_batch - 1, 0, -1):
        if global_batch % (micro * config.world_size) == 0:
            return config.with_(micro_batch=micro, grad_accum=global_batch // (micro * config.world_size))
    return None


def replan(job: Launch, config: TrainConfig) -> None:
    """Point the run at `config`: rewrite plan.json and the launcher configs in place."""
    # this machine's card (probed): the relaunch runs here, whatever card the plan was written for
    model = resolve_model(job.plan["model_source"]["path"] or job.plan["model"])
    evaluation = evaluate(model, config, card_for_estimate(None))
    job.plan = {**job.plan, "config": {**config.to_dict(), "global_batch": planfile.global_batch(config)},
                "per_gpu": per_gpu_dict(evaluation.estimate, evaluation.overhead)}
    job.config = config
    write_run_folder(job.run_dir, job.plan, job.nodes, force=True, config=config)


def run_with_recovery(job: Launch, stdout=None, log=print) -> dict:
    """Run; after an early OOM, relaunch with a smaller micro-batch (same global batch), at most
    `oom_retries` times. Returns {"exit_code", "status", "oom_history"}; the history also lands in the report."""
    history: list[dict] = []
    while True:
        code, early_oom = run_once(job, stdout)
        if not early_oom:
            break
        old = job.config
        # one node cannot re-plan the others, so multi-node runs stop at the first OOM
        new = smaller_micro_batch(old) if len(history) < job.oom_retries and old.nodes == 1 else None
        history.append(_oom_entry(old, new))
        if new is None:
            break
        log(f"out of memory at micro-batch {old.micro_batch}; relaunching with micro-batch {new.micro_batch} "
            f"x grad-accum {new.grad_accum} (same global batch {planfile.global_batch(new)}).")
        replan(job, new)
    status = "oom" if early_oom else reported_status(job.run_dir, code)
    record_history(job.run_dir, history, status, code)
    return {"exit_code": code, "status": status, "oom_history": history}


def reported_status(run_dir: Path, code: int) -> str:
    """The run report's status (ok, interrupted, ...), else one from the exit status alone."""
    try:
        return json.loads((run_dir / REPORT_NAME).read_text(encoding="utf-8"))["status"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return "ok" if code == 0 else "failed"


def _oom_entry(old: TrainConfig, new: TrainConfig | None) -> dict:
    return {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "micro_batch": old.micro_batch, "grad_accum": old.grad_accum,
            "next_micro_batch": new.micro_batch if new else None, "next_grad_accum": new.grad_accum if new else None}


def record_history(run_dir: Path, history: list[dict], status: str, code: int) -> None:
    """Append the OOM history to the run report (creating a small one when the script wrote none)."""
    if not history:
        return
    path = run_dir / REPORT_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        report = {"status": status, "exit_code": code}
    report["oom_history"] = report.get("oom_history", []) + history
    planfile.write_text(path, json.dumps(report, indent=2) + "\n", force=True)
