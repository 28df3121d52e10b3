"""Exact mode (`estimate --trace`, `plan --trace`): measure the real training step instead of modelling it.

The measurement harness (measure/harness.py) builds the model with transformers on the meta device,
materialises it as fake tensors (shapes and dtypes, no storage) and runs two real training steps (forward
with labels, backward, optimizer step) while counting the bytes of every live storage; step 2 is reported.
The result has the shape of `estimate --json`: the allocated peak, its phase and the components live then
are measured; the reserved peak and the CUDA context come from the same calibration (`overhead_for`) the
analytic model uses, since a CPU cannot see them. Added keys: `"source": "trace"`, `"notes"` (the
harness's stand-ins), and for an architecture the analytic model knows, `"analytic"` (its answer) and
`"difference_pct"` = 100 * (analytic allocated peak / traced allocated peak - 1).

A local config.json whose model_type fitplan's analytic model does not support is built straight from
the config dict (any model_type transformers builds), LoRA on peft's "all-linear" or on the module names
given. Where the trace cannot run, the failing op (and module) is named and the analytic answer is given
instead, with `"source": "analytic (trace failed: ...)"`; without an analytic model, one sentence says why.

Nothing here imports torch or transformers at module level: `fitplan estimate` without --trace never pays.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import sys
import threading
import time
import warnings
from pathlib import Path

from planner.config import TrainConfig
from planner.enums import Attention, Offload, Sharding
from common.errors import EnvironmentProblem, InputError, opt

PROGRESS_DELAY_S = 1.0     # traces shorter than this show no progress
LORA_ALIASES = ("q", "k", "v", "o", "gate", "up", "down", "attn", "mlp")
STEPS = 2                  # step 1 creates the optimizer states; step 2 is reported


# -- entry points ----------------------------------------------------------------------------------------
def trace_estimate(model: str, cfg: TrainConfig, gpu: str | None = None, *, progress: bool = True,
                   hardware=None, margin: float = 0.10) -> dict:
    """`estimate --trace --json` for MODEL under cfg (see the module docstring); the card is `hardware`, else
    the one named by `gpu`, else the probed one, else none."""
    from planner.api import card_for_estimate
    from planner.model_input import resolve_model

    require_training_libraries()
    hardware = hardware or card_for_estimate(gpu)
    try:
        resolved = resolve_model(model)
    except InputError as err:
        raw = raw_config(model)
        if raw is None:
            raise
        return _trace_unknown(raw[0], raw[1], cfg, hardware, str(err), progress, margin)
    return _trace_known(resolved, cfg, hardware, progress, margin)


def trace_plan(model: str, plan, hardware, *, margin: float = 0.10, progress: bool = True) -> dict | None:
    """The trace of a search's recommended `plan` (a `planner.search.Plan`), with whether it confirms the
    plan's fit on `hardware`; None when nothing fits."""
    from planner.search import usable_bytes

    if plan is None:
        return None
    out = trace_estimate(model, plan.cfg, progress=progress, hardware=hardware, margin=margin)
    total = out["per_gpu"]["total_bytes"]
    out["plan_total_bytes"] = plan.total_bytes
    out["headroom_bytes"] = hardware.card.memory_bytes - total
    out["confirms_plan"] = total <= usable_bytes(hardware, margin)
    return out


# -- a model the analytic model knows ------------------------------------------------------------------
def _trace_known(resolved, cfg: TrainConfig, hardware, progress: bool, margin: float) -> dict:
    from planner.api import evaluate
    from planner.serialize import estimate_dict

    evaluation = evaluate(resolved, cfg, hardware, margin)
    analytic = estimate_dict(evaluation)
    why_not = untraceable(cfg)
    if why_not:
        return {**analytic, "source": f"analytic (not traced: {why_not})"}
    name = resolved.spec.name

    def run():
        from measure.harness import measure
        return measure(resolved.spec, evaluation.estimate.cfg, steps=STEPS, device="fake")

    try:
        m = _run_trace(run, name, progress)
    except Exception as exc:  # noqa: BLE001 - any failure of the trace falls back to the analytic answer
        why = describe_failure(exc)
        return {**analytic, "source": f"analytic (trace failed: {why})", "trace_error": why}
    out = traced_dict(name, m, evaluation.estimate.cfg, evaluation.overhead, analytic.get("gpu"),
                      usable=evaluation.usable_bytes)
    out["analytic"] = {key: analytic[key] for key in ("params_total", "params_trainable", "per_gpu", "cpu_bytes",
                                                       "fits") if key in analytic}
    out["difference_pct"] = difference_pct(analytic["per_gpu"]["allocated_peak_bytes"],
                                           out["per_gpu"]["allocated_peak_bytes"])
    return out


