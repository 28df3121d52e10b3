"""Measure the memory of real training steps of a Hugging Face causal LM, on fake tensors, CPU or CUDA.

The model is built from `hf_config_dict(ModelSpec)` on the meta device (peft adapters and the QLoRA stand-in
applied there), then materialised with `to_empty`: inside `FakeTensorMode` for device="fake" (a 7B model costs
no memory), on the CPU for device="cpu" and on the GPU for device="cuda". Each step runs forward with labels
(loss inside the model), backward, `optimizer.step()` and `zero_grad(set_to_none=True)` under
`measure.tracker.StorageTracker`; the last step is reported (step 1 has no optimizer states yet).

Stand-ins, where the real thing cannot run on fake tensors (each one is named in `Measurement.notes`):
  - QLoRA: `measure.fake4bit.FakeLinear4bit` in place of bitsandbytes' Linear4bit (same bytes, double
    quantization included, and bitsandbytes' dequantize-then-matmul compute).
  - 8-bit and paged AdamW: bitsandbytes' own optimizer classes, whose `init_state` allocates the state, with
    the update replaced by an in-place one that allocates nothing, as bitsandbytes' fused kernels do.
  - attn="flash": transformers' flash path on stand-ins for flash-attn 2's kernels (`measure.flash`), which save
    what they save; measure_hf_config (no ModelSpec) measures it as SDPA.
  - Dropout (fake/cpu): `torch.native_dropout`, CUDA's path, which saves a bool mask (`cuda_dropout`).

`measure_hf_config(config_dict, cfg)` measures the same way from a raw config.json dict of any model_type
transformers can build (no ModelSpec: LoRA targets are peft's "all-linear" or module names).

Usage: python -m measure.harness meta-llama/Llama-2-7b-hf --method lora --seq-len 2048 --json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from measure import fake4bit   # imports bitsandbytes now: its module-level tables must not be made fake
from measure.batching import batch_inputs, mask_path
from measure.flash import emulated_flash
from measure.liger_kernels import apply_liger
from measure.loss_kernels import fused_loss
from measure.offload import offloaded_activations
from measure.tracker import COMPONENTS, PHASES, StorageTracker
from planner.config import TrainConfig
from planner.enums import ActivationOffload, Attention, Loop, Loss, Method, Optimizer, Precision
from planner.optimizers import PAGED_MIN_NUMEL, record
from planner.params import target_modules
from profiles.spec import ModelSpec
from profiles.hf_config import hf_config_dict, transformers_ready
from profiles.models import from_name

MODEL_DTYPE = {Precision.BF16_TRUE: torch.bfloat16, Precision.BF16_MIXED: torch.float32,
               Precision.FP16_MIXED: torch.float32, Precision.FP32: torch.float32}
AUTOCAST_DTYPE = {Precision.BF16_MIXED: torch.bfloat16, Precision.FP16_MIXED: torch.float16}
QLORA_COMPUTE_DTYPE = {Precision.FP16_MIXED: torch.float16, Precision.FP32: torch.float32}  # else bf16
LR = 1e-4


@dataclass
class Measurement:
    """One measured configuration; sizes in bytes, of the last step unless named otherwise."""

    allocated_peak_bytes: int
    peak_phase: str
    components: dict[str, int]
    step1_peak_bytes: int
    phase_peaks: dict[str, int]
    params_total: int
    params_trainable: int
    adapter_dtype: str | None
    seconds: float
    notes: list[str]
    device: str
    model: str = ""
    config: dict = field(default_factory=dict)
    tracked_peak_bytes: int = 0          # the tracker's peak (sum of components); = allocated on fake/cpu
    paged_bytes: int = 0                 # part of optimizer_states in CUDA managed memory (paged optimizers)
    reserved_peak_bytes: int | None = None   # CUDA only
    cuda_context_bytes: int | None = None    # CUDA only: device memory in use beyond torch's reserve
    nvml_used_bytes: int | None = None       # CUDA only, when NVML answers

    def to_dict(self) -> dict:
        return asdict(self)


# -- building ------------------------------------------------------------------------------------------
def hf_config(spec: ModelSpec):
    return hf_config_from_dict(hf_config_dict(spec))


def hf_config_from_dict(config: dict, notes: list[str] | None = None):
    """The transformers config of a config.json dict (any model_type transformers knows); published values
    transformers 5 refuses are put as it accepts them (`transformers_ready`), each with a note."""
    from transformers import AutoConfig
    config, fixes = transformers_ready(config)
    if notes is not None:
        notes.extend(fixes)
    data = dict(config)
    conf = AutoConfig.for_model(data.pop("model_type"), **data)
    conf.use_cache = False   # training: no KV cache
    return conf


def attn_implementation(spec: ModelSpec, cfg: TrainConfig, notes: list[str]) -> str:
    from planner.activations import attention_kernel
    kernel = attention_kernel(spec, cfg)
    if kernel is not cfg.attn:
        notes.append(f"{spec.short_name} has no {cfg.attn.value} attention in transformers: measured with {kernel.value}")
    if kernel is Attention.FLASH:
        notes.append("attn=flash: transformers' flash path on stand-ins for flash-attn 2's kernels "
                     "(measure/flash.py: what they save)")
        return "sdpa"   # built as SDPA; emulated_flash switches it to the flash path
    return kernel.value


def config_attn_implementation(cfg: TrainConfig, notes: list[str]) -> str:
    """`attn_implementation` without a ModelSpec (a raw config): cfg.attn as it is, flash measured as SDPA."""
    if cfg.attn is Attention.FLASH:
        notes.append("attn=flash measured with SDPA (flash-attn is not installed here; on CUDA SDPA runs the "
                     "flash kernel for 16-bit inputs: output plus an fp32 log-sum-exp, no s x s scores)")
        return "sdpa"
    return cfg.attn.value


def build_model(spec: ModelSpec, cfg: TrainConfig, notes: list[str]) -> tuple[nn.Module, int]:
    """The model on the meta device, ready to train as `cfg` says; returns it and the base parameter count."""
    targets = target_modules(spec, cfg.lora_targets) if cfg.uses_adapters else None
    return build_from_config(hf_config(spec), cfg, notes, targets,
                             attn=lambda notes_: attn_implementation(spec, cfg, notes_))


def build_from_config(conf, cfg: TrainConfig, notes: list[str], target_modules: str | list[str] | None,
                      attn=None) -> tuple[nn.Module, int]:
    """`build_model` from a transformers config; `target_modules` as peft takes them ("all-linear" or names);
    `attn(notes)` picks the attention implementation (default: cfg.attn, flash measured as SDPA)."""
    from transformers import AutoModelForCausalLM
    attn = attn or (lambda notes_: config_attn_implementation(cfg, notes_))
    for key in ("attn_pdrop", "attention_dropout"):  # GPT-2 spells it one way, Seed-OSS the other
        if getattr(conf, key, 0) and cfg.attn is not Attention.EAGER:
            # CUDA's fused SDPA kernels apply attention dropout inside and keep no mask; the CPU falls back
            # to the math path, which would keep one: measure what CUDA keeps
            setattr(conf, key, 0.0)
            notes.append("attention dropout set to 0: CUDA's fused SDPA keeps no dropout mask, the CPU's math path would")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(conf, dtype=MODEL_DTYPE[cfg.precision],
                                                 attn_implementation=attn(notes))
    params_total = sum(p.numel() for p in model.parameters())
    if cfg.method is Method.QLORA:
        prepare_qlora(model, cfg, notes)
    elif cfg.grad_ckpt:
        enable_checkpointing(model)
    if cfg.uses_adapters:
        model = lora_wrap(model, cfg, target_modules)
    return model, params_total


def enable_checkpointing(model: nn.Module) -> None:
    # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias); both also hook the
    # input embeddings to require grad, as peft would
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_qlora(model: nn.Module, cfg: TrainConfig, notes: list[str]) -> None:
    """What `from_pretrained(quantization_config=nf4)` + peft's `prepare_model_for_kbit_training` do."""
    from peft import prepare_model_for_kbit_training
    compute = QLORA_COMPUTE_DTYPE.get(cfg.precision, torch.bfloat16)
    count = fake4bit.quantize_linears(model, compute, cfg.double_quant, keep=(model.get_output_embeddings(),))
    model.is_loaded_in_4bit = True   # what the bitsandbytes quantizer sets; peft reads it
    # peft's own function: freezes everything, casts every fp16/bf16 parameter that is not Params4bit to fp32
    # (embeddings, norms, lm_head, biases) and, when asked, enables checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.grad_ckpt,
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
    notes.append(f"QLoRA: {count} decoder linears replaced by the NF4 stand-in (measure/fake4bit.py), "
                 f"compute {str(compute).removeprefix('torch.')}, double quantization {cfg.double_quant}; "
                 "peft prepare_model_for_kbit_training applied (non-quantized fp16/bf16 parameters cast to fp32)")


