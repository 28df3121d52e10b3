"""Every optimizer fitplan knows, as one record each: the state it keeps per tensor, the temporaries of its
step, the bytes its step moves, and how the recipe and the harness build it. A new optimizer is one record
here (plus its value in `planner.enums.Optimizer`)."""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

from planner.enums import Optimizer

ADAM8_BLOCK = 256           # bitsandbytes 8-bit optimizer blocksize
ADAM8_MIN_NUMEL = 4096      # bitsandbytes `min_8bit_size`: smaller tensors keep 32-bit states
PAGED_MIN_NUMEL = 1e5       # bitsandbytes pages a state buffer only for tensors this large (get_state_buffer)


def _adam(n: int, shape: tuple[int, ...], dtype: int) -> int:
    return 2 * n * dtype                       # torch AdamW: exp_avg, exp_avg_sq like the parameter


def _adam32(n: int, shape: tuple[int, ...], dtype: int) -> int:
    return 2 * n * 4                           # bitsandbytes 32-bit optimizers keep fp32 states


def _adam8(n: int, shape: tuple[int, ...], dtype: int) -> int:
    if n < ADAM8_MIN_NUMEL:
        return 2 * n * 4
    return 2 * n + 2 * 4 * math.ceil(n / ADAM8_BLOCK)   # two uint8 states + an fp32 absmax per block each


def _momentum(n: int, shape: tuple[int, ...], dtype: int) -> int:
    return n * dtype                           # SGD's momentum buffer


def _adafactor(n: int, shape: tuple[int, ...], dtype: int) -> int:
    """transformers Adafactor (beta1=None): the second moment of a matrix factored into its row and column
    means, of a vector kept whole; in fp32, since it works on grad.float()."""
    if len(shape) < 2:
        return 4 * n
    return 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2] + shape[-1:]))


@dataclass(frozen=True)
class OptimizerRecord:
    name: Optimizer
    state: Callable[[int, tuple[int, ...], int], int]   # (numel, shape, parameter bytes) -> state bytes
    step_temporary: str        # "foreach": one state's worth at once; "per_tensor": the largest tensor's; "none"
    step_bytes_per_param: int  # bytes the step reads and writes per parameter (its memory-bandwidth cost)
    cls: str                   # "module:Class" the recipe and the harness build
    kwargs: dict = field(default_factory=dict)
    paged: bool = False        # states in CUDA managed memory (bitsandbytes paged optimizers)
    deepspeed_type: str | None = None   # ZeRO-Offload builds this one itself on the CPU (DeepSpeedCPUAdam)
    zero_tested: bool = False  # ZeRO takes it as it is; the others need zero_allow_untested_optimizer

    def state_bytes(self, shape: tuple[int, ...], param_bytes: int) -> int:
        return self.state(math.prod(shape), shape, param_bytes)

    def build(self, params, lr: float, weight_decay: float = 0.0):
        """The torch optimizer (imported only now: planning never loads torch)."""
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)(params, lr=lr, weight_decay=weight_decay,
                                                               **self.kwargs)


OPTIMIZERS: dict[Optimizer, OptimizerRecord] = {record.name: record for record in (
    # foreach (CUDA's default): the step makes sqrt(exp_avg_sq) for every parameter at once
    OptimizerRecord(Optimizer.ADAMW, _adam, "foreach", 16, "torch.optim:AdamW", {"foreach": True},
                    deepspeed_type="AdamW", zero_tested=True),
    # fused (Trainer's default adamw_torch_fused): one kernel per parameter group, no parameter-sized temporary
    OptimizerRecord(Optimizer.ADAMW_FUSED, _adam, "none", 16, "torch.optim:AdamW", {"fused": True},
                    deepspeed_type="AdamW"),
    OptimizerRecord(Optimizer.ADAMW_8BIT, _adam8, "none", 16, "bitsandbytes.optim:AdamW8bit"),
    OptimizerRecord(Optimizer.PAGED_ADAMW, _adam32, "none", 16, "bitsandbytes.optim:PagedAdamW", paged=True),
    OptimizerRecord(Optimizer.PAGED_ADAMW_8BIT, _adam8, "none", 16, "bitsandbytes.optim:PagedAdamW8bit", paged=True),
    OptimizerRecord(Optimizer.SGD, _momentum, "none", 16, "torch.optim:SGD", {"momentum": 0.9, "foreach": True}),
    OptimizerRecord(Optimizer.ADAFACTOR, _adafactor, "per_tensor", 16, "transformers.optimization:Adafactor",
                    {"scale_parameter": False, "relative_step": False}),
)}


def record(name: Optimizer) -> OptimizerRecord:
    return OPTIMIZERS[Optimizer(name)]