def difference_pct(analytic: int, traced: int) -> float | None:
    """How far the analytic allocated peak is from the traced one, in % of the traced one (+ = over)."""
    return round(100 * (analytic / traced - 1), 3) if traced else None


# -- a model only transformers knows --------------------------------------------------------------------
def raw_config(model: str) -> tuple[dict, str] | None:
    """(config dict, name) when MODEL is a local config.json (or a folder with one) holding a model_type."""
    path = Path(model.strip()).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        return None
    name = path.resolve().parent.name if path.name == "config.json" else path.stem
    return data, name


def _trace_unknown(config: dict, name: str, cfg: TrainConfig, hardware, analytic_error: str,
                   progress: bool, margin: float) -> dict:
    from planner.calibration import overhead_for
    from planner.search import usable_bytes

    model_type = config["model_type"]
    reason = analytic_error.split("; ")[0].rstrip(".")
    no_analytic = f"and fitplan's analytic model cannot stand in ({reason[:1].lower() + reason[1:]})"
    why_not = untraceable(cfg)
    if why_not:
        raise InputError(f"{name} can only be traced, and the trace cannot run this configuration "
                        f"({why_not}); trace it on one GPU without sharding or offload.")
    targets = lora_targets_for_unknown(cfg, model_type)
    notes: list[str] = []
    cfg = _attention_for(config, cfg, notes)
    overhead = hardware.card.overhead if hardware else overhead_for(None)
    gpu_out = {"name": hardware.card.name, "memory_bytes": hardware.card.memory_bytes} if hardware else None

    def run():
        from measure.harness import measure_hf_config
        return measure_hf_config(config, cfg, steps=STEPS, device="fake", name=name, target_modules=targets)

    try:
        m = _run_trace(run, name, progress)
    except Exception as exc:  # noqa: BLE001 - no fallback exists: say what failed, in one sentence
        raise InputError(f"Tracing {name} (model_type {model_type!r}) failed ({describe_failure(exc)}), "
                        f"{no_analytic}; give a complete config.json of a model type transformers builds, "
                        f"or a catalog model.") from None
    usable = usable_bytes(hardware, margin) if hardware else None
    out = traced_dict(name, m, cfg, overhead, gpu_out, usable=usable, extra_notes=notes + [
        f"model_type {model_type!r} is not in fitplan's analytic model: built from the config.json by "
        f"transformers and traced only (no analytic comparison); LoRA targets: "
        f"{targets if isinstance(targets, str) else ','.join(targets)}"])
    out["analytic"] = None
    out["difference_pct"] = None
    return out


def lora_targets_for_unknown(cfg: TrainConfig, model_type: str) -> str | list[str]:
    """peft target_modules: "all-linear", or the module names given (aliases need the analytic model)."""
    targets = tuple(cfg.lora_targets)
    if targets == ("all-linear",):
        return "all-linear"
    aliases = [t for t in targets if t in LORA_ALIASES or t == "all-linear"]
    if cfg.uses_adapters and aliases:
        raise InputError(f"{opt('lora_targets')} {','.join(aliases)} are aliases fitplan resolves only for the model types it "
                        f"models, not {model_type!r}; give all-linear or the module names of the config's "
                        f"architecture (e.g. {opt('lora_targets')} query_key_value,dense).")
    return list(targets)