def apply_lora(model: nn.Module, spec: ModelSpec, cfg: TrainConfig) -> nn.Module:
    return lora_wrap(model, cfg, target_modules(spec, cfg.lora_targets))


def lora_wrap(model: nn.Module, cfg: TrainConfig, target_modules: str | list[str]) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=target_modules, task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, lora)   # peft's defaults, including autocast_adapter_dtype=True


def hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (the one that owns lm_head and computes the loss)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# -- optimizers ----------------------------------------------------------------------------------------
def bnb_standin(base: type) -> type:
    """A bitsandbytes optimizer whose state is allocated by its own `init_state`, updated in place."""

    class StandIn(base):
        _cpu_paged_warned = True   # fake tensors live on "cpu": skip bitsandbytes' CPU fallback warning

        @torch.no_grad()
        def update_step(self, group, p, gindex, pindex):
            self.state[p]["step"] += 1
            p.add_(p.grad, alpha=-group["lr"])   # bitsandbytes' fused kernels allocate nothing either

    StandIn.__name__ = f"StandIn{base.__name__}"
    return StandIn


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: str, notes: list[str]) -> torch.optim.Optimizer:
    """Build outside FakeTensorMode: bitsandbytes fills its quantile maps with real data here."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = record(cfg.optimizer)
    if not optimizer.cls.startswith("bitsandbytes") or device == "cuda":
        return optimizer.build(params, lr=LR)
    notes.append(f"{cfg.optimizer.value}: bitsandbytes {optimizer.cls.split(':')[1]} allocates its state (init_state), "
                 "the update is an in-place stand-in" + ("; states it would page (numel >= 1e5) are in paged_bytes"
                                                        if optimizer.paged else ""))
    import bitsandbytes as bnb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bnb_standin(getattr(bnb.optim, optimizer.cls.split(":")[1]))(params, lr=LR)


def state_tensors(opt: torch.optim.Optimizer):
    """(tensor, paged) for every optimizer state tensor; paged as bitsandbytes' get_state_buffer decides."""
    paged_opt = getattr(opt, "is_paged", False)
    for p, state in opt.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                yield value, paged_opt and key in ("state1", "state2") and p.numel() >= PAGED_MIN_NUMEL


