"""The built-in fine-tuning recipe: `accelerate launch -m launch.recipe --plan plan.json [--data FILE]`
(or plain `python -m launch.recipe --plan plan.json`).

Trains as the plan says (full / LoRA / QLoRA, precision, optimizer, micro-batch, accumulation,
checkpointing), runs its longest batch first so an out-of-memory shows at once, logs the loss of each
step to losses.jsonl, saves the adapter (or model) at the end and on Ctrl-C, and writes run_report.json:
the plan's predicted per-GPU memory next to the peaks measured over the first steps.
Exit status: 0 done, 3 out of memory in the first steps, 130 interrupted, 2 a user mistake.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import resource
import signal as signals
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from launch import emit, planfile
from launch.runner import OOM_EXIT, OOM_SIGNAL, REPORT_NAME
from planner.config import TrainConfig
from planner.model_input import resolve_model
from planner.params import target_modules
from planner.enums import Method, Precision, Sharding
from planner.optimizers import record
from common.errors import InputError, opt

if TYPE_CHECKING:
    from measure.rank_memory import RankMemory

FIRST_STEPS = 3          # steps whose memory peaks the report records (and where an OOM is "early")
DEFAULT_STEPS = 10       # synthetic data: steps when --steps is not given
INTERRUPTED_EXIT = 130
ATTENTION = {"sdpa": "sdpa", "flash": "flash_attention_2", "eager": "eager"}
LOSSES_NAME = "losses.jsonl"
CPU_ENGINES_ENV = "FITPLAN_CPU_ENGINES"   # GPU engines on CPU ranks, for measuring (measure/cpu_engines.py)
TRACK_MEMORY_ENV = "FITPLAN_TRACK_MEMORY"  # a folder: each rank writes its live bytes per phase there


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launch.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help="plan.json written by `fitplan config`")
    parser.add_argument("--model-path", help="local model folder (default: the plan's model source)")
    parser.add_argument("--data", help='JSONL with a "text" field, or plain text; default: synthetic tokens')
    parser.add_argument("--steps", type=int, help=f"optimizer steps (default: one pass over --data, or {DEFAULT_STEPS})")
    parser.add_argument("--lr", type=float, help="learning rate (default 2e-4 with adapters, 1e-5 full)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pack", dest="pack", action="store_false",
                        help="pad each text to --seq-len instead of packing texts together")
    parser.add_argument("--output-dir", help="where the adapter/model, losses and report go (default: the plan's folder)")
    return parser.parse_args(argv)


@dataclass
class Run:
    """What one training run knows and measures; becomes run_report.json."""

    args: argparse.Namespace
    plan: dict
    config: TrainConfig
    out_dir: Path
    status: str = "running"
    step: int = 0
    losses: list[float] = field(default_factory=list)
    measured: dict | None = None
    tokens: int = 0
    seconds: float = 0.0
    saved: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)
    rank: int = 0
    world: int = 1
    phase: str = "setup"    # setup (loading, preparing) | training
    tracking: NoMemoryTracking | RankMemory = field(default_factory=lambda: NoMemoryTracking())

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class NoMemoryTracking:
    """The recipe's memory-tracking calls when FITPLAN_TRACK_MEMORY is unset: each does nothing. When it is set,
    `memory_tracking` gives measure.rank_memory.RankMemory, whose methods these are."""

    def __enter__(self) -> "NoMemoryTracking":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def loaded(self, model) -> None: ...
    def prepared(self, accelerator, model, optimizer) -> None: ...
    def step_begins(self) -> None: ...
    def phase(self, name: str) -> None: ...
    def gradients_ready(self) -> None: ...
    def optimizer_stepped(self) -> None: ...
    def step_done(self) -> None: ...


def memory_tracking(config: TrainConfig) -> NoMemoryTracking | RankMemory:
    """Per-rank live bytes by phase (measure/rank_memory.py) into $FITPLAN_TRACK_MEMORY/rank<k>.json, if set."""
    where = os.environ.get(TRACK_MEMORY_ENV)
    if not where:
        return NoMemoryTracking()
    from measure.rank_memory import RankMemory
    return RankMemory(Path(where), config.sharding)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    plan = planfile.read_plan(args.plan)
    run = Run(args, plan, planfile.plan_config(plan), Path(args.output_dir or Path(args.plan).parent).resolve())
    accelerator = make_accelerator(run.config)
    run.rank, run.world = rank_and_world(accelerator)
    signals.signal(signals.SIGTERM, stop_like_ctrl_c)
    run.tracking = memory_tracking(run.config)
    try:
        with run.tracking:   # from before loading to the end of the last step
            model, optimizer, (steps, batches) = setup(run, accelerator)
            run.phase = "training"
            loop(run, accelerator, model, optimizer, steps, batches)
        run.status = "ok"
    except KeyboardInterrupt:
        if run.phase != "training":
            raise
        run.status = "interrupted"
    except Exception as err:  # a crash: report it, then let its traceback show
        if is_out_of_memory(err):
            return out_of_memory(run, accelerator, err)
        run.status, run.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0]
        write_report(run)
        raise
    with signals_held():
        run.saved = save(accelerator, model, run)
        finish(run, accelerator)
    return INTERRUPTED_EXIT if run.status == "interrupted" else 0


def stop_like_ctrl_c(_signum, _frame) -> None:
    """A launcher's or scheduler's SIGTERM ends training as Ctrl-C does: what was trained is saved."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_held():
    """Saving runs to the end: another Ctrl-C or SIGTERM would leave a half-written adapter."""
    previous = {sig: signals.signal(sig, signals.SIG_IGN) for sig in (signals.SIGINT, signals.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signals.signal(sig, handler)


def setup(run: Run, accelerator) -> tuple:
    """The prepared model and optimizer, and this rank's batches."""
    from accelerate.utils import set_seed
    set_seed(run.args.seed)
    model = load_model(run, accelerator)
    run.tracking.loaded(model)
    optimizer = make_optimizer(run.config, model, run.args)
    batches = make_batches(run, vocab_size(model))
    model, optimizer = accelerator.prepare(model, optimizer)
    run.tracking.prepared(accelerator, model, optimizer)
    run.extra["param_bytes_by_dtype"] = param_bytes_by_dtype(model)
    return model, optimizer, batches


# -- setup ------------------------------------------------------------------------------------------

def make_accelerator(config: TrainConfig):
    """An Accelerator; under `accelerate launch` its env decides, else the plan's precision (one process)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    if os.environ.get(CPU_ENGINES_ENV):  # measuring the GPU engines on CPU ranks (launch/sharded_memory.py)
        from measure import cpu_engines
        cpu_engines.enable()
    # Accelerate's YAML has no key for DDP's bucket size: the plan's engine settings carry it
    kwargs = {"gradient_accumulation_steps": config.grad_accum,
              "kwargs_handlers": [DistributedDataParallelKwargs(bucket_cap_mb=config.engine.ddp_bucket_cap_mb)]}
    launched = "ACCELERATE_MIXED_PRECISION" in os.environ or "ACCELERATE_USE_DEEPSPEED" in os.environ
    if not launched:
        kwargs["mixed_precision"] = emit.MIXED_PRECISION[config.precision]
    return Accelerator(**kwargs)


def rank_and_world(accelerator) -> tuple[int, int]:
    """(rank, world size) from torch.distributed: Accelerate reports one process per rank for DeepSpeed on CPU."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return accelerator.process_index, accelerator.num_processes


def model_location(run: Run) -> tuple[str, bool]:
    """(path or id, is local folder) of the weights to load."""
    if run.args.model_path:
        return run.args.model_path, True
    source = run.plan["model_source"]
    if source["kind"] == "folder":
        return source["path"], True
    return run.plan["model"], False


def load_model(run: Run, accelerator):
    import torch
    from transformers import AutoModelForCausalLM
    where, local = model_location(run)
    config = run.config
    kwargs = {"dtype": torch.bfloat16 if config.precision == Precision.BF16_TRUE else torch.float32,
              "attn_implementation": ATTENTION[config.attn]}
    if config.method == Method.QLORA:
        kwargs |= {"quantization_config": bnb_config(config), "device_map": {"": accelerator.device}}
    try:
        model = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, **kwargs)
    except OSError as err:
        hint = f"cannot load the model from {where}" if local else (
            f"{where} is not in the local Hugging Face cache and fitplan never downloads; download it "
            f"(`huggingface-cli download {where}`) or pass {opt('model_path')} DIR")
        raise InputError(f"{hint} ({str(err).splitlines()[0]}).") from None
    model.config.use_cache = False  # the KV cache only costs memory in training
    return adapt(model, run)


def bnb_config(config: TrainConfig):
    import torch
    from transformers import BitsAndBytesConfig
    compute = torch.float16 if config.precision == Precision.FP16_MIXED else torch.bfloat16
    # FSDP shards floating-point storage only: 4-bit weights then pack into bf16 (the bytes are the same)
    storage = torch.bfloat16 if config.sharding.is_fsdp else torch.uint8
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_quant_storage=storage)


