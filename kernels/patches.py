"""The ``patches`` scheme (Fuyu): no tiles, a sequence of flattened pixel patches.

Mirrors ``FuyuImageProcessorPil`` + ``FuyuProcessor._process_images``: an image larger than
``size`` = [h, w] is shrunk to fit (aspect kept, int() of the scaled sides, never enlarged), padded
right/bottom with ``background`` — Fuyu's padding_value 1.0 is applied to the uint8 image, i.e.
grey level 1, before rescale — and cropped to the next multiple of ``patch_size``; the result is cut
into row-major patches flattened in (y, x, channel) order (``patchify_image``).
Output (rows·cols, patch·patch·3); the runtime puts a newline token after every row of patches.
"""

from __future__ import annotations

import math

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


def fit_size(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """FuyuImageProcessor.resize: shrink to fit ``size`` keeping the aspect ratio, never enlarge."""
    th, tw = spec.size
    if h <= th and w <= tw:
        return h, w
    scale = min(th / h, tw / w)
    nh, nw = int(h * scale), int(w * scale)
    if nh == 0 or nw == 0:
        raise ValueError(f"a {h}×{w} image is too elongated to fit {th}×{tw} (a side would be 0 pixels); crop it first")
    return nh, nw


def patches_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[Placement, int, int]:
    """(placement, rows, cols) of patches for an (h, w) image."""
    p = spec.patch_size
    nh, nw = fit_size(*image_hw, spec)
    rows, cols = math.ceil(nh / p), math.ceil(nw / p)
    pl = Placement((nh, nw), (0, 0), (Tile(0, 0, 0, rows * p, cols * p),), layout="patches", patch=p)
    return pl, rows, cols


def patches_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    pl, _, _ = patches_plan(image.shape[:2], spec)
    run_placement(image, pl, spec, out, normalise_lut(spec, out.dtype), backend)
    return patches_layout(image.shape[:2], spec)


def patches_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    """rows·cols patches; with ``image_newline`` a newline token after every row (FuyuProcessor)."""
    _, rows, cols = patches_plan(image_hw, spec)
    tokens = rows * (cols + 1) if spec.image_newline else rows * cols
    return TileLayout(rows * cols, (spec.patch_size, spec.patch_size), tokens, (rows, cols))


def patches_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    _, rows, cols = patches_plan(image_hw, spec)
    return (rows * cols, spec.patch_size * spec.patch_size * 3)
