"""Prefix reuse: the KV cache of finished prompts, kept so that a later prompt that starts the
same way (a chat's next turn, a fixed system prompt) prefills only what is new.

A prefix matches on token ids *and* on what each image slot holds (the media key: a hash of the
pixels and settings), never on the placeholder ids alone — two prompts with different pictures
have the same ids — and on the sequence's cache context (Qwen-VL's dynamic-NTK α, which the
cached keys were rotated under). At least one token is always left to prefill (its logits start decoding).
Entries are (ids, slots, cache) with the cache (1, kv_heads, tokens, head_dim) per past input,
evicted least recently used under a byte budget. A bounded sliding-window layer holds only its
last ``window_cache`` tokens (llm.attention): once it has dropped some, a prefix ``drop`` tokens
shorter than the entry is served only while that layer still holds the window − 1 tokens before
the prefix's end — a chat's next turn, which re-renders the last few tokens, usually is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass
class Prefix:
    ids: np.ndarray  # (n,) the tokens the cache holds
    slots: list[tuple[int, int, str]]  # (first position, count, media key) of each image run among them
    cache: list[np.ndarray]
    context: str = ""  # TokenFeeds.cache_context of the sequence that built it

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.cache)

    def servable(self, n: int, window: int) -> bool:
        """Whether the first ``n`` tokens' cache can be cut from this one: every input that dropped
        its earliest tokens (a bounded layer, holding the last a.shape[2]) must keep the window − 1
        before position n."""
        drop = len(self.ids) - n
        return all(a.shape[2] == len(self.ids) or a.shape[2] - drop >= window - 1 for a in self.cache)

    def cut(self, n: int) -> list[np.ndarray]:
        """The cache of the first ``n`` tokens: each input without its last len(ids) − n columns."""
        drop = len(self.ids) - n
        return [a[:, :, : a.shape[2] - drop] for a in self.cache]


def shared_length(prefix: Prefix, ids: np.ndarray, slots: list[tuple[int, int, str]], context: str = "") -> int:
    """How many leading tokens of (ids, slots) the prefix's cache holds exactly."""
    if prefix.context != context:
        return 0
    n = min(len(prefix.ids), len(ids) - 1)  # leave one token to prefill
    differ = np.flatnonzero(prefix.ids[:n] != ids[:n])
    n = int(differ[0]) if len(differ) else n
    kept = set(prefix.slots)
    for start, count, key in slots:  # an image run inside the shared part must be the same picture
        if start < n and (start, count, key) not in kept:
            n = start
    return max(n, 0)


def usable_length(prefix: Prefix, n: int, window: int) -> int:
    """``n`` shared tokens, or 0 where a bounded layer's trimmed cache cannot give that many."""
    return n if prefix.servable(n, window) else 0


def span_start(spans: np.ndarray | None, n: int) -> int:
    """``n`` moved back to the start of the attention span it would cut (runtime/attention.py): a
    span's cached keys saw the whole span, so a prefix may end only between spans (PaliGemma's
    prompt is one span: no reuse)."""
    if spans is None:
        return n
    row = spans[0]
    while 0 < n < len(row) and row[n] >= 0 and row[n] == row[n - 1]:
        n -= 1
    return n


def prompt_slots(prepared) -> list[tuple[int, int, str]]:
    return [(s, c, k) for (s, c), k in zip(prepared.prompt.image_slots, prepared.media_keys)]


class PrefixCache:
    def __init__(self, budget_bytes: int = 256 << 20, min_tokens: int = 16, max_entries: int = 64, window: int = 0):
        """``window``: the bounded sliding-window layers' (llm.attention.bounded_window), 0 when none."""
        self.budget, self.min_tokens, self.max_entries = budget_bytes, min_tokens, max_entries
        self.window = window
        self._items: OrderedDict[int, Prefix] = OrderedDict()
        self._lock = threading.Lock()
        self._next = 0
        self.nbytes = 0
        self.hits = 0
        self.reused_tokens = 0

    def match(self, prepared) -> tuple[int, list[np.ndarray] | None]:
        """(tokens to skip, their cache (1, kv, n, hd) per past input) for the longest kept prefix."""
        ids, slots, context = prepared.input_ids, prompt_slots(prepared), prepared.feeds.cache_context
        with self._lock:
            best, best_key = 0, None
            for key, prefix in self._items.items():
                n = span_start(prepared.feeds.spans, shared_length(prefix, ids, slots, context))
                n = usable_length(prefix, n, self.window)
                if n > best:
                    best, best_key = n, key
            if best < self.min_tokens:
                return 0, None
            self._items.move_to_end(best_key)
            self.hits += 1
            self.reused_tokens += best
            return best, self._items[best_key].cut(best)

    def put(self, ids: np.ndarray, prepared, cache: list[np.ndarray]) -> None:
        """Keep ``cache`` (of ``ids``: the prompt of ``prepared`` and what was generated after it)."""
        prefix = Prefix(np.array(ids, dtype=np.int64), prompt_slots(prepared), cache, prepared.feeds.cache_context)
        if len(ids) < self.min_tokens or prefix.nbytes > self.budget:
            return
        with self._lock:
            self._items[self._next] = prefix
            self._next += 1
            self.nbytes += prefix.nbytes
            while self.nbytes > self.budget or len(self._items) > self.max_entries:
                _, old = self._items.popitem(last=False)
                self.nbytes -= old.nbytes

    @property
    def stats(self) -> dict:
        return {"entries": len(self._items), "bytes": self.nbytes, "hits": self.hits,
                "reused_tokens": self.reused_tokens}