def adapt(model, run: Run):
    """Gradient checkpointing, k-bit preparation and the LoRA adapter, as the plan says."""
    config = run.config
    ckpt = config.grad_ckpt and not config.sharding.is_fsdp  # FSDP checkpoints layers itself
    if config.method == Method.QLORA:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ckpt,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not config.uses_adapters:
        return model
    from peft import LoraConfig, get_peft_model
    targets = target_modules(model_spec(run, model), config.lora_targets)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")
    # FSDP1 flattens a layer's frozen and trainable weights into one tensor of one dtype: in a bf16 model
    # the adapters stay bf16 (peft would make them fp32, and FSDP1 refuses the mix)
    one_dtype = config.sharding is Sharding.FSDP1 and config.precision is Precision.BF16_TRUE
    try:
        return get_peft_model(model, lora, autocast_adapter_dtype=not one_dtype)
    except ValueError as err:
        raise InputError(f"LoRA targets {', '.join(targets)} do not match the model: {str(err).splitlines()[0]}") from None


def model_spec(run: Run, model):
    """The architecture of the loaded model (its folder's config.json), for LoRA module names."""
    from profiles.hf_config import spec_from_hf_config
    where, local = model_location(run)
    if local:
        return resolve_model(where).spec
    return spec_from_hf_config(model.config.to_dict(), run.plan["model"])


