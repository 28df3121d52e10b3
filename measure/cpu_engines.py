"""Run Accelerate's GPU engines (FSDP1, FSDP2) on CPU ranks that talk over gloo, for measurement.

`accelerate launch` with ACCELERATE_USE_CPU=true gives every rank a gloo process group, but Accelerate then
trains FSDP configs as plain DDP (its CPU state is MULTI_CPU), refuses `sync_module_states` on CPU, torch's
FSDP1 refuses CPU tensors for that broadcast, and saving an FSDP1 full state dict with Accelerate's CPU offload
crashes on CPU. Each patch below undoes one of these and changes nothing else; DDP and DeepSpeed need none
(DeepSpeed picks its CPU accelerator and gloo by itself).

`enable()` is called by launch/recipe.py before it makes its Accelerator when FITPLAN_CPU_ENGINES is set
(launch/sharded_memory.py sets it).
"""
from __future__ import annotations

NOTES = (
    "FSDP on CPU: Accelerate's CPU state (MULTI_CPU) is promoted to FSDP with the launcher's FSDP plugin, as "
    "AcceleratorState does for GPUs; the device is plain `cpu` (FSDP1 rejects `cpu:0` next to `cpu`)",
    "FSDP1 sync_module_states on CPU: Accelerate's refusal and torch's GPU-only check are skipped; parameters are "
    "materialised with to_empty(cpu) and rank 0's are broadcast over gloo, as on GPUs",
    "FSDP1 full state dict on CPU: offload_to_cpu is off (a CPU-to-CPU offload frees the gathered weights before "
    "FSDP clones them, which crashes); it only affects saving",
)


def enable() -> None:
    promote_fsdp_state()
    allow_cpu_module_sync()
    gather_state_dict_in_place()


def promote_fsdp_state() -> None:
    """AcceleratorState on CPU ranks: FSDP when the launcher asked for it (its MULTI_GPU branch, with device cpu)."""
    import torch
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType
    original = AcceleratorState.__init__

    def init(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None, fsdp_plugin=None,
             *args, **kwargs) -> None:
        original(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
        if self.distributed_type != DistributedType.MULTI_CPU or fsdp_plugin is None:
            return
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin, self.distributed_type, self.device = fsdp_plugin, DistributedType.FSDP, torch.device("cpu")
        PartialState._shared_state.update(distributed_type=self.distributed_type, device=self.device)
    AcceleratorState.__init__ = init


def allow_cpu_module_sync() -> None:
    """FSDP1's `sync_module_states` on CPU: what Accelerate sets up on a GPU, with device cpu; gloo broadcasts."""
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import _init_utils
    original = FullyShardedDataParallelPlugin.__post_init__

    def post_init(self) -> None:
        try:
            original(self)
        except RuntimeError as err:   # raised as the last step of __post_init__, where it sets param_init_fn
            if "sync_module_states" not in str(err):
                raise
            self.param_init_fn = lambda module: module.to_empty(device=torch.device("cpu"), recurse=False)
    FullyShardedDataParallelPlugin.__post_init__ = post_init
    _init_utils._check_module_states_for_sync_module_states = lambda states: None


def gather_state_dict_in_place() -> None:
    """FSDP1's full state dict without offload_to_cpu (Accelerate hard-codes it; on CPU it is a crash, not a move)."""
    from accelerate import Accelerator
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    original = Accelerator.get_state_dict

    def get_state_dict(self, model, unwrap: bool = True):
        if not isinstance(model, FSDP):
            return original(self, model, unwrap)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True)):
            return model.state_dict()
    Accelerator.get_state_dict = get_state_dict
