"""The data-parallel engines' settings that change memory. fitplan writes them into the configs it emits
(`launch/emit.py`) and the planner models the same values, so a plan and its run agree. Defaults are the
engines' own (DeepSpeed's `zero/config.py`, Accelerate's FSDP and DDP defaults) unless a comment says why not.
Sizes are in elements, as DeepSpeed counts them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class EngineSettings:
    # DeepSpeed ZeRO
    reduce_bucket_size: int = 500_000_000        # elements per gradient-reduction bucket
    allgather_bucket_size: int = 500_000_000     # ZeRO-1/2 (unused by torch 2's all_gather_into_tensor)
    overlap_comm: bool = True                    # a second reduction bucket, reduced while the first fills
    contiguous_gradients: bool = True
    prefetch_bucket_size: int = 50_000_000       # ZeRO-3: parameters gathered ahead of use
    param_persistence_threshold: int = 100_000   # ZeRO-3: smaller parameters stay whole on every rank
    max_live_parameters: int = 1_000_000_000     # ZeRO-3: cap on gathered parameters (prefetch only)
    max_reuse_distance: int = 1_000_000_000      # ZeRO-3: keep a gathered parameter used again this soon
    # DDP (Accelerate's DistributedDataParallelKwargs)
    ddp_bucket_cap_mb: int = 25
    # FSDP (version 1: flat parameters; 2: per-parameter DTensors)
    fsdp_reshard_after_forward: bool = True      # FULL_SHARD (False: SHARD_GRAD_OP)
    fsdp_backward_prefetch: str = "BACKWARD_PRE"  # FSDP1: BACKWARD_PRE | BACKWARD_POST | NONE
    fsdp_forward_prefetch: bool = False          # FSDP1
    fsdp_use_orig_params: bool = True            # FSDP1: needed when frozen and trainable share a unit (LoRA)

    @classmethod
    def from_dict(cls, data: dict | None) -> "EngineSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data or {}) - known
        if unknown:
            raise ValueError(f"unknown engine settings: {', '.join(sorted(unknown))}")
        return cls(**(data or {}))

    def to_dict(self) -> dict:
        return asdict(self)
