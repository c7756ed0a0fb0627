"""The scheduler: which waiting sequence gets the next prefill chunk, and the running batches.

First come, first served: a sequence waits until fewer than ``max_batch`` are running, then
prefills one chunk per engine step (so the running ones decode between its chunks), then joins
the batch of the sequences whose fixed inputs have its shapes. At most ``max_waiting`` wait;
beyond that ``add`` refuses (the server answers 503).
"""

from __future__ import annotations

from collections import deque

from ..errors import VlmforgeError
from .batch_cache import BatchCache


class QueueFull(VlmforgeError):
    """More requests are waiting than the engine was told to hold."""


def fixed_shapes(seq):
    """What a sequence must share with its batch: the shapes of its fixed (memory) inputs."""
    memory = seq.prepared.memory
    return None if not memory else tuple(sorted((k, v.shape) for k, v in memory.items()))


class Scheduler:
    def __init__(self, max_batch: int = 8, max_waiting: int = 64, append_cache: bool = False):
        for name, value in (("max_batch", max_batch), ("max_waiting", max_waiting)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.waiting: deque = deque()  # Sequences not yet (fully) prefilled, in arrival order
        self.batches: dict = {}  # fixed_shapes → BatchCache
        self.append_cache = append_cache  # the export's append layout: batches keep their columns in place

    @property
    def num_running(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def has_work(self) -> bool:
        return bool(self.waiting or self.batches)

    def add(self, seq) -> None:
        if len(self.waiting) >= self.max_waiting:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting (max_waiting={self.max_waiting}); "
                            "retry later or raise the limit (vlmforge serve --max-queue)")
        self.waiting.append(seq)

    def next_prefill(self):
        """The sequence whose prefill advances this step, or None (none waiting, or the batch is full)."""
        if self.waiting and self.num_running < self.max_batch:
            return self.waiting[0]
        return None

    def admit(self, seq, cache: list) -> None:
        """``seq`` finished its prefill and decodes from now on, with ``cache`` as its rows."""
        self.waiting.remove(seq)
        key = fixed_shapes(seq)
        if key not in self.batches:
            self.batches[key] = BatchCache(key, append=self.append_cache)
        self.batches[key].add(seq, cache)

    def drop(self, seqs) -> None:
        """Remove sequences wherever they are (finished, cancelled or failed)."""
        for seq in seqs:
            if seq in self.waiting:
                self.waiting.remove(seq)
        for key, batch in list(self.batches.items()):
            leaving = [s for s in batch.rows if s in seqs]
            batch.remove(leaving)
            if not batch.rows:
                del self.batches[key]

    def all_sequences(self) -> list:
        return list(self.waiting) + [s for b in self.batches.values() for s in b.rows]