def _attention_for(config: dict, cfg: TrainConfig, notes: list[str]) -> TrainConfig:
    """Eager attention for a model class without SDPA: what transformers itself falls back to."""
    if cfg.attn is Attention.EAGER:
        return cfg
    try:
        from transformers import AutoModelForCausalLM

        from measure.harness import hf_config_from_dict
        model_class = AutoModelForCausalLM._model_mapping[type(hf_config_from_dict(config))]
    except Exception:  # noqa: BLE001 - unbuildable: the trace itself reports why
        return cfg
    if getattr(model_class, "_supports_sdpa", True):
        return cfg
    notes.append(f"{model_class.__name__} has no SDPA attention: traced with eager attention (s x s scores "
                 f"kept), which transformers uses for it")
    return cfg.with_(attn=Attention.EAGER)


def untraceable(cfg: TrainConfig) -> str | None:
    """Why the one-process trace cannot measure this configuration, or None."""
    if cfg.sharding is not Sharding.NONE:
        return f"sharding {cfg.sharding.value} splits the model over GPUs and the trace runs one process"
    if cfg.offload is not Offload.NONE:
        return f"offload {cfg.offload.value} moves states to the CPU, which the trace does not do"
    if cfg.world_size > 1:
        return f"{cfg.world_size} GPUs add data-parallel buffers that one process does not hold"
    return None


# -- shaping the result ---------------------------------------------------------------------------------
def traced_dict(name: str, m, cfg: TrainConfig, overhead, gpu: dict | None, usable: int | None = None,
                extra_notes=()) -> dict:
    """A harness Measurement in the shape of `estimate --json`.

    Paged optimizer states (bitsandbytes' paged optimizers) live in CUDA managed memory, which
    `max_memory_allocated` does not see: as in the analytic model, they leave `allocated_peak_bytes` and the
    components and are counted in `paged_bytes` (and the total)."""
    from planner.serialize import config_dict

    paged = m.paged_bytes
    per_gpu = traced_per_gpu(m, overhead)
    notes = [f"traced: {STEPS} real training steps on fake tensors (measure/harness.py), step {STEPS} "
             f"measured; reserved and CUDA context from the calibration, not traced"]
    if paged:
        notes.append(f"{paged} bytes of paged optimizer states are in paged_bytes, outside the allocated peak")
    out = {
        "model": name,
        "params_total": m.params_total,
        "params_trainable": m.params_trainable,
        "config": config_dict(cfg),
        "per_gpu": per_gpu,
        "cpu_bytes": 0,
        "calibration": overhead.source,
        "source": "trace",
        "trace_seconds": m.seconds,
        "notes": notes + list(extra_notes) + list(m.notes),
    }
    if gpu is not None:
        out |= {"fits": per_gpu["total_bytes"] <= usable, "gpu": gpu, "usable_bytes": usable}
    return out


def traced_per_gpu(m, overhead) -> dict:
    """`per_gpu` of `estimate --json` from a harness Measurement, paged states outside the allocated peak."""
    from planner.memory import COMPONENTS
    from planner.serialize import overhead_fields

    paged = m.paged_bytes
    components = {key: m.components.get(key, 0) for key in COMPONENTS}
    components["optimizer_states"] -= paged
    return {
        **overhead_fields(overhead, m.allocated_peak_bytes - paged, paged, processes=1),   # the harness: one process
        "peak_phase": m.peak_phase,
        "components": components,
        "phases": {phase: peak - paged for phase, peak in m.phase_peaks.items()},
    }


# -- running, with progress and failure reports -------------------------------------------------------
def _run_trace(run, name: str, progress: bool):
    """run() with the libraries' chatter silenced, the module being run recorded, and progress on stderr."""
    with Progress(f"tracing {name} on fake tensors", enabled=progress), quiet_libraries(), ModuleStack() as stack:
        try:
            return run()
        except Exception as exc:
            try:
                exc.fitplan_module = stack.where()   # read by describe_failure
            except Exception:  # noqa: BLE001 - an exception that takes no attributes
                pass
            raise


TRAINING_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")


