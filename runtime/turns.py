"""One decoder, many generations: each takes its turn a step at a time.

A ``Pipeline`` has one LLM decoder whose KV cache holds one generation. Calls from several
threads, and several ``stream()`` generators interleaved in one thread, each run their steps
under a lock with *their own* cache state swapped in, so every call gets exactly the tokens it
gets alone. Swapping is a handful of references on ONNX Runtime (the cache is OrtValues handed
from step to step); a decoder that cannot swap (TensorRT's preallocated device buffers) serves
one generation at a time: other threads wait for it to finish, and a second stream started in
the same thread while the first is suspended is refused with a clear error instead of mixing
the two caches. (Batching several requests into one step is the serving issue's scheduler.)
"""

from __future__ import annotations

import threading
from typing import Iterator

from .errors import VlmforgeError


class DecoderTurns:
    def __init__(self, decoder):
        self.decoder = decoder
        self.can_swap = hasattr(decoder, "save_state") and hasattr(decoder, "load_state")
        self._cond = threading.Condition()
        self._busy = False  # a step is running
        self._resident = None  # the generation whose state the decoder holds
        self._resident_thread = None

    def run(self, steps: Iterator):
        """Drive generator ``steps`` (one generation) one item at a time, its state swapped in for each."""
        me, state = object(), None
        try:
            while True:
                self._enter(me, state)
                try:
                    item = next(steps)
                except StopIteration:
                    return
                finally:
                    state = self._leave(me)
                yield item
        finally:
            steps.close()
            with self._cond:
                if self._resident is me:
                    self._resident = None
                    self._cond.notify_all()

    def _enter(self, me, state) -> None:
        with self._cond:
            while self._busy or (not self.can_swap and self._resident not in (None, me)):
                if not self._busy and self._resident_thread is threading.current_thread():
                    raise VlmforgeError(
                        "another generation on this pipeline is suspended mid-stream and this backend's decoder "
                        "holds one generation at a time; finish or close that stream first (or load a second Pipeline)")
                self._cond.wait()
            self._busy = True
            if self.can_swap and self._resident is not me and state is not None:
                self.decoder.load_state(state)  # a fresh generation (state None) resets the decoder itself
            self._resident, self._resident_thread = me, threading.current_thread()

    def _leave(self, me):
        with self._cond:
            state = self.decoder.save_state() if self.can_swap else None
            self._busy = False
            self._cond.notify_all()
            return state
