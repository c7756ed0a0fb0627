"""offset, offset + 1 … for every token, images included (1-D RoPE or learned positions; the
offset is 0 but for PaliGemma, whose positions count from 1)."""

from __future__ import annotations

import numpy as np

from .base import Positions


def plan(seq_len: int, image_slots, token_grids, time_steps, spec) -> Positions:
    return Positions(np.arange(spec.offset, spec.offset + seq_len, dtype=np.int64)[None, :], spec.offset)
