"""0, 1, 2 … for every token, images included (1-D RoPE or learned positions)."""

from __future__ import annotations

import numpy as np

from .base import Positions


def plan(seq_len: int, image_slots, token_grids, time_steps) -> Positions:
    return Positions(np.arange(seq_len, dtype=np.int64)[None, :])
