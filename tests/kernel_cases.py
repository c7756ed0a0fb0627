"""Shared inputs for the kernel tests: random images of many sizes and aspect ratios, a few big."""

from __future__ import annotations

import numpy as np

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# (h, w): a pixel, tiny, square, portrait/landscape, extreme strips, HD and 4K-wide
SIZES = [(1, 1), (3, 7), (17, 5), (336, 336), (480, 640), (900, 500), (50, 2000), (2000, 50), (1080, 1920), (1600, 3840)]


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 noise: every resampling tap matters, unlike flat test cards."""
    return np.random.default_rng(seed + 7919 * h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