def make_optimizer(config: TrainConfig, model, args: argparse.Namespace):
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.lr or (2e-4 if config.uses_adapters else 1e-5)
    if emit.deepspeed_owns_optimizer(config):  # DeepSpeed builds its CPU Adam from the JSON
        from accelerate.utils import DummyOptim
        return DummyOptim(params, lr=lr, weight_decay=args.weight_decay)
    return record(config.optimizer).build(params, lr=lr, weight_decay=args.weight_decay)


def vocab_size(model) -> int:
    return model.get_input_embeddings().num_embeddings


# -- data -------------------------------------------------------------------------------------------

def make_batches(run: Run, vocab: int) -> tuple[int, Iterator[dict]]:
    """(optimizer steps, this rank's micro-batches made as needed, the longest first)."""
    config, args = run.config, run.args
    if not args.data:
        steps = args.steps or DEFAULT_STEPS
        return steps, synthetic_batches(steps * config.grad_accum, config.micro_batch, config.seq_len, vocab,
                                        args.seed + run.rank)
    rows = text_rows(run, vocab)
    steps = args.steps or max(1, len(rows) // (config.micro_batch * config.grad_accum * run.world))
    count = steps * config.grad_accum

    def picks(i: int) -> list[dict]:  # micro-batch i of this rank; ranks interleave, rows repeat as needed
        first = i * config.micro_batch
        return [rows[((first + j) * run.world + run.rank) % len(rows)] for j in range(config.micro_batch)]
    sizes = [sum(row["length"] for row in picks(i)) for i in range(count)]
    return steps, (collate(picks(i)) for i in longest_first(sizes))


def synthetic_batches(count: int, micro_batch: int, seq_len: int, vocab: int, seed: int) -> Iterator[dict]:
    """Random tokens, all seq_len long (so every batch is the longest)."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        ids = torch.randint(0, vocab, (micro_batch, seq_len), generator=generator)
        yield {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids), "tokens": ids.numel()}


def text_rows(run: Run, vocab: int) -> list[dict]:
    """Tokenized --data, packed into seq_len chunks (or padded to seq_len with --no-pack)."""
    import torch
    tokenizer = load_tokenizer(run)
    texts = read_texts(Path(run.args.data))
    seq = run.config.seq_len
    encoded = [ids for ids in (tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts) if ids]
    if not encoded:
        raise InputError(f"{opt('data')} {run.args.data} holds no text to train on.")
    if run.args.pack:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        stream = [tok for ids in encoded for tok in ids + eos]
        chunks = [stream[i:i + seq] for i in range(0, len(stream) - seq + 1, seq)] or [stream[:seq]]
        return [_row(torch.tensor(c), torch.ones(len(c), dtype=torch.long), seq, 0) for c in chunks]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return [_row(torch.tensor(ids[:seq]), torch.ones(len(ids[:seq]), dtype=torch.long), seq, pad) for ids in encoded]


def _row(ids, mask, seq_len: int, pad: int) -> dict:
    """Pad one sequence to seq_len; padding is masked out of attention and loss."""
    import torch
    missing = seq_len - len(ids)
    labels = torch.cat([ids, torch.full((missing,), -100, dtype=torch.long)])
    return {"input_ids": torch.cat([ids, torch.full((missing,), pad, dtype=torch.long)]), "labels": labels,
            "attention_mask": torch.cat([mask, torch.zeros(missing, dtype=torch.long)]), "length": len(ids)}


def load_tokenizer(run: Run):
    from transformers import AutoTokenizer
    where, _ = model_location(run)
    try:
        return AutoTokenizer.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{opt('data')} needs the model's tokenizer, and none loads from {where} "
                        f"({str(err).splitlines()[0]}).") from None


def read_texts(path: Path) -> list[str]:
    """JSONL rows' "text" field, or the lines of a plain text file."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise InputError(f"cannot read {opt('data')} {path}: {err.strerror or err}.") from None
    if path.suffix not in (".jsonl", ".json"):
        return lines
    try:
        return [json.loads(line)["text"] for line in lines]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{path} must hold one JSON object with a \"text\" field per line.") from None


