"""Connector output → the image's token embeddings, in prompt order.

Which layout applies is the preprocessing scheme's (from the manifest): a fixed tile is its
patches in order; an AnyRes batch is unpadded and gets a newline embedding per row.
"""

from __future__ import annotations

import numpy as np

from ..kernels.anyres import pack_anyres_features
from ..kernels.spec import PreprocessSpec


def pack_image_features(embeds: np.ndarray, image_hw, spec: PreprocessSpec, newline: np.ndarray | None) -> np.ndarray:
    """embeds (tiles, patches, d) → (num_image_tokens, d)."""
    if spec.scheme == "anyres":
        return pack_anyres_features(embeds, image_hw, spec, newline if spec.image_newline else None)
    return embeds.reshape(-1, embeds.shape[-1])
