"""Configurations the libraries cannot train, said before anyone tries."""
from __future__ import annotations

from planner.config import TrainConfig
from planner.enums import Method, Precision
from profiles.models import ModelSpec


def unsupported(spec: ModelSpec, cfg: TrainConfig) -> str | None:
    """Why transformers cannot run `cfg` on `spec`, or None."""
    fp32_experts = cfg.method is Method.QLORA or cfg.precision is not Precision.BF16_TRUE
    if spec.is_moe and fp32_experts:
        # transformers 5 runs experts with torch._grouped_mm, which takes bf16 only; QLoRA's
        # prepare_model_for_kbit_training and the *-mixed / fp32 precisions leave expert weights in fp32
        return (f"{spec.short_name} is a mixture-of-experts model whose grouped expert matmuls run in bf16 only; "
                f"use --precision bf16-true with --method full or lora.")
    return None