# -- running -------------------------------------------------------------------------------------------
class Backend:
    """Where tensors live and how peaks are read: fake tensors, real CPU, or CUDA (plus torch's counters)."""

    def __init__(self, device: str) -> None:
        if device not in ("fake", "cpu", "cuda"):
            raise ValueError(f"device must be fake, cpu or cuda, not {device!r}")
        self.name, self.torch_device = device, ("cuda" if device == "cuda" else "cpu")
        self.fake = None
        if device == "fake":
            from torch._subclasses.fake_tensor import FakeTensorMode
            self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.cuda_phase_peaks: dict[str, int] = {}
        self.cuda_reserved_peak = 0

    def mode(self):
        return self.fake if self.fake is not None else contextlib.nullcontext()

    def autocast(self, cfg: TrainConfig):
        dtype = AUTOCAST_DTYPE.get(cfg.precision)
        return torch.autocast(self.torch_device, dtype=dtype) if dtype else contextlib.nullcontext()

    def start_phase(self) -> None:
        if self.name == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def end_phase(self, phase: str) -> None:
        if self.name == "cuda":
            torch.cuda.synchronize()
            self.cuda_phase_peaks[phase] = torch.cuda.max_memory_allocated()
            self.cuda_reserved_peak = max(self.cuda_reserved_peak, torch.cuda.max_memory_reserved())


