"""The cache manager: running sequences' KV caches stacked into one batch.

Every past input is one (B, kv_heads, T, head_dim) tensor; row r holds its sequence's
``num_cached`` tokens in the *last* columns (left padding) and the attention mask hides the
columns before them. A decode step appends one column to every row, so the padding never moves
and a step costs the same as for one sequence of length T, B times over. A bounded sliding-window
layer's inputs are only their last min(T, window − 1) columns (the graph trims its present.*):
every operation below keeps each input's own last columns, so it needs no window of its own. Rows join and leave
only between steps: a join pads the newcomer (or the batch) to a common length, a leave drops
the row and the columns no remaining row needs. Sequences whose fixed inputs (cross-attention
memory) differ in shape cannot share a step; the scheduler keeps one ``BatchCache`` per shape.

An append-layout export (``llm.cache_layout``: the graph returns only the new columns) keeps each
input in a preallocated (B, kv_heads, capacity, head_dim) array: columns [0, T) as above, the free
columns [T, capacity) zero and masked, each step's new column written at T in place — a step
copies B columns, not the whole cache. Capacity grows by ``CAPACITY_BLOCK`` tokens; joins and
leaves (between steps) re-pack it.
"""

from __future__ import annotations

import numpy as np

from ..kv_cache import CAPACITY_BLOCK


def as_array(value) -> np.ndarray:
    """An OrtValue from a step (CPU: a view of its buffer, no copy) or an array, as NumPy."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def left_pad(a: np.ndarray, length: int) -> np.ndarray:
    """(b, h, n, d) → (b, h, length, d) with zeros before the n tokens."""
    n = a.shape[2]
    if n == length:
        return a
    pad = np.zeros(a.shape[:2] + (length - n,) + a.shape[3:], dtype=a.dtype)
    return np.concatenate([pad, a], axis=2)


def _stack(batch: np.ndarray, row: np.ndarray) -> np.ndarray:
    """(B, h, n, d) and (1, h, m, d) → (B + 1, h, max(n, m), d), both left-padded."""
    length = max(batch.shape[2], row.shape[2])
    return np.concatenate([left_pad(batch, length), left_pad(row, length)], axis=0)


def with_capacity(a: np.ndarray, length: int) -> np.ndarray:
    """(b, h, n, d), n ≤ length → (b, h, capacity, d): the n columns, then zeros (whole blocks, ≥ length + 1)."""
    capacity = -(-(length + 1) // CAPACITY_BLOCK) * CAPACITY_BLOCK
    out = np.zeros(a.shape[:2] + (capacity,) + a.shape[3:], dtype=a.dtype)
    out[:, :, : a.shape[2]] = a
    return out


class BatchCache:
    def __init__(self, key=None, append: bool = False):
        self.key = key  # the fixed-input shapes these rows share (None: no fixed inputs)
        self.append = append  # in-place columns in preallocated capacity (see the module docstring)
        self.rows: list = []  # Sequences, in batch order
        self.values: list = []  # per past input: (B, kv_heads, T or capacity, head_dim), arrays or OrtValues
        self.length = 0  # T
        self.fixed: dict[str, np.ndarray] = {}  # the rows' fixed inputs and decode-step token inputs, stacked
        self.version = 0  # bumped on every join / leave
        self.fixed_version = -1  # the version ``fixed`` was stacked for

    def __len__(self) -> int:
        return len(self.rows)

    def mask(self, new: int = 1) -> np.ndarray:
        """(B, T + new) int64: 1 where a row has a token (its last num_cached columns, then the new ones).
        Append: (B, capacity + new), the free columns [T, capacity) 0."""
        pad = self.length - np.array([s.num_cached for s in self.rows], dtype=np.int64)
        columns = self.values[0].shape[2] if self.append and self.values else self.length
        at = np.arange(columns + new, dtype=np.int64)[None, :]
        return ((at >= pad[:, None]) & ((at < self.length) | (at >= columns))).astype(np.int64)

    def _valid(self) -> list[np.ndarray]:
        """Per input (B, kv_heads, T', head_dim): the occupied columns (append: without the free ones)."""
        arrays = [as_array(v) for v in self.values]
        return [a[:, :, : self.length] for a in arrays] if self.append else arrays

    def _store(self, arrays: list[np.ndarray]) -> None:
        self.values = [with_capacity(a, self.length) if self.append else np.ascontiguousarray(a) for a in arrays]

    def add(self, seq, cache: list) -> None:
        """``cache``: the sequence's own (1, kv_heads, num_cached, head_dim) per past input."""
        n = seq.num_cached
        if self.rows:  # each input to its longer side: T, or for a bounded layer min(T, window − 1)
            stacked = [_stack(v, as_array(c)) for v, c in zip(self._valid(), cache)]
        else:
            stacked = [as_array(c) for c in cache]
        self.length = max(self.length, n)
        self._store(stacked)
        self.rows.append(seq)
        self.version += 1

    def remove(self, leaving: list) -> None:
        """Drop ``leaving`` rows; those that asked for it (``keep_cache``) get their unpadded cache."""
        if not leaving:
            return
        arrays = self._valid()
        for seq in leaving:
            if seq.keep_cache:
                r = self.rows.index(seq)
                seq.final_cache = [a[r : r + 1, :, a.shape[2] - min(seq.num_cached, a.shape[2]) :].copy()
                                   for a in arrays]
        keep = [r for r, s in enumerate(self.rows) if s not in leaving]
        self.rows = [self.rows[r] for r in keep]
        self.length = max((s.num_cached for s in self.rows), default=0)
        # the columns a remaining row still needs: the last min(T, its own) of each input
        if self.rows:
            self._store([a[keep, :, a.shape[2] - min(self.length, a.shape[2]) :] for a in arrays])
        else:
            self.values = []
        self.version += 1

    def after_step(self, presents: list) -> None:
        """Concat: the step's present.* (B, kv_heads, T + 1, head_dim) become the batch's cache.
        Append: its new.* (B, kv_heads, 1, head_dim) are written into column T (grown first if full)."""
        if self.append:
            if self.length + 1 > self.values[0].shape[2]:
                self.values = [with_capacity(a, self.length + 1) for a in self._valid()]
            for value, new in zip(self.values, presents):
                value[:, :, self.length : self.length + 1] = as_array(new)
        else:
            self.values = presents
        self.length += 1
        for seq in self.rows:
            seq.num_cached += 1
