"""Connector output → the image's token embeddings, in prompt order.

Which layout applies is the preprocessing scheme's (from the manifest): a fixed tile is its
patches in order; an AnyRes batch is unpadded and gets a newline embedding per row; an HD batch
is the global view and the stitched local grid, rows ended by newlines, a separator between.
"""

from __future__ import annotations

import numpy as np

from ..kernels.anyres import pack_anyres_features
from ..kernels.anyres_max import pool_frames
from ..kernels.hd import hd_grid, pack_hd_features
from ..kernels.patches import patches_layout
from ..kernels.spec import PreprocessSpec


def pack_image_features(embeds: np.ndarray, image_hw, spec: PreprocessSpec, newline: np.ndarray | None,
                        separator: np.ndarray | None = None) -> np.ndarray:
    """embeds (tiles, patches, d) → (num_image_tokens, d). ``separator``: hd's token between views."""
    if spec.scheme == "anyres":
        return pack_anyres_features(embeds, image_hw, spec, newline if spec.image_newline else None)
    if spec.scheme == "hd":
        if separator is None or (spec.image_newline and newline is None):
            raise ValueError("hd packing needs the newline and view-separator embeddings; the manifest's image "
                             "section must name them (newline_path, separator_path)")
        return pack_hd_features(embeds, hd_grid(image_hw, spec), spec, newline, separator)
    if spec.scheme == "patches" and spec.image_newline:
        return append_row_newlines(embeds, patches_layout(image_hw, spec).grid, newline)
    return embeds.reshape(-1, embeds.shape[-1])


def append_row_newlines(embeds: np.ndarray, grid: tuple[int, int], newline: np.ndarray) -> np.ndarray:
    """(rows·cols, d) patch embeddings → (rows·(cols + 1), d): ``newline`` ends every row."""
    rows, cols = grid
    d = embeds.shape[-1]
    out = np.empty((rows, cols + 1, d), dtype=embeds.dtype)
    out[:, :cols] = embeds.reshape(rows, cols, d)
    out[:, cols] = newline
    return out.reshape(-1, d)


def pack_video_features(embeds: np.ndarray, spec: PreprocessSpec, newline: np.ndarray | None) -> np.ndarray:
    """Per-frame embeds (frames, P·P, d) → (tokens, d): each frame pooled (``feature_pooling``), the
    frames in order, then one ``newline`` after the video when the spec has ``image_newline``."""
    if spec.feature_pooling > 1:
        embeds = pool_frames(embeds, spec.tile_size // spec.patch_size, spec.feature_pooling)
    flat = embeds.reshape(-1, embeds.shape[-1])
    if not spec.image_newline:
        return flat
    if newline is None:
        raise ValueError("this video layout ends with a newline embedding; the manifest's image section must name "
                         "it (newline_path)")
    return np.concatenate([flat, np.asarray(newline, dtype=flat.dtype)[None]], axis=0)
