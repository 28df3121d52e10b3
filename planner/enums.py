"""Option values shared by the planner, the CLI and the emitted configs.

`str` Enums, so plans round-trip through JSON and YAML unchanged.
"""
from enum import Enum


class Choice(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        return [member.value for member in cls]


class Method(Choice):
    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"


class Precision(Choice):
    BF16_TRUE = "bf16-true"
    BF16_MIXED = "bf16-mixed"
    FP16_MIXED = "fp16-mixed"
    FP32 = "fp32"


class Optimizer(Choice):
    ADAMW = "adamw"
    ADAMW_FUSED = "adamw_fused"
    ADAMW_8BIT = "adamw8bit"
    PAGED_ADAMW = "paged_adamw"
    PAGED_ADAMW_8BIT = "paged_adamw8bit"
    SGD = "sgd"
    ADAFACTOR = "adafactor"


class Sharding(Choice):
    NONE = "none"
    DDP = "ddp"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    FSDP = "fsdp"      # FSDP2 (fully_shard), what fitplan emits
    FSDP1 = "fsdp1"    # FSDP1 (flat parameters), still Accelerate's default

    @property
    def is_zero(self) -> bool:
        return self in (Sharding.ZERO1, Sharding.ZERO2, Sharding.ZERO3)

    @property
    def is_fsdp(self) -> bool:
        return self in (Sharding.FSDP, Sharding.FSDP1)

    @property
    def shards_states(self) -> bool:
        return self.is_zero or self.is_fsdp

    @property
    def shards_grads(self) -> bool:
        return self in (Sharding.ZERO2, Sharding.ZERO3) or self.is_fsdp

    @property
    def shards_params(self) -> bool:
        return self is Sharding.ZERO3 or self.is_fsdp


class Offload(Choice):
    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"


class Attention(Choice):
    SDPA = "sdpa"
    FLASH = "flash"
    EAGER = "eager"


class Loss(Choice):
    STANDARD = "standard"   # transformers' loss over the full logits
    LIGER = "liger"         # Liger's fused linear cross-entropy: logits never materialised, chunked
    CCE = "cce"             # Apple's Cut Cross-Entropy: logits never materialised


class Batching(Choice):
    FIXED = "fixed"         # every sequence seq_len tokens, no padding (what the planner assumes so far)
    PADDED = "padded"       # padded to the longest with an attention mask
    PACKED = "packed"       # several sequences per row, boundaries by position ids


class Loop(Choice):
    TRAINER = "trainer"     # transformers' Trainer: the outputs (logits) are dropped before backward
    PLAIN = "plain"         # a hand-written loop keeping `outputs` through backward


class ActivationOffload(Choice):
    NONE = "none"
    ALL = "all"                   # torchtune / TRL: saved activations go to CPU memory
    CHECKPOINTS = "checkpoints"   # offloaded checkpointing: each checkpointed layer's input on the CPU


class Phase(Choice):
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER_STEP = "optimizer_step"
