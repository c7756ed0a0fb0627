"""LLaVA-OneVision's feature side of AnyRes: the "anyres_max_N" token budget and the bilinear
resizes transformers applies to features (not pixels), in NumPy.

``budget_grid``: ``LlavaOnevisionModel.pack_image_features`` (and the processor's
``_get_unpadded_features``) — when the unpadded grid of patches is more than 1.1× the area of N
tiles (ratio = sqrt(h·w / (N·P²)) > 1.1) it is resized to (int(h // ratio), int(w // ratio)).

``bilinear_resize``: ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
without antialiasing — each output sample reads the two nearest inputs around
(i + 0.5)·in/out − 0.5 (clamped at 0), as PyTorch's upsample_bilinear2d kernel does.

``pool_frames``: ``LlavaOnevisionModel.apply_pooling`` — each video frame's P×P features
bilinearly resized to ceil(P / n)² (n = 2 in transformers).
"""

from __future__ import annotations

import math

import numpy as np


def budget_grid(height: int, width: int, per_tile: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of patches an unpadded (height, width) grid keeps under the N-tile budget
    (``max_tiles`` = N; 0: no budget). ``per_tile``: patches per tile side (P)."""
    if max_tiles <= 0:
        return height, width
    ratio = math.sqrt(height * width / (max_tiles * per_tile**2))
    if ratio > 1.1:
        return int(height // ratio), int(width // ratio)
    return height, width


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, lambda1) per output sample along one axis (float32, as PyTorch's opmath)."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, lam


def bilinear_resize(features: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(h, w, d) → (out_h, out_w, d), F.interpolate(bilinear, align_corners=False) per channel."""
    h, w, _ = features.shape
    if (h, w) == (out_h, out_w):
        return features
    y0, y1, ly = _axis_weights(h, out_h)
    x0, x1, lx = _axis_weights(w, out_w)
    ly, lx = ly[:, None, None], lx[None, :, None]
    top = features[y0][:, x0] * (1 - lx) + features[y0][:, x1] * lx  # (out_h, out_w, d)
    bottom = features[y1][:, x0] * (1 - lx) + features[y1][:, x1] * lx
    return ((1 - ly) * top + ly * bottom).astype(features.dtype)


def pooled_side(per_tile: int, pool: int) -> int:
    """Features per side of a frame after ``apply_pooling``: ceil(P / pool)."""
    return math.ceil(per_tile / pool) if pool > 1 else per_tile


def pool_frames(features: np.ndarray, per_tile: int, pool: int) -> np.ndarray:
    """(frames, P·P, d) → (frames, ceil(P/pool)², d): each frame's grid bilinearly resized."""
    frames, length, dim = features.shape
    if length != per_tile * per_tile:
        raise ValueError(f"expected {per_tile}×{per_tile} features per frame, got {length}")
    side = pooled_side(per_tile, pool)
    grids = features.reshape(frames, per_tile, per_tile, dim)
    return np.stack([bilinear_resize(g, side, side) for g in grids]).reshape(frames, side * side, dim)
