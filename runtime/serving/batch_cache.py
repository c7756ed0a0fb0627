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
"""

from __future__ import annotations

import numpy as np


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


class BatchCache:
    def __init__(self, key=None):
        self.key = key  # the fixed-input shapes these rows share (None: no fixed inputs)
        self.rows: list = []  # Sequences, in batch order
        self.values: list = []  # per past input: (B, kv_heads, T, head_dim), arrays or OrtValues
        self.length = 0  # T
        self.fixed: dict[str, np.ndarray] = {}  # the rows' fixed inputs and decode-step token inputs, stacked
        self.version = 0  # bumped on every join / leave
        self.fixed_version = -1  # the version ``fixed`` was stacked for

    def __len__(self) -> int:
        return len(self.rows)

    def mask(self, new: int = 1) -> np.ndarray:
        """(B, T + new) int64: 1 where a row has a token (its last num_cached columns, then the new ones)."""
        pad = self.length - np.array([s.num_cached for s in self.rows], dtype=np.int64)
        return (np.arange(self.length + new, dtype=np.int64)[None, :] >= pad[:, None]).astype(np.int64)

    def add(self, seq, cache: list) -> None:
        """``cache``: the sequence's own (1, kv_heads, num_cached, head_dim) per past input."""
        n = seq.num_cached
        length = max(self.length, n)
        if self.rows:  # each input to its longer side: T, or for a bounded layer min(T, window − 1)
            self.values = [_stack(as_array(v), as_array(c)) for v, c in zip(self.values, cache)]
        else:
            self.values = [np.ascontiguousarray(as_array(c)) for c in cache]
        self.length = length
        self.rows.append(seq)
        self.version += 1

    def remove(self, leaving: list) -> None:
        """Drop ``leaving`` rows; those that asked for it (``keep_cache``) get their unpadded cache."""
        if not leaving:
            return
        arrays = [as_array(v) for v in self.values]
        for seq in leaving:
            if seq.keep_cache:
                r = self.rows.index(seq)
                seq.final_cache = [a[r : r + 1, :, a.shape[2] - min(seq.num_cached, a.shape[2]) :].copy()
                                   for a in arrays]
        keep = [r for r, s in enumerate(self.rows) if s not in leaving]
        self.rows = [self.rows[r] for r in keep]
        self.length = max((s.num_cached for s in self.rows), default=0)
        # the columns a remaining row still needs: the last min(T, its own) of each input
        self.values = [np.ascontiguousarray(a[keep, :, a.shape[2] - min(self.length, a.shape[2]) :])
                       for a in arrays] if self.rows else []
        self.version += 1

    def after_step(self, presents: list) -> None:
        """The step's present.* (B, kv_heads, T + 1, head_dim) become the batch's cache."""
        self.values = presents
        self.length += 1
        for seq in self.rows:
            seq.num_cached += 1