def require_training_libraries() -> None:
    """Exact mode runs the real training step: say what to install when a library it needs is missing."""
    missing = [name for name in TRAINING_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        raise EnvironmentProblem(f"{opt('trace')} runs the real training step and needs {', '.join(missing)}, which "
                                 "is not installed; install it with pip install 'fitplan[train]' (a CPU build of "
                                 f"torch is enough), or leave out {opt('trace')} for the analytic estimate.")


@contextlib.contextmanager
def quiet_libraries():
    """No third-party warnings or log lines in fitplan's output while the libraries run."""
    loggers = [logging.getLogger(name) for name in (*TRAINING_LIBRARIES, "accelerate", "deepspeed")]
    levels = [logger.level for logger in loggers]
    from transformers.utils import logging as hf_logging   # importing torch and transformers takes seconds
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class ModuleStack:
    """Which module's forward is running (global forward hooks); after a failure, the innermost one."""

    def __init__(self) -> None:
        self.stack: list = []
        self.handles: list = []

    def __enter__(self) -> "ModuleStack":
        from torch.nn.modules import module as torch_module

        def push(mod, _args):
            self.stack.append(mod)

        def pop(mod, _args, _out):
            while self.stack:
                if self.stack.pop() is mod:
                    break
        self.handles = [torch_module.register_module_forward_pre_hook(push),
                        torch_module.register_module_forward_hook(pop)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def where(self) -> str | None:
        """"model.layers.0.mlp (MixtralSparseMoeBlock)" for the innermost running module, else None."""
        if not self.stack:
            return None
        root, inner = self.stack[0], self.stack[-1]
        path = next((n for n, mod in root.named_modules() if mod is inner), "") or type(root).__name__
        return f"{path} ({type(inner).__name__})"


def describe_failure(exc: BaseException) -> str:
    """What failed, for one sentence: the exception, the op (`aten.nonzero.default`) when there is one,
    the module whose forward ran, and the line of model code that called it."""
    op = op_name(exc)
    message = _first_line(exc)
    parts = [f"{type(exc).__name__} on op {op}" if op else f"{type(exc).__name__}: {message}"]
    if op and message and op not in message and not message.startswith(type(exc).__name__):
        parts[0] += f" ({message})"
    module = getattr(exc, "fitplan_module", None)
    if module:
        parts.append(f"in module {module}")
    frame = code_frame(exc)
    if frame:
        parts.append(f"at {frame}")
    return " ".join(parts)


def op_name(exc: BaseException) -> str | None:
    """The aten op named by a fake-tensor exception (its `func`), or by the message of another one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        func = getattr(exc, "func", None)
        if func is not None:
            return str(func)
        found = re.search(r"\baten(?:::|\.)[A-Za-z_][\w.]*", str(exc))
        if found:
            return found.group(0).replace("::", ".").rstrip(".")
        exc = exc.__cause__ or exc.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."


def code_frame(exc: BaseException) -> str | None:
    """file:line of the innermost traceback frame in model code (not torch's, not this harness's)."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if not re.search(r"/torch/|/benchmarks/|/planner/|<", filename):
            found = f"{Path(filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


class Progress:
    """"tracing X on fake tensors ... done in 12.3 s" on stderr, shown only when it takes over a second;
    on a terminal, a spinner with the seconds elapsed."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, enabled: bool = True, stream=None, delay: float = PROGRESS_DELAY_S) -> None:
        self.label, self.enabled, self.delay = label, enabled, delay
        self.stream = stream or sys.stderr
        self.done = threading.Event()
        self.shown = False
        self.start = 0.0
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        self.start = time.perf_counter()
        if self.enabled:
            self.thread = threading.Thread(target=self._show, daemon=True)
            self.thread.start()
        return self

    def _show(self) -> None:
        if self.done.wait(self.delay):
            return
        self.shown = True
        tty = getattr(self.stream, "isatty", lambda: False)()
        self._write(f"{self.label} ...")
        frame = 0
        while tty and not self.done.wait(0.25):
            frame += 1
            self._write(f"\r{self.label} {self.FRAMES[frame % 4]} {time.perf_counter() - self.start:.0f} s")

    def __exit__(self, exc_type, *_) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        if self.shown:
            verdict = "failed" if exc_type else "done"
            tty = getattr(self.stream, "isatty", lambda: False)()
            self._write(f"{chr(13) + self.label + ' ...' if tty else ''} {verdict} in "
                        f"{time.perf_counter() - self.start:.1f} s\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):   # a closed stream must not break the trace
            pass
