"""The ``fixed`` scheme: (pad to square) → resize → centre crop → rescale + normalise, in one pass.

Fused: the crop window is folded into the resampling (only the kept rows/columns are computed),
and rescale + mean/std happen through a 256-entry lookup table per channel while writing the
CHW output, so the only intermediates are uint8 and at most output-sized in one axis.
"""

from __future__ import annotations

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout

__all__ = ["fixed_output_shape", "fixed_plan", "fixed_tiles", "normalise_lut", "resize_target"]


def resize_target(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """Size after resize, as transformers' ``get_resize_output_image_size`` computes it."""
    if spec.resize == "none":
        return h, w
    if spec.resize == "exact":
        return spec.size[0], spec.size[1]
    edge = spec.size[0]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(edge * long / short)
    return (new_long, edge) if w <= h else (edge, new_long)


def fixed_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> Placement:
    """One tile: the centre crop of the resized (padded) image. transformers' centre crop pads
    with 0 (before rescale) where the crop is larger than the image: a canvas filled with 0."""
    h, w = image_hw
    canvas = None
    if spec.pad_to_square and h != w:
        h = w = max(h, w)
        canvas = (h, w)
    rh, rw = resize_target(h, w, spec)
    ch, cw = spec.crop if spec.crop else (rh, rw)
    # crop start as transformers computes it; negative means the crop pads
    top, left = -((rh - ch) // 2), -((rw - cw) // 2)
    return Placement((rh, rw), (top, left), (Tile(0, 0, 0, ch, cw),), source_canvas=canvas, fill=(0, 0, 0))


def fixed_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Write one normalised (3, H, W) tile into ``out[0]``."""
    pl = fixed_plan(image.shape[:2], spec)
    run_placement(image, pl, spec, out, normalise_lut(spec, out.dtype), backend)
    tile = pl.tiles[0]
    return TileLayout(num_tiles=1, tile_hw=(tile.h, tile.w), num_image_tokens=spec.tokens_per_tile)


def fixed_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    tile = fixed_plan(image_hw, spec).tiles[0]
    return (1, 3, tile.h, tile.w)
