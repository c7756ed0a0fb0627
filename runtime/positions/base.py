"""What every position scheme returns for one generation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Positions:
    """``prefill``: the prompt's position_ids, (1, seq) or (rows, 1, seq) int64. Decoding continues
    at ``cache tokens + delta`` on every row (delta is 0 for consecutive positions; M-RoPE's text
    after an image resumes past the image's largest position, so there it differs)."""

    prefill: np.ndarray
    delta: int = 0

    @property
    def rows(self) -> int:
        return 1 if self.prefill.ndim == 2 else self.prefill.shape[0]

    def decode(self, num_tokens: int) -> np.ndarray:
        """position_ids of the next single token: (1, 1) or (rows, 1, 1)."""
        shape = (1, 1) if self.prefill.ndim == 2 else (self.rows, 1, 1)
        return np.full(shape, num_tokens + self.delta, dtype=np.int64)
