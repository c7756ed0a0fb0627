"""The ``canvas`` scheme (Llama-3.2-Vision, ``MllamaImageProcessorPil`` in transformers 5.24):

* the canvases are every (rows, cols) arrangement of at most ``max_tiles`` tiles
  (``get_all_supported_aspect_ratios``: rows outer, cols inner), each ``tile_size`` a side;
* ``get_optimal_tiled_canvas``: per canvas the scale that fits the picture inside it (the smaller
  of its height and width scales); the smallest scale ≥ 1 when one exists (the least upscaling),
  else the largest (the least downscaling); ties go to the smallest canvas area, then the first;
* ``get_image_size_fit_to_canvas``: the picture resized keeping its aspect (PIL, the processor's
  filter, bilinear) to fit that canvas, no side below ``tile_size`` unless the canvas' is;
* padded with 0 at the bottom and right to the canvas (before rescale / normalise, so the padding
  is the normalised black of ``background``) and cut row-major into ``tile_size``² tiles.

The processor then packs each picture to ``max_tiles`` tiles with zeros (after normalising); the
vision graph does that padding itself, so the kernel writes the picture's own tiles only. Every
picture is ``max_tiles · tokens_per_tile`` tokens of cross-attention memory (the padded tiles
included: the cross-attention mask hides them). ``canvas_geometry`` gives the aspect-ratio id and
mask the vision graph reads beside the pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


@lru_cache(maxsize=16)
def supported_arrangements(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(rows, cols) in transformers' order; the aspect-ratio id of arrangement i is i + 1."""
    return tuple((r, c) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1) if r * c <= max_tiles)


def best_canvas(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(rows, cols) of the canvas ``get_optimal_tiled_canvas`` picks for an (h, w) picture."""
    t = spec.tile_size
    options = supported_arrangements(spec.max_tiles)
    # float64 divisions, as NumPy does them in the processor
    scales = [min(r * t / h, c * t / w) for r, c in options]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(s for s in scales if s < 1)
    ties = [rc for rc, s in zip(options, scales) if s == chosen]
    return min(ties, key=lambda rc: rc[0] * rc[1])  # the first of the smallest area


def fit_to_canvas(h: int, w: int, canvas_h: int, canvas_w: int, t: int) -> tuple[int, int]:
    """(h, w) of the resized picture (``get_image_size_fit_to_canvas``)."""
    target_w, target_h = min(max(w, t), canvas_w), min(max(h, t), canvas_h)
    scale_h, scale_w = target_h / h, target_w / w
    if scale_w < scale_h:
        return min(math.floor(h * scale_w) or 1, target_h), target_w
    return target_h, min(math.floor(w * scale_h) or 1, target_w)


def canvas_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> list[Placement]:
    """One placement: the resized picture at the canvas' top left, its tiles row-major."""
    rows, cols = best_canvas(*image_hw, spec)
    t = spec.tile_size
    resized = fit_to_canvas(*image_hw, rows * t, cols * t, t)
    tiles = tuple(Tile(r * cols + c, r * t, c * t, t, t) for r in range(rows) for c in range(cols))
    return [Placement(resized, (0, 0), tiles)]


def canvas_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    rows, cols = best_canvas(*image_hw, spec)
    t = spec.tile_size
    return TileLayout(rows * cols, (t, t), spec.max_tiles * spec.tokens_per_tile, (rows, cols))


def canvas_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    return (canvas_layout(image_hw, spec).num_tiles, 3, spec.tile_size, spec.tile_size)


def canvas_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Write the picture's tiles into ``out`` (rows·cols, 3, t, t)."""
    lut = normalise_lut(spec, out.dtype)
    for pl in canvas_plan(image.shape[:2], spec):
        run_placement(image, pl, spec, out, lut, backend)
    return canvas_layout(image.shape[:2], spec)


def canvas_geometry(layout: TileLayout, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """aspect_ratio_ids (1, 1) int64: the arrangement's id (1-based; 0 is the processor's padding);
    aspect_ratio_mask (1, 1, max_tiles) int64: 1 for the picture's tiles, 0 for the padded ones."""
    ids = np.array([[supported_arrangements(spec.max_tiles).index(tuple(layout.grid)) + 1]], dtype=np.int64)
    mask = np.zeros((1, 1, spec.max_tiles), dtype=np.int64)
    mask[..., : layout.num_tiles] = 1
    return {"aspect_ratio_ids": ids, "aspect_ratio_mask": mask}
