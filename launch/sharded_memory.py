"""Measure each rank's live bytes per phase of a real sharded training step, on CPU ranks talking over gloo.

(In launch/, not measure/: it writes and launches run folders, and measure/ sits below launch/ in the layering.)

`measure_sharded(spec, cfg, processes)` saves a tiny random model built from `hf_config_dict(spec)`, writes
plan.json and the launcher configs with fitplan's own code (launch.planfile.build_plan,
launch.runner.write_run_folder), and runs the run folder's `accelerate launch ... -m launch.recipe` command
(launch.runner.node_command), so the emitted configs are what runs. The recipe's opt-in memory tracking
(FITPLAN_TRACK_MEMORY, measure/rank_memory.py) writes one JSON per rank; they come back in the result.

On CPU: DDP and FSDP ranks get gloo from ACCELERATE_USE_CPU=true (FSDP then needs measure/cpu_engines.py);
DeepSpeed finds its CPU accelerator by itself and must not see ACCELERATE_USE_CPU (Accelerate would fall back
to DDP). DeepSpeed compiles its CPU communication extension once into .cache/torch_extensions (git-ignored).

Usage: python -m launch.sharded_memory meta-llama/Llama-3.1-8B --sharding zero3 --method lora --processes 2 \
          --override n_layer=2 --override hidden=256 ...
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from launch import planfile, recipe, runner
from launch.emit import MultiNode
from measure import cpu_engines
from planner.config import TrainConfig
from planner.enums import Sharding
from planner.params import layer_params
from planner.sharding import EngineSettings
from profiles.hf_config import hf_config_dict
from profiles.spec import ModelSpec

REPO = Path(__file__).resolve().parent.parent
EXTENSIONS_DIR = REPO / ".cache" / "torch_extensions"   # DeepSpeed's compiled CPU comm op, reused by later runs
MEMORY_DIR = "memory"
STDERR_TAIL = 6000
DEFAULT_TIMEOUT_S = 600
ALIGN = 64   # elements: what scaled_engine rounds DeepSpeed sizes to
NOTES = (*cpu_engines.NOTES,
         "gc.collect() at the start of every step, so every rank starts it with the same (no) cyclic garbage",
         "the model is saved in bf16 with random weights; the data are synthetic tokens (no tokenizer)")


class ShardedRunError(RuntimeError):
    """A measured run that failed, did not write every rank's report, or ran another engine than asked."""


@dataclass
class ShardedMeasurement:
    """One measured configuration: what ran and what every rank reported (measure/rank_memory.py)."""

    model: str
    config: dict
    processes: int
    steps: int
    ranks: list[dict]
    losses: list[float]
    seconds: float
    notes: list[str] = field(default_factory=lambda: list(NOTES))

    def to_dict(self) -> dict:
        return asdict(self)


def scaled_engine(real: ModelSpec, tiny: ModelSpec, engine: EngineSettings = EngineSettings()) -> EngineSettings:
    """`engine` (fitplan's defaults) shrunk with the model, so a tiny model's buckets compare to its layers as the
    real model's do: sizes compared with layers (buckets, prefetch, live and reuse limits) scale with a layer's
    parameters, the persistence threshold (compared with norms and LoRA matrices) with the width."""
    layer = layer_params(tiny) / layer_params(real)
    width = tiny.hidden / real.hidden
    by_layer = ("reduce_bucket_size", "allgather_bucket_size", "prefetch_bucket_size", "max_live_parameters",
                "max_reuse_distance")
    # multiples of 64 elements: DeepSpeed wants its buckets aligned (allgather_bucket_size to NCCL's 2 elements)
    scaled = {name: max(ALIGN, round(getattr(engine, name) * layer / ALIGN) * ALIGN) for name in by_layer}
    return replace(engine, **scaled, param_persistence_threshold=max(1, round(engine.param_persistence_threshold * width)),
                   ddp_bucket_cap_mb=max(1, round(engine.ddp_bucket_cap_mb * layer)))   # DDP takes whole MB