def collate(rows: list[dict]) -> dict:
    import torch
    batch = {key: torch.stack([row[key] for row in rows]) for key in ("input_ids", "labels", "attention_mask")}
    batch["tokens"] = sum(row["length"] for row in rows)
    return batch


def longest_first(sizes: list[int]) -> list[int]:
    """Batch order with the one holding the most real tokens first, so its memory peak shows at once."""
    if not sizes:
        return []
    longest = max(range(len(sizes)), key=sizes.__getitem__)
    return [longest, *(i for i in range(len(sizes)) if i != longest)]


# -- training ---------------------------------------------------------------------------------------

def loop(run: Run, accelerator, model, optimizer, steps: int, batches: Iterator[dict]) -> None:
    """Optimizer steps of `grad_accum` micro-batches each; loss per step to losses.jsonl."""
    from tqdm.auto import tqdm
    log = LossLog(run.out_dir / LOSSES_NAME, run.is_main)
    local_rank = int(os.environ.get("LOCAL_RANK", run.rank))
    bar = tqdm(total=steps, desc="training", disable=local_rank != 0, dynamic_ncols=True)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        run.step = step
        loss = one_step(run, accelerator, model, optimizer, [next(batches) for _ in range(run.config.grad_accum)])
        run.losses.append(loss)
        run.seconds = time.perf_counter() - start
        log.write(step, loss, run.seconds)
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)
        if step + 1 == min(FIRST_STEPS, steps):
            run.measured = measure(run, accelerator, step + 1)
    bar.close()
    run.step = steps


def one_step(run: Run, accelerator, model, optimizer, micro_batches: list[dict]) -> float:
    """One optimizer step; returns the mean loss over its micro-batches and all ranks."""
    total, tracking = 0.0, run.tracking
    tracking.step_begins()
    for batch in micro_batches:
        inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k != "tokens"}
        with accelerator.accumulate(model):
            tracking.phase("forward")
            loss = model(**inputs).loss
            tracking.phase("backward")
            accelerator.backward(loss)   # with DeepSpeed, its optimizer step too
            tracking.gradients_ready()
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), emit.GRADIENT_CLIPPING)
            optimizer.step()
            tracking.optimizer_stepped()
            optimizer.zero_grad(set_to_none=True)
        total += loss.detach().float()
        run.tokens += batch["tokens"] * run.world
    tracking.step_done()
    return mean_over_ranks(total / len(micro_batches), run)


def mean_over_ranks(value, run: Run) -> float:
    import torch.distributed as dist
    if run.world > 1:
        dist.all_reduce(value)
        value = value / run.world
    return float(value)