def watch_logits(model: nn.Module, tracker: StorageTracker) -> None:
    """Storages made by lm_head and the loss (forward, and backward until lm_head's input gradient) are logits."""
    inner = hf_model(model)

    def enter(_module, args):
        tracker.region = "logits"
        if args[0].requires_grad:
            args[0].register_hook(lambda _grad: setattr(tracker, "region", None))

    inner.get_output_embeddings().register_forward_pre_hook(enter)
    inner.register_forward_hook(lambda *_: setattr(tracker, "region", None))


def materialize(model: nn.Module, device: str) -> None:
    """`to_empty` (values are never read for anything but shapes), keeping tied parameters tied:
    `to_empty` makes one new tensor per owning module, which would count tied embeddings twice."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((module, name))
    model.to_empty(device=device)
    for (first, first_name), *others in owners.values():
        for module, name in others:
            module._parameters[name] = first._parameters[first_name]


def contiguous_positions():
    """The mask path of unpacked rows (measure/batching.py), whatever the device."""
    return mask_path(TrainConfig())


def cuda_dropout():
    """Dropout as CUDA runs it: `native_dropout`, which keeps a 1-byte bool mask for backward. The CPU's
    `F.dropout` instead multiplies by a bernoulli noise tensor in the data's dtype and saves that (2-4x the
    bytes); the CPU has a `native_dropout` kernel too, so route training dropout through it. A patch, not a
    function mode: checkpointing's recompute must take the same path."""
    from unittest import mock
    original = nn.functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if training and 0 < p < 1 and not inplace:
            return torch.native_dropout(input, p, True)[0]
        return original(input, p, training, inplace)
    return mock.patch.object(nn.functional, "dropout", dropout)


def tag_model(model: nn.Module, tracker: StorageTracker) -> None:
    for module in model.modules():
        quant = isinstance(module, fake4bit.FakeLinear4bit)
        tracker.tag(module.buffers(recurse=False), "quant_constants" if quant else "weights")
    for name, p in model.named_parameters():
        tracker.tag([p], "adapters" if "lora_" in name else "weights")


def train_step(model, opt, tracker: StorageTracker, backend: Backend, cfg: TrainConfig, vocab: int) -> None:
    def phase(name: str) -> None:
        if tracker.phase in PHASES:
            backend.end_phase(tracker.phase)
        tracker.phase = name
        backend.start_phase()

    phase("data")
    inputs = batch_inputs(cfg, torch.randint(0, vocab, (cfg.micro_batch, cfg.seq_len), device=backend.torch_device))
    offloading = cfg.activation_offload is not ActivationOffload.NONE
    with offloaded_activations(model if offloading else None, hf_model(model).get_output_embeddings()):
        phase("forward")
        with backend.autocast(cfg):
            outputs, loss = forward_loss(model, cfg, inputs, tracker)
        phase("backward")
        tracker.region = "logits"   # loss and lm_head backward first
        loss.backward()
        del loss, outputs
    tracker.region = None
    tracker.tag([p.grad for p in model.parameters() if p.grad is not None], "gradients")
    phase("optimizer_step")
    opt.step()
    for tensor, paged in state_tensors(opt):
        tracker.tag([tensor], "optimizer_states", paged=paged)
    opt.zero_grad(set_to_none=True)
    phase("done")


