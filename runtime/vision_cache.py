"""Image and video embeddings kept across requests, keyed by what they are computed from.

The key hashes the decoded pixels (their bytes, shape and dtype) with every setting that changes
the embeddings: the whole preprocessing spec of the call (budget, tiling, normalisation …) and,
for connectors that read the instruction (InstructBLIP's Q-Former), the prompt text. Never a
file name or the placeholder tokens: two files with the same name, or one picture edited in
place, must not share embeddings. Entries are evicted least recently used under a byte budget.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import asdict

import numpy as np

DEFAULT_BUDGET_BYTES = 64 << 20  # 32 LLaVA-1.5-sized images (576 × 896 floats); 0 turns it off


def media_key(pixels: np.ndarray, settings) -> str:
    """A digest of ``pixels`` (any array: one picture, or a video's frames) and ``settings`` (a
    dataclass or anything with a stable ``repr``)."""
    h = hashlib.sha256()
    h.update(repr((pixels.shape, str(pixels.dtype))).encode())
    h.update(np.ascontiguousarray(pixels).data)
    h.update(repr(asdict(settings) if hasattr(settings, "__dataclass_fields__") else settings).encode())
    return h.hexdigest()


def media_nbytes(media) -> int:
    return int(media.embeds.nbytes + sum(v.nbytes for v in media.extras.values()))


class VisionCache:
    """key → ``Media`` (embeddings, layout, extras), LRU under ``budget_bytes`` (0 turns it off)."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"the vision cache budget must be a number of bytes >= 0, got {budget_bytes!r}")
        self.budget = budget_bytes
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, media) -> None:
        size = media_nbytes(media)
        if size > self.budget:  # larger than the whole budget: never kept
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = media
            self.nbytes += size
            while self.nbytes > self.budget:
                _, old = self._items.popitem(last=False)
                self.nbytes -= media_nbytes(old)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    @property
    def stats(self) -> dict:
        return {"entries": len(self._items), "bytes": self.nbytes, "budget_bytes": self.budget, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}
