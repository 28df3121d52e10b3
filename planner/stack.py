"""The software a step runs on, as far as its speed depends on it: `Stack`, and the dtypes a configuration
computes in. fitplan's plans run Hugging Face transformers + peft in eager PyTorch (`HF`); the measured
runs in `benchmarks/` ran other stacks (fused norms, torch.compile, selective checkpointing), described
with the same fields so the same mechanisms predict them.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.config import TrainConfig
from planner.enums import Method, Precision
from planner.states import deepspeed_16bit

EAGER, FUSED, COMPILED = "eager", "fused", "compiled"
# FlashAttention-2 is "1.3-2.5x faster than FlashAttention in Triton" (Dao, arXiv:2307.08691, abstract): the
# Triton kernel (llm-foundry's attn_impl=triton) runs at ~1/1.8 of FA2 (the geometric mean).
TRITON_FLASH_SPEED = 0.55


@dataclass(frozen=True)
class Stack:
    kernels: str = EAGER                    # eager: transformers' modules op by op; fused: fused norm kernels,
                                            # no fp32 upcasts; compiled: torch.compile fuses elementwise chains
    recompute_forward: float | None = None  # share of each layer's forward recomputed (None: 1 with grad_ckpt)
    recompute_matmuls: float | None = None  # share of its matmuls among that (selective per-op checkpointing)
    shard_group: int | None = None          # GPUs parameters are sharded over (HSDP: one node); None: all
    host_bound: bool = True                 # the Python loop dispatches every kernel (not CUDA graphs)
    autocast: bool | None = None            # torch.autocast around the step; None: as fitplan's recipe (*-mixed)
    adapters_16bit: bool | None = None      # LoRA weights and matmuls 16-bit; None: under autocast or DeepSpeed
    kbit_prepare: bool = True               # QLoRA through peft's prepare_model_for_kbit_training (fp32 casts)
    lora_dropout: float = 0.0               # fitplan's recipe sets 0 (nn.Identity); others 0.05-0.1
    attention_speed: float = 1.0            # the flash kernel's speed relative to FlashAttention-2

    def recompute(self, cfg: TrainConfig) -> tuple[float, float]:
        """(share of the forward recomputed, share of the matmuls within it)."""
        share = self.recompute_forward if self.recompute_forward is not None else float(cfg.grad_ckpt)
        matmuls = self.recompute_matmuls if self.recompute_matmuls is not None else 1.0
        return share, matmuls


HF = Stack()


def compute_bytes(cfg: TrainConfig) -> int:
    """Bytes of activations and matmul operands: 4 in fp32, else 2."""
    return 4 if cfg.precision is Precision.FP32 else 2


def matmuls_fp32(cfg: TrainConfig) -> bool:
    """fp32 training runs plain FP32 matmuls: PyTorch leaves TF32 off for matmuls by default
    (torch.backends.cuda.matmul.allow_tf32 = False since 1.12)."""
    return cfg.precision is Precision.FP32


def autocasts(cfg: TrainConfig, stack: Stack = HF) -> bool:
    """fitplan's recipe autocasts for *-mixed precisions (Accelerate's mixed_precision), never for bf16-true."""
    if stack.autocast is not None:
        return stack.autocast
    return cfg.precision in (Precision.BF16_MIXED, Precision.FP16_MIXED)


def stream_bytes(cfg: TrainConfig, stack: Stack = HF) -> int:
    """The residual stream's dtype. fp32 when the weights it meets are fp32: *-mixed loads fp32 weights (the
    norms' fp32 weights promote their outputs), QLoRA's prepare_model_for_kbit_training casts every
    non-quantized weight to fp32. FSDP's mixed-precision policy computes with 16-bit parameters, and so do
    DeepSpeed and the fused stacks."""
    if stack.kernels != EAGER or deepspeed_16bit(cfg) or cfg.sharding.is_fsdp:
        return compute_bytes(cfg)
    if cfg.method is Method.QLORA:
        return 4 if stack.kbit_prepare else compute_bytes(cfg)
    if cfg.precision is Precision.BF16_TRUE or stack.autocast:
        return 2
    return 4


def adapters_fp32(cfg: TrainConfig, stack: Stack = HF) -> bool:
    """peft upcasts 16-bit adapter weights to fp32 (autocast_adapter_dtype=True) and casts the input to them,
    so without autocast (bf16-true) the LoRA matmuls run in fp32; autocast (*-mixed) runs them in 16 bit."""
    if not cfg.uses_adapters or deepspeed_16bit(cfg):
        return False
    if stack.adapters_16bit is not None:
        return not stack.adapters_16bit
    return not autocasts(cfg, stack)


def head_fp32(cfg: TrainConfig, stack: Stack = HF) -> bool:
    """fp32 training; and QLoRA without autocast: prepare_model_for_kbit_training leaves the final norm and
    lm_head in fp32, so the logits matmul runs in fp32."""
    if cfg.precision is Precision.FP32:
        return True
    return (cfg.method is Method.QLORA and stack.kbit_prepare and not autocasts(cfg, stack)
            and stream_bytes(cfg, stack) == 4)
