"""M-RoPE (Qwen2-VL): three position rows — temporal, row, column.

As ``Qwen2VLModel.get_rope_index``: text advances all three rows together; an image's tokens,
laid out over its (t, rows, cols) token grid in row-major order, take start + ⌊t · step⌋, start +
row and start + column (step 1 for images; a video's from the seconds each temporal patch spans,
Qwen2.5-VL); the text after it resumes at start + max(rows, cols). Decoding continues at
``cache tokens + delta`` with delta = max position + 1 − prompt length.
"""

from __future__ import annotations

import numpy as np

from .base import Positions


def plan(seq_len: int, image_slots: list[tuple[int, int]], token_grids: list[tuple[int, int, int]],
         time_steps: list[float], spec=None) -> Positions:
    ids = np.empty((3, seq_len), dtype=np.int64)
    cursor, pos = 0, 0  # next token index, next text position
    for (start, count), (t, rows, cols), step in zip(image_slots, token_grids, time_steps):
        if t * rows * cols != count:
            raise ValueError(f"an image's token grid {t}×{rows}×{cols} does not fill its {count} slots")
        ids[:, cursor:start] = np.arange(pos, pos + start - cursor)
        pos += start - cursor
        # float32 then truncated, as transformers computes (arange(t) * time_interval).long()
        temporal = (np.arange(t, dtype=np.float32) * np.float32(step)).astype(np.int64)
        tt, rr, cc = np.meshgrid(temporal, np.arange(rows), np.arange(cols), indexing="ij")
        ids[:, start : start + count] = np.stack([tt, rr, cc]).reshape(3, -1) + pos
        pos += max(rows, cols)
        cursor = start + count
    ids[:, cursor:] = np.arange(pos, pos + seq_len - cursor)
    delta = int(ids.max()) + 1 - seq_len if seq_len else 0
    return Positions(ids[:, None, :], delta)
