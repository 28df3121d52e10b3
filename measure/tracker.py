"""Exact live-storage accounting for one training step, on fake, CPU or CUDA tensors.

`StorageTracker` is a `TorchDispatchMode`: every storage an operator returns is recorded once, with a weakref
whose callback marks it freed, so the running total is exactly the bytes of live storages. The peak is kept
as a sequence number; the records live at that moment are categorised afterwards, by what they were when they
were made (phase and region) and by what they became (parameter, gradient, optimizer state, quantization
constant), which the driver tags by storage identity while those tensors exist.

Storages resized in place (`UntypedStorage.resize_`, how FSDP allocates and frees unsharded parameters) are
seen while the tracker is active: the old bytes die and the new ones are born then. Tensor subclasses that wrap
others (DTensor) are counted by their inner tensors; meta tensors hold no memory and are not counted.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

COMPONENTS = ("weights", "quant_constants", "adapters", "gradients", "optimizer_states", "master_weights",
              "activations", "logits", "temporary")
PHASES = ("forward", "backward", "optimizer_step")


@dataclass
class Record:
    """One storage: its size, when it was made and freed, and what it was."""

    nbytes: int
    born: int
    phase: str
    region: str | None
    died: int | None = None
    tag: str | None = None   # identity category, set by `tag()`
    paged: bool = False      # would live in CUDA managed memory (bitsandbytes paged optimizer state)
    ref: object = None       # the weakref whose callback frees it (must outlive the storage)


@dataclass
class Peak:
    nbytes: int = 0
    seq: int = 0
    phase: str = "setup"


class StorageTracker(TorchDispatchMode):
    """Counts live storage bytes; `phase` and `region` are set by the driver and by module hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self.live_bytes = 0
        self.phase = "setup"
        self.region: str | None = None
        self.seq = 0
        self._by_storage = WeakIdKeyDictionary()
        self.peak = Peak()
        self.phase_peaks: dict[str, int] = {}
        self.phase_peak_seqs: dict[str, int] = {}
        self.copy_regions: dict[str, str] = {}   # tag -> region of dtype copies made of storages so tagged
        self._lock = threading.RLock()   # frees can come from other threads (gloo's workers drop tensors)

    # -- recording -------------------------------------------------------------------------------
    def __enter__(self):
        self._restore_resize = _report_storage_resizes(self)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._restore_resize()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        region = self.region
        if self.copy_regions and func is torch.ops.aten._to_copy.default:   # e.g. autocast's bf16 weight copies
            self.region = self.copy_regions.get(self._tag_of(args[0]), region)
        try:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.watch(t)
        finally:
            self.region = region
        return out

    def _tag_of(self, t: torch.Tensor) -> str | None:
        if is_traceable_wrapper_subclass(t) or t.device.type == "meta":
            return None
        rec = self._by_storage.get(t.untyped_storage())
        return rec.tag if rec is not None else None

    def watch(self, t: torch.Tensor) -> list[Record]:
        """Record the storages behind `t` if they are new (or grew); returns their records."""
        if is_traceable_wrapper_subclass(t):   # a DTensor's bytes are its local tensor's
            inner = (getattr(t, name) for name in t.__tensor_flatten__()[0])
            return [rec for x in inner if isinstance(x, torch.Tensor) for rec in self.watch(x)]
        if t.device.type == "meta":
            return []
        st = t.untyped_storage()
        rec = self._by_storage.get(st)
        if rec is None:
            rec = self._record(st)
        elif st.nbytes() != rec.nbytes:   # an `out=` op resized it in place
            self._grow(st.nbytes() - rec.nbytes)
            rec.nbytes = st.nbytes()
        return [rec]

    def storage_resized(self, st) -> None:
        """`st` was resized in place: its old bytes die now and its new bytes are born now, as what it was."""
        old = self._by_storage.get(st)
        if old is not None:
            self._free(old)
        self._record(st).tag = old.tag if old is not None else None

    def _record(self, st) -> Record:
        rec = Record(st.nbytes(), self.seq, self.phase, self.region)
        self._by_storage[st] = rec
        self.records.append(rec)
        rec.ref = weakref.ref(st, lambda _ref, r=rec: self._free(r))
        self._grow(rec.nbytes)
        return rec

    def _grow(self, delta: int) -> None:
        with self._lock:
            self.seq += 1
            self.live_bytes += delta
            if self.live_bytes > self.phase_peaks.get(self.phase, -1):
                self.phase_peaks[self.phase] = self.live_bytes
                self.phase_peak_seqs[self.phase] = self.seq
            if self.live_bytes > self.peak.nbytes:
                self.peak = Peak(self.live_bytes, self.seq, self.phase)

    def _free(self, rec: Record) -> None:
        with self._lock:
            if rec.died is not None:   # already ended by a resize
                return
            self.seq += 1
            rec.died = self.seq
            self.live_bytes -= rec.nbytes

    # -- driver API ------------------------------------------------------------------------------
    def tag(self, tensors, category: str, paged: bool = False) -> None:
        """Mark the storages of `tensors` (recording them if unseen) as `category`."""
        for t in tensors:
            for rec in self.watch(t):
                rec.tag = category
                rec.paged = rec.paged or paged

    def reset_peak(self) -> None:
        """Start a new measurement window at the current live total (e.g. at the start of step 2)."""
        self.peak = Peak(self.live_bytes, self.seq, self.phase)
        self.phase_peaks = {}
        self.phase_peak_seqs = {}

    def live_at(self, seq: int) -> list[Record]:
        return [r for r in self.records if r.born <= seq and (r.died is None or r.died > seq)]

    def components(self, seq: int | None = None) -> dict[str, int]:
        """Bytes live at `seq` (default: the peak) by category; they sum to the live total then."""
        out = dict.fromkeys(COMPONENTS, 0)
        for rec in self.live_at(self.peak.seq if seq is None else seq):
            out[category(rec)] = out.get(category(rec), 0) + rec.nbytes
        return out

    def paged_bytes(self, seq: int | None = None) -> int:
        return sum(r.nbytes for r in self.live_at(self.peak.seq if seq is None else seq) if r.paged)


def category(rec: Record) -> str:
    """Identity first (what the storage is), else where and when it was made."""
    if rec.tag is not None:
        return rec.tag
    if rec.region is not None:   # "logits", or what a distributed engine was doing (measure/rank_memory.py)
        return rec.region
    if rec.phase in ("forward", "backward"):
        return "activations"   # saved tensors, recomputation and activation gradients
    return "temporary"


def _report_storage_resizes(tracker: StorageTracker):
    """Route `UntypedStorage.resize_` (not a dispatched op) to `tracker`; returns the undo."""
    cls = torch.UntypedStorage
    own = "resize_" in cls.__dict__
    original = cls.resize_

    def resize_(storage, size):
        out = original(storage, size)
        tracker.storage_resized(storage)
        return out
    cls.resize_ = resize_

    def restore() -> None:
        if own:
            cls.resize_ = original
        else:
            del cls.resize_
    return restore