def forward_loss(model, cfg: TrainConfig, inputs: dict, tracker: StorageTracker):
    """(what the loop keeps, the loss): Trainer drops the outputs before backward, a plain loop keeps them (and
    their logits); a fused loss (measure/loss_kernels.py) makes no logits."""
    if cfg.loss is not Loss.STANDARD:
        inner = hf_model(model)
        hidden_hook = inner.model.register_forward_hook(lambda _m, _a, out: _logits_region(out.last_hidden_state, tracker))
        try:
            return None, fused_loss(cfg, inner, dict(inputs))
        finally:
            hidden_hook.remove()
    outputs = model(**inputs)
    return (outputs if cfg.loop is Loop.PLAIN else None), outputs.loss


def _logits_region(hidden, tracker: StorageTracker) -> None:
    """A fused loss's storages count as logits, from its forward until the hidden states' gradient."""
    tracker.region = "logits"
    if hidden.requires_grad:
        hidden.register_hook(lambda _grad: setattr(tracker, "region", None))


def measure(spec: ModelSpec, cfg: TrainConfig, steps: int = 2, device: str = "fake") -> Measurement:
    """Run `steps` training steps of `spec` as `cfg` says and measure the last one (see module docstring)."""
    return _measure(lambda notes: build_model(spec, cfg, notes), spec.name, spec.vocab, cfg, steps, device,
                    kernels=lambda model, notes: kernels_of(model, spec, cfg, notes))


def kernels_of(model: nn.Module, spec: ModelSpec, cfg: TrainConfig, notes: list[str]):
    """The context to run `model` in: flash-attention's stand-ins (measure/flash.py) and Liger's kernels
    (measure/liger_kernels.py) when cfg asks."""
    from planner.activations import attention_kernel
    stack = contextlib.ExitStack()
    if attention_kernel(spec, cfg) is Attention.FLASH:
        stack.enter_context(emulated_flash(model))
    if cfg.liger_kernels:
        stack.enter_context(apply_liger(model, spec, notes))
    return stack


def measure_hf_config(config: dict, cfg: TrainConfig, steps: int = 2, device: str = "fake", name: str = "",
                      target_modules: str | list[str] | None = None) -> Measurement:
    """`measure` for a raw config.json dict, built by transformers as it is (AutoConfig.for_model).

    LoRA targets: `target_modules` as peft takes them; by default peft's "all-linear" when cfg.lora_targets is
    ("all-linear",), else cfg.lora_targets taken as module names. The token ids span the built embedding."""
    if target_modules is None:
        targets = tuple(cfg.lora_targets)
        target_modules = "all-linear" if targets == ("all-linear",) else list(targets)
    return _measure(lambda notes: build_from_config(hf_config_from_dict(config, notes), cfg, notes, target_modules),
                    name or str(config.get("model_type")), None, cfg, steps, device)


def _measure(build, name: str, vocab: int | None, cfg: TrainConfig, steps: int, device: str,
             kernels=lambda model, notes: contextlib.nullcontext()) -> Measurement:
    start, notes = time.perf_counter(), []
    backend = Backend(device)
    context = cuda_context_bytes() if device == "cuda" else None
    model, params_total = build(notes)   # counted before quantization and adapters
    patched = kernels(model, notes)
    if vocab is None:
        vocab = hf_model(model).get_input_embeddings().num_embeddings
    with backend.mode():
        materialize(model, backend.torch_device)
    model.train()
    opt = make_optimizer(model, cfg, device, notes)
    tracker = StorageTracker()
    watch_logits(model, tracker)
    step_peaks = []
    dropout = contextlib.nullcontext()
    if device != "cuda":
        dropout = cuda_dropout()
        notes.append("dropout through torch.native_dropout, as on CUDA (a 1-byte mask; the CPU's F.dropout saves "
                     "noise as wide as the data)")
    with mask_path(cfg), patched, dropout, backend.mode(), tracker:
        tag_model(model, tracker)
        for _ in range(steps):
            tracker.reset_peak()
            backend.cuda_phase_peaks = {}
            train_step(model, opt, tracker, backend, cfg, vocab)
            step_peaks.append(tracker.peak.nbytes)
    return _result(name, cfg, model, params_total, tracker, backend, step_peaks, notes, start, context)