class LossLog:
    """losses.jsonl, one line per optimizer step, written by the main process."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def write(self, step: int, loss: float, seconds: float) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"step": step + 1, "loss": loss, "time_s": round(seconds, 4)}) + "\n")


# -- measuring --------------------------------------------------------------------------------------

def measure(run: Run, accelerator, after_steps: int) -> dict:
    """Peaks so far on every rank (CUDA allocator and NVML, or process RSS on CPU)."""
    import torch.distributed as dist
    mine = {**local_peaks(accelerator.device), "rank": run.rank}
    ranks = [mine]
    if run.world > 1:
        ranks = [None] * run.world
        dist.all_gather_object(ranks, mine)
    return {"after_steps": after_steps, "device": mine["device"], "per_rank": ranks,
            **{k: max((r[k] for r in ranks if r.get(k) is not None), default=None)
               for k in ("allocated_peak_bytes", "reserved_peak_bytes", "nvml_used_bytes", "rss_peak_bytes")}}


def local_peaks(device) -> dict:
    import torch
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    if device.type != "cuda":
        return {"device": device.type, "rss_peak_bytes": rss}
    return {"device": "cuda", "gpu": torch.cuda.get_device_name(device), "rss_peak_bytes": rss,
            "allocated_peak_bytes": torch.cuda.max_memory_allocated(device),
            "reserved_peak_bytes": torch.cuda.max_memory_reserved(device),
            "nvml_used_bytes": nvml_used(device)}


def nvml_used(device) -> int | None:
    """NVML's used memory of this process's card (CUDA context and all); None without pynvml."""
    try:
        import pynvml
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v for v in visible.split(",") if v.strip()]
        index = int(ids[device.index or 0]) if ids and ids[device.index or 0].isdigit() else (device.index or 0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:  # no driver, no pynvml, or UUIDs in CUDA_VISIBLE_DEVICES: the number is optional
        return None


def param_bytes_by_dtype(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).replace("torch.", "")
        out[key] = out.get(key, 0) + p.numel() * p.element_size()
    return out


# -- ending -----------------------------------------------------------------------------------------

# what GPU OOMs say when they do not come as torch.OutOfMemoryError: a raw CUDA or HIP allocation (NCCL,
# bitsandbytes, custom kernels: "CUDA error: out of memory"), cuBLAS / cuDNN failing to allocate their handles
OOM_WORDS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "cudaerrormemoryallocation")


def is_out_of_memory(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, is the GPU running out of memory."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "OutOfMemoryError" or any(word in str(err).lower() for word in OOM_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def out_of_memory(run: Run, accelerator, err: BaseException) -> int:
    """Report the OOM (every rank may hit it alone) and leave the signal the launcher relaunches on."""
    run.status, run.error = "oom", str(err).splitlines()[0]
    early = run.phase == "training" and run.step < FIRST_STEPS  # a smaller micro-batch cannot shrink the weights
    if run.measured is None:
        run.measured = {"after_steps": run.step, **local_peaks(accelerator.device)}
    write_report(run)
    signal = os.environ.get("FITPLAN_OOM_FILE") or str(run.out_dir / OOM_SIGNAL)
    if early:
        planfile.write_text(signal, json.dumps({"step": run.step, "micro_batch": run.config.micro_batch}) + "\n", force=True)
    where = f"at step {run.step + 1} with micro-batch {run.config.micro_batch}" if run.phase == "training" else "while loading the model"
    print(f"error: out of memory {where}.", file=sys.stderr)
    return OOM_EXIT if early else 1


def save(accelerator, model, run: Run) -> str:
    """The adapter (or full model) as safetensors in <out>/adapter or <out>/model."""
    accelerator.wait_for_everyone()
    target = run.out_dir / ("adapter" if run.config.uses_adapters else "model")
    state = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(target, is_main_process=run.is_main, state_dict=state)
    return str(target)


def finish(run: Run, accelerator) -> None:
    if run.measured is None:  # interrupted before the first steps were measured: no collectives now
        run.measured = {"after_steps": run.step, **local_peaks(accelerator.device)}
    if run.is_main:
        write_report(run)
    accelerator.end_training()


def write_report(run: Run) -> Path:
    steps = len(run.losses)
    timed = run.seconds if steps else 0.0
    report = {
        "status": run.status, "plan": str(Path(run.args.plan).resolve()), "model": run.plan["model"],
        "config": run.plan["config"], "predicted": {"per_gpu": run.plan.get("per_gpu")},
        "measured": run.measured, "steps": steps, "tokens": run.tokens,
        "tokens_per_s": round(run.tokens / timed, 2) if timed else None, "seconds": round(run.seconds, 3),
        "losses": run.losses, "final_loss": run.losses[-1] if run.losses else None,
        "oom_step": run.step + 1 if run.status == "oom" and run.phase == "training" else None,
        "phase": run.phase, "error": run.error,
        "saved": run.saved, "versions": versions(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **run.extra,
    }
    return planfile.write_text(run.out_dir / REPORT_NAME, json.dumps(report, indent=2, default=str) + "\n", force=True)


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "deepspeed", "fitplan"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