def measure_sharded(spec: ModelSpec, cfg: TrainConfig, processes: int, steps: int = 2,
                    workdir: str | Path | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> ShardedMeasurement:
    """Train `spec` (tiny, random) as `cfg` says on `processes` CPU ranks for `steps` steps, measuring every rank.
    `workdir` keeps the saved model (reused by later calls for the same spec) and the run folder; default: a
    temporary folder, removed afterwards."""
    cfg = cfg.with_(gpus=processes, nodes=1)
    start = time.perf_counter()
    with _folder(workdir) as folder:
        model_dir = save_tiny_model(spec, folder / "models")
        run_dir = folder / "runs" / run_name(spec, cfg)
        job = write_run(run_dir, spec, cfg, model_dir, steps)
        launch(job, run_dir / MEMORY_DIR, timeout_s)
        ranks, losses = read_ranks(run_dir / MEMORY_DIR, processes), read_losses(run_dir)
    check_engine(ranks, cfg)
    return ShardedMeasurement(spec.name, cfg.to_dict(), processes, steps, ranks, losses,
                              round(time.perf_counter() - start, 2))


@contextlib.contextmanager
def _folder(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="fitplan-sharded-") as tmp:
        yield Path(tmp)


def save_tiny_model(spec: ModelSpec, models_dir: Path) -> Path:
    """The model of `spec` with random weights (seed 0) in bf16, saved once per architecture under `models_dir`."""
    config = hf_config_dict(spec)
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = models_dir / f"{spec.short_name}-{digest}"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def run_name(spec: ModelSpec, cfg: TrainConfig) -> str:
    blob = json.dumps(cfg.to_dict(), sort_keys=True)
    return f"{spec.short_name}-{cfg.sharding.value}-{cfg.method.value}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def write_run(run_dir: Path, spec: ModelSpec, cfg: TrainConfig, model_dir: Path, steps: int) -> runner.Launch:
    """plan.json and the launcher configs, as `fitplan config` writes them; the recipe's launch job."""
    plan = planfile.build_plan(spec.name, {"kind": "folder", "path": str(model_dir)}, cfg)
    runner.write_run_folder(run_dir, plan, MultiNode(), force=True)
    return runner.Launch(run_dir, plan, recipe_args=["--steps", str(steps)])


def launch_env(cfg: TrainConfig, memory_dir: Path | None) -> dict[str, str]:
    """The environment of CPU ranks running `cfg`'s engine; memory tracking into `memory_dir` unless None."""
    env = {**os.environ, recipe.CPU_ENGINES_ENV: "1", "TORCH_EXTENSIONS_DIR": str(EXTENSIONS_DIR),
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for name in ("ACCELERATE_USE_CPU", recipe.TRACK_MEMORY_ENV):
        env.pop(name, None)
    if memory_dir is not None:
        env[recipe.TRACK_MEMORY_ENV] = str(memory_dir)
    if not cfg.sharding.is_zero:   # DeepSpeed picks its CPU accelerator itself; this flag would turn it into DDP
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def launch(job: runner.Launch, memory_dir: Path | None, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
    """Run the run folder's `accelerate launch` command (tracking memory into `memory_dir` unless None); on
    failure raise with the tail of its output."""
    command = runner.node_command(job, machine_rank=0)
    proc = subprocess.Popen(command, cwd=REPO, env=launch_env(job.config, memory_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the launcher and its ranks: the group this call started
        output, _ = proc.communicate()
        raise ShardedRunError(f"{job.run_dir.name} ran past {timeout_s} s; last output:\n{output[-STDERR_TAIL:]}")
    if proc.returncode != 0:
        raise ShardedRunError(f"{job.run_dir.name} failed (exit {proc.returncode}); last output:\n"
                              f"{output[-STDERR_TAIL:]}")


def read_ranks(memory_dir: Path, processes: int) -> list[dict]:
    paths = [memory_dir / f"rank{k}.json" for k in range(processes)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise ShardedRunError(f"the run finished but wrote no {', '.join(missing)} in {memory_dir}")
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def read_losses(run_dir: Path) -> list[float]:
    """The recipe's per-step losses (run_report.json), to compare runs with and without tracking."""
    return json.loads((run_dir / runner.REPORT_NAME).read_text(encoding="utf-8"))["losses"]


def check_engine(ranks: list[dict], cfg: TrainConfig) -> None:
    """Every rank ran the engine asked for (Accelerate falls back to DDP silently when an engine is off)."""
    ran = sorted({r["engine"] for r in ranks})
    if ran != [cfg.sharding.value]:
        raise ShardedRunError(f"asked for {cfg.sharding.value}, but the ranks ran {', '.join(ran)}")


# -- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    from profiles.models import from_name
    parser = argparse.ArgumentParser(prog="python -m launch.sharded_memory", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="catalog name, shrunk with --override")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=INT",
                        help="ModelSpec field to change, e.g. n_layer=2 (repeatable)")
    parser.add_argument("--sharding", default="ddp", choices=Sharding.values())
    parser.add_argument("--method", default="lora")
    parser.add_argument("--precision", default="bf16-true")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--engine", default="{}", help="EngineSettings as JSON (applied after --scaled-engine)")
    parser.add_argument("--scaled-engine", action="store_true",
                        help="start from fitplan's engine defaults shrunk as the model is (scaled_engine)")
    parser.add_argument("--workdir")
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.override)}
    tiny = from_name(args.model, **overrides)
    engine = scaled_engine(from_name(args.model), tiny) if args.scaled_engine else EngineSettings()
    cfg = TrainConfig(method=args.method, precision=args.precision, sharding=args.sharding,
                      micro_batch=args.micro_batch, seq_len=args.seq_len,
                      engine=replace(engine, **json.loads(args.engine)))
    result = measure_sharded(tiny, cfg, args.processes, args.steps, args.workdir)
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
