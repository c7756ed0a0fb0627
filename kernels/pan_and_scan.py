"""The ``pan_and_scan`` scheme (Gemma 3's ``do_pan_and_scan``): the whole picture, plus crops of a
very wide or very tall one, each resized to ``size``.

Mirrors ``Gemma3ImageProcessorPil.pan_and_scan`` (transformers 5.24):

* landscape (w ≥ h) with w / h ≥ ``pan_min_ratio``: ``round_half_up(w / h)`` crops across, at
  most w // ``pan_min_crop``, clamped to [2, ``pan_max_crops``], one row; portrait the same
  down the height; otherwise no crops;
* each crop is ceil(w / n) (or ceil(h / n)) wide, cut from x = i · that, so the last one is cut
  short at the border; no crops when a crop's short side is under ``pan_min_crop``;
* tile 0 is the whole picture resized to ``size``, tiles 1 … n the crops (row-major), each its
  own source window resized to ``size`` with the processor's filter.

Every tile is ``tokens_per_tile`` image tokens; ``TileLayout.grid`` is the crops' (rows, cols),
(0, 0) when there are none (the picture alone: runtime/tile_prompt.py writes ``single``).
"""

from __future__ import annotations

import math

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


def crop_grid(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(rows, cols) of crops for an (h, w) picture; (0, 0) when it gets none."""
    long, short = (w, h) if w >= h else (h, w)
    if long / short < spec.pan_min_ratio:
        return 0, 0
    n = min(int(math.floor(long / short + 0.5)), int(math.floor(long / spec.pan_min_crop)))
    n = min(spec.pan_max_crops, max(2, n))
    rows, cols = (1, n) if w >= h else (n, 1)
    if min(math.ceil(w / cols), math.ceil(h / rows)) < spec.pan_min_crop:
        return 0, 0
    return rows, cols


def pan_and_scan_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> list[Placement]:
    h, w = image_hw
    th, tw = spec.size
    plans = [Placement((th, tw), (0, 0), (Tile(0, 0, 0, th, tw),))]
    rows, cols = crop_grid(h, w, spec)
    ch, cw = (math.ceil(h / rows), math.ceil(w / cols)) if rows else (0, 0)
    for i, (r, c) in enumerate((r, c) for r in range(rows) for c in range(cols)):
        y, x = r * ch, c * cw
        window = (y, x, min(ch, h - y), min(cw, w - x))  # numpy's slice stops at the border
        plans.append(Placement((th, tw), (0, 0), (Tile(i + 1, 0, 0, th, tw),), source_window=window))
    return plans


def pan_and_scan_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    rows, cols = crop_grid(*image_hw, spec)
    n = 1 + rows * cols
    return TileLayout(n, tuple(spec.size), n * spec.tokens_per_tile, (rows, cols))


def pan_and_scan_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    return (pan_and_scan_layout(image_hw, spec).num_tiles, 3, spec.size[0], spec.size[1])


def pan_and_scan_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """The whole picture into ``out[0]``, its crops into ``out[1:]`` (num_tiles, 3, H, W)."""
    lut = normalise_lut(spec, out.dtype)
    for pl in pan_and_scan_plan(image.shape[:2], spec):
        run_placement(image, pl, spec, out, lut, backend)
    return pan_and_scan_layout(image.shape[:2], spec)
