"""The ``anyres`` scheme (LLaVA-NeXT): a base view plus a grid of tiles at the best resolution.

Mirrors ``LlavaNextImageProcessorPil.get_image_patches``: ``select_best_resolution`` picks a
pinpoint, the image is resized keeping its aspect ratio (``get_patch_output_size``), padded with 0
(centred, the odd pixel at the bottom/right), cut into ``tile_size`` tiles; the base image, resized
to tile_size × tile_size, comes first. The resize runs once; every tile is a window of it.

Feature side: ``anyres_num_image_tokens`` and ``pack_anyres_features`` reproduce
``LlavaNextProcessor._get_number_of_features`` and ``LlavaNextModel.pack_image_features``
(``unpad_image`` + one ``image_newline`` per row) in NumPy.

LLaVA-OneVision (``anyres_max_tiles`` = N of "anyres_max_N"): the unpadded grid is bilinearly
downsampled when over N tiles' worth of patches (kernels/anyres_max.py); with ``base_only`` (set by
``for_images`` for multi-image prompts) an image is its base view alone, padded to a square with
``background`` before the resize (``LlavaOnevisionImageProcessor.pad_to_square``), and one newline
follows its features.
"""

from __future__ import annotations

import math

import numpy as np

from .anyres_max import bilinear_resize, budget_grid
from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


def select_best_resolution(h: int, w: int, pinpoints) -> tuple[int, int]:
    """transformers' ``select_best_resolution``: most effective pixels, then least waste."""
    best, best_eff, best_waste = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        eff = min(int(w * scale) * int(h * scale), w * h)
        waste = pw * ph - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (ph, pw), eff, waste
    return best


def patch_output_size(h: int, w: int, target: tuple[int, int]) -> tuple[int, int]:
    """transformers' ``get_patch_output_size``: aspect-preserving fit inside ``target``."""
    th, tw = target
    sw, sh = tw / w, th / h
    if sw < sh:
        return min(math.ceil(h * sw), th), tw
    return th, min(math.ceil(w * sh), tw)


def anyres_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[Placement, ...]:
    """(base view placement, grid placement) for an (h, w) image; (base view,) with ``base_only``."""
    h, w = image_hw
    t = spec.tile_size
    if spec.base_only:  # padded to a square of ``background`` first, then resized to t × t
        canvas = (max(h, w),) * 2 if h != w else None
        return (Placement((t, t), (0, 0), (Tile(0, 0, 0, t, t),), source_canvas=canvas, fill=(0, 0, 0)),)
    bh, bw = select_best_resolution(h, w, spec.grid_pinpoints)
    nh, nw = patch_output_size(h, w, (bh, bw))
    rows, cols = bh // t, bw // t
    base = Placement((t, t), (0, 0), (Tile(0, 0, 0, t, t),), fill=(0, 0, 0))
    tiles = tuple(Tile(1 + r * cols + c, r * t, c * t, t, t) for r in range(rows) for c in range(cols))
    grid = Placement((nh, nw), ((bh - nh) // 2, (bw - nw) // 2), tiles, fill=(0, 0, 0))
    return base, grid


def unpadded_grid(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(rows, cols) of the tile grid and the (height, width) in patches kept by ``unpad_image``."""
    t, p = spec.tile_size, spec.patch_size
    bh, bw = select_best_resolution(h, w, spec.grid_pinpoints)
    rows, cols = bh // t, bw // t
    cur_h, cur_w = rows * (t // p), cols * (t // p)
    if w / h > cur_w / cur_h:
        new_h = int(round(h * (cur_w / w), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(w * (cur_h / h), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    return rows, cols, cur_h, cur_w


def anyres_num_image_tokens(h: int, w: int, spec: PreprocessSpec) -> int:
    """Image tokens for an (h, w) image: base (tile/patch)² + unpadded grid + one newline per row.

    Equals LlavaNextProcessor's count with ``num_additional_image_tokens=1`` and the "default"
    feature select strategy (CLS dropped), the llava-hf checkpoints' setting."""
    per_side = spec.tile_size // spec.patch_size
    newline = 1 if spec.image_newline else 0
    if spec.base_only:
        return per_side * per_side + newline
    _, _, cur_h, cur_w = unpadded_grid(h, w, spec)
    cur_h, cur_w = budget_grid(cur_h, cur_w, per_side, spec.anyres_max_tiles)
    return per_side * per_side + cur_h * cur_w + cur_h * newline


def pack_anyres_features(features: np.ndarray, image_hw, spec: PreprocessSpec, image_newline=None) -> np.ndarray:
    """(1 + rows·cols, P·P, D) per-tile features → (num_image_tokens, D), as pack_image_features.

    P = tile_size // patch_size. The grid is stitched into (rows·P, cols·P, D), the padding rows or
    columns ``unpad_image`` removes are dropped, ``image_newline`` (D,) ends every row, and the base
    tile's features come first."""
    h, w = image_hw
    per = spec.tile_size // spec.patch_size
    n, length, dim = features.shape
    if spec.base_only:
        return _base_only_features(features, per, image_newline)
    rows, cols, cur_h, cur_w = unpadded_grid(h, w, spec)
    if n != 1 + rows * cols or length != per * per:
        raise ValueError(
            f"expected features of shape ({1 + rows * cols}, {per * per}, D) for a {h}×{w} image, got {features.shape}"
        )
    grid = features[1:].reshape(rows, cols, per, per, dim).transpose(0, 2, 1, 3, 4).reshape(rows * per, cols * per, dim)
    top, left = (rows * per - cur_h) // 2, (cols * per - cur_w) // 2
    grid = grid[top : top + cur_h, left : left + cur_w]
    grid = bilinear_resize(grid, *budget_grid(cur_h, cur_w, per, spec.anyres_max_tiles))
    cur_h = grid.shape[0]
    if image_newline is not None:
        newline = np.broadcast_to(np.asarray(image_newline, dtype=features.dtype), (cur_h, 1, dim))
        grid = np.concatenate([grid, newline], axis=1)
    return np.concatenate([features[0], grid.reshape(-1, dim)], axis=0)


def _base_only_features(features: np.ndarray, per: int, image_newline) -> np.ndarray:
    """(1, P·P, D) → (P·P [+ 1], D): the base view's features, then the newline."""
    if features.shape[:2] != (1, per * per):
        raise ValueError(f"expected features of shape (1, {per * per}, D) for a base-only image, got {features.shape}")
    if image_newline is None:
        return features[0]
    return np.concatenate([features[0], np.asarray(image_newline, dtype=features.dtype)[None]], axis=0)


def anyres_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Write the base view and the grid tiles into ``out`` (1 + rows·cols, 3, t, t)."""
    lut = normalise_lut(spec, out.dtype)
    for placement in anyres_plan(image.shape[:2], spec):
        run_placement(image, placement, spec, out, lut, backend)
    return anyres_tiles_layout(image.shape[:2], spec)


def anyres_tiles_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    h, w = image_hw
    rows, cols = (0, 0) if spec.base_only else unpadded_grid(h, w, spec)[:2]
    t = spec.tile_size
    return TileLayout(1 + rows * cols, (t, t), anyres_num_image_tokens(h, w, spec), (max(rows, 1), max(cols, 1)))


def anyres_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    t = spec.tile_size
    if spec.base_only:
        return (1, 3, t, t)
    bh, bw = select_best_resolution(*image_hw, spec.grid_pinpoints)
    return (1 + (bh // t) * (bw // t), 3, t, t)
