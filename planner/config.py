"""One training configuration: every input the memory model and the launchers need, resolved."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from planner.enums import (ActivationOffload, Attention, Batching, Loop, Loss, Method, Offload, Optimizer, Precision,
                           Sharding)
from planner.sharding import EngineSettings

# Aliases accepted by --lora-targets, expanded to roles of `profiles.models.Linear`.
TARGET_ALIASES = {
    "attn": ("q", "k", "v", "o"),
    "mlp": ("gate", "up", "down"),
    "all-linear": ("q", "k", "v", "o", "gate", "up", "down"),
}
DEFAULT_LORA_TARGETS = ("all-linear",)


@dataclass(frozen=True)
class TrainConfig:
    method: Method = Method.LORA
    precision: Precision = Precision.BF16_TRUE
    optimizer: Optimizer = Optimizer.ADAMW
    micro_batch: int = 1
    seq_len: int = 2048
    grad_ckpt: bool = False
    attn: Attention = Attention.SDPA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    double_quant: bool = True
    gpus: int = 1
    nodes: int = 1
    sharding: Sharding = Sharding.NONE
    offload: Offload = Offload.NONE
    grad_accum: int = 1
    engine: EngineSettings = field(default_factory=EngineSettings)
    loss: Loss = Loss.STANDARD
    liger_kernels: bool = False      # Liger's RMSNorm, SwiGLU and RoPE kernels
    batching: Batching = Batching.FIXED
    loop: Loop = Loop.TRAINER
    activation_offload: ActivationOffload = ActivationOffload.NONE

    def __post_init__(self) -> None:
        for name, enum in (("method", Method), ("precision", Precision), ("optimizer", Optimizer),
                           ("attn", Attention), ("sharding", Sharding), ("offload", Offload), ("loss", Loss),
                           ("batching", Batching), ("loop", Loop), ("activation_offload", ActivationOffload)):
            if not isinstance(getattr(self, name), enum):
                object.__setattr__(self, name, enum(getattr(self, name)))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if isinstance(self.engine, dict):
            object.__setattr__(self, "engine", EngineSettings.from_dict(self.engine))
        for name in ("micro_batch", "seq_len", "gpus", "nodes", "grad_accum", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    @property
    def uses_adapters(self) -> bool:
        return self.method in (Method.LORA, Method.QLORA)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return {k: (v.value if hasattr(v, "value") else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**data)