def _result(name, cfg, model, params_total, tracker, backend, step_peaks, notes, start, context) -> Measurement:
    phase_peaks = {p: tracker.phase_peaks.get(p, 0) for p in PHASES}
    allocated, peak_phase = tracker.peak.nbytes, tracker.peak.phase
    extra = {}
    if backend.name == "cuda":
        cuda = {p: backend.cuda_phase_peaks.get(p, 0) for p in PHASES}
        peak_phase = max(cuda, key=cuda.get)
        allocated, phase_peaks = cuda[peak_phase], cuda
        used, nvml = cuda_used_bytes()
        extra = dict(reserved_peak_bytes=backend.cuda_reserved_peak, nvml_used_bytes=nvml,
                     cuda_context_bytes=used - torch.cuda.memory_reserved())
        notes.append(f"CUDA context right after init: {context} B; cuda_context_bytes is after the run "
                     "(includes cuBLAS/cuDNN handles and loaded kernels)")
    notes.append("no fp32 master copies: *-mixed trains the fp32 model under autocast, as Trainer/accelerate do")
    if cfg.precision is Precision.FP16_MIXED:
        notes.append("fp16-mixed without a GradScaler (its state is a few scalars; unscaling is in place)")
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    return Measurement(
        allocated_peak_bytes=allocated, peak_phase=peak_phase, components=tracker.components(),
        step1_peak_bytes=step_peaks[0], phase_peaks=phase_peaks, params_total=params_total,
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        adapter_dtype=str(lora[0].dtype).removeprefix("torch.") if lora else None,
        seconds=round(time.perf_counter() - start, 3), notes=notes, device=backend.name, model=name,
        config=cfg.to_dict(), tracked_peak_bytes=tracker.peak.nbytes, paged_bytes=tracker.paged_bytes(), **extra)


def cuda_context_bytes() -> int:
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    used, _ = cuda_used_bytes()
    return used - torch.cuda.memory_reserved()


def cuda_used_bytes() -> tuple[int, int | None]:
    """Device memory in use per the driver (mem_get_info), and per NVML when it answers."""
    free, total = torch.cuda.mem_get_info()
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        nvml = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:   # no NVML (driver library missing): leave it out
        nvml = None
    return total - free, nvml


# -- command line --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m measure.harness", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="catalog name or Hugging Face id")
    parser.add_argument("--method", default="lora", choices=[m.value for m in Method])
    parser.add_argument("--precision", default="bf16-true", choices=[p.value for p in Precision])
    parser.add_argument("--optimizer", default="adamw", choices=[o.value for o in Optimizer])
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--attn", default="sdpa", choices=[a.value for a in Attention])
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-targets", default="all-linear")
    parser.add_argument("--no-double-quant", action="store_true")
    parser.add_argument("--device", default="fake", choices=["fake", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args(argv)
    cfg = TrainConfig(method=args.method, precision=args.precision, optimizer=args.optimizer,
                      micro_batch=args.micro_batch, seq_len=args.seq_len, grad_ckpt=args.grad_ckpt,
                      attn=args.attn, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                      lora_targets=tuple(t.strip() for t in args.lora_targets.split(",")),
                      double_quant=not args.no_double_quant)
    result = measure(from_name(args.model), cfg, steps=args.steps, device=args.device)
    print(json.dumps(result.to_dict(), indent=2) if args.json else summary(result))


def summary(m: Measurement) -> str:
    gib = lambda n: f"{n / 2**30:8.3f} GiB"  # noqa: E731
    lines = [f"{m.model} on {m.device}: peak {gib(m.allocated_peak_bytes)} in {m.peak_phase} ({m.seconds:.1f} s)"]
    lines += [f"  {p:15s}{gib(m.phase_peaks[p])}" for p in PHASES]
    lines += [f"  {c:17s}{gib(m.components[c])}" for c in COMPONENTS if m.components[c]]
    lines += [f"  note: {n}" for n in m.notes]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
