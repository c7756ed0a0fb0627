"""CogVLM's positions: text advances one per token; each image slot run's first token (boi) takes
the next position, all its interior tokens share the one after, and its last token (eoi) the one
after that — so an image of any size spans three positions. As the original's
``build_position_ids``, which counts boi/eoi as text and a run of vision tokens as one step.
Decoding continues after the largest position (delta = max + 1 − prompt length).
"""

from __future__ import annotations

import numpy as np

from .base import Positions


def plan(seq_len: int, image_slots: list[tuple[int, int]], token_grids, time_steps, spec=None) -> Positions:
    step = np.ones(seq_len, dtype=np.int64)  # how far each token moves past the one before it
    for start, count in image_slots:
        if count < 3:
            raise ValueError(f"a shared-position image run needs begin, interior and end tokens; this one has {count}")
        step[start + 2 : start + count - 1] = 0  # the interior after its first token: same position
    if seq_len:
        step[0] = 0  # the first token is at 0
    ids = np.cumsum(step)[None, :]
    delta = int(ids.max()) + 1 - seq_len if seq_len else 0
    return Positions(ids, delta)
