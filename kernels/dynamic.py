"""The ``dynamic`` scheme (InternVL 2.5 / 3): a grid of tiles at the closest aspect ratio, plus a thumbnail.

Mirrors ``GotOcr2ImageProcessorPil`` with ``crop_to_patches=True`` (what ``InternVLProcessor``
passes, whatever the image processor's own config says):

* grids are every (cols, rows) with ``min_tiles <= cols·rows <= max_tiles`` (min_patches /
  max_patches), in ``get_all_supported_aspect_ratios``' order — cols outer, rows inner, then a
  stable sort by tile count;
* ``get_optimal_tiled_canvas`` takes the first with the smallest |w/h − cols/rows|; a later grid
  at the same difference replaces it while the image's area exceeds half the grid's pixels;
* the whole image is resized (aspect not kept, PIL with the processor's filter) to
  (rows·tile, cols·tile) and cut row-major into tiles; when there is more than one tile the image
  resized to tile × tile is appended last (the thumbnail);
* ``max_tiles <= 1``: the processor skips cropping and only resizes to tile × tile.

Every tile is ``tokens_per_tile`` image tokens, in tile order.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


@lru_cache(maxsize=16)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(cols, rows) grids in transformers' order: by tile count, ties in (cols, rows) loop order."""
    grids = [(cols, rows) for cols in range(1, max_tiles + 1) for rows in range(1, max_tiles + 1)
             if min_tiles <= cols * rows <= max_tiles]
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def best_grid(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(rows, cols) of tiles for an (h, w) image, as ``get_optimal_tiled_canvas`` chooses them."""
    if spec.max_tiles <= 1:  # the processor's crop_to_patches path needs max_patches > 1
        return 1, 1
    aspect, area, t = w / h, w * h, spec.tile_size
    best_diff, best = float("inf"), (1, 1)
    for cols, rows in candidate_grids(spec.min_tiles, spec.max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff, best = diff, (cols, rows)
        elif diff == best_diff and area > 0.5 * t * t * cols * rows:  # more tiles, until they double the area
            best = (cols, rows)
    return best[1], best[0]


def dynamic_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> list[Placement]:
    """[grid placement] or [grid placement, thumbnail placement]; tiles 0 … rows·cols − 1 row-major,
    the thumbnail at index rows·cols."""
    rows, cols = best_grid(*image_hw, spec)
    t = spec.tile_size
    tiles = tuple(Tile(r * cols + c, r * t, c * t, t, t) for r in range(rows) for c in range(cols))
    grid = Placement((rows * t, cols * t), (0, 0), tiles)
    if rows * cols == 1:
        return [grid]
    return [grid, Placement((t, t), (0, 0), (Tile(rows * cols, 0, 0, t, t),))]


def dynamic_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    rows, cols = best_grid(*image_hw, spec)
    n = rows * cols + (1 if rows * cols > 1 else 0)
    t = spec.tile_size
    return TileLayout(n, (t, t), n * spec.tokens_per_tile, (rows, cols))


def dynamic_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    return (dynamic_layout(image_hw, spec).num_tiles, 3, spec.tile_size, spec.tile_size)


def dynamic_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Write the grid tiles, then the thumbnail, into ``out`` (num_tiles, 3, t, t)."""
    lut = normalise_lut(spec, out.dtype)
    for pl in dynamic_plan(image.shape[:2], spec):
        run_placement(image, pl, spec, out, lut, backend)
    return dynamic_layout(image.shape[:2], spec)
