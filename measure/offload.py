"""Activation offloading, emulated for the measuring harness as TRL's `OffloadActivations` does it (torchtune's,
plus one host copy per storage): every tensor autograd saves, of at least 1 KiB and not a parameter, leaves
the GPU at the forward and comes back, once per storage, when the backward node that needs it runs. Under
non-reentrant checkpointing only each checkpointed layer's input reaches these hooks (checkpoint stores its
inputs through the outer hooks), which is offloaded checkpointing. On fake or CPU tensors "the GPU" is the
tracked memory: a packed tensor keeps only its shape, and unpacking allocates it anew.
"""
from __future__ import annotations

import contextlib
import itertools
import weakref

import torch
from torch.utils.weak import WeakIdKeyDictionary

MIN_OFFLOAD_BYTES = 1024   # TRL's and torchtune's min_offload_size


@contextlib.contextmanager
def offloaded_activations(model: torch.nn.Module | None, head: torch.nn.Module | None = None):
    """Offload while this runs (None: no offloading). Parameters, and views of them (a weight saved
    transposed), stay; `head` (lm_head) keeps its saved tensors on the GPU, as TRL's NoOpManager does."""
    if model is None:
        yield
        return
    ids, restored, counter = WeakIdKeyDictionary(), {}, itertools.count()
    parameters = WeakIdKeyDictionary({p.untyped_storage(): True for p in model.parameters()})

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage in parameters or storage.nbytes() < MIN_OFFLOAD_BYTES:
            return tensor
        key = ids.setdefault(storage, next(counter))
        return (key, storage.nbytes(), tensor.device, tensor.dtype, tuple(tensor.shape), tensor.stride(),
                tensor.storage_offset())

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        key, nbytes, device, dtype, shape, stride, offset = packed
        base = restored.get(key)
        base = base() if base is not None else None
        if base is None:   # back from host memory, one copy per storage while any of its views is in use
            base = torch.empty(nbytes, dtype=torch.uint8, device=device)
            restored[key] = weakref.ref(base)
        return base.view(dtype).as_strided(shape, stride, offset)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack), kept_on_gpu(head):
        yield


@contextlib.contextmanager
def kept_on_gpu(module: torch.nn.Module | None):
    """Identity hooks around `module`'s forward: the innermost hooks win, so what it saves stays where it is."""
    if module is None:
        yield
        return
    keep = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    handles = [module.register_forward_pre_hook(lambda *_: keep.__enter__()),
               module.register_forward_hook(lambda *_: keep.__exit__(None, None, None))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
