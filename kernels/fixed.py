"""The ``fixed`` scheme: (pad to square) → resize → centre crop → rescale + normalise, in one pass.

Fused: the crop window is folded into the resampling (only the kept rows/columns are computed),
and rescale + mean/std happen through a 256-entry lookup table per channel while writing the
CHW output, so the only intermediates are uint8-valued and at most output-sized in one axis.
"""

from __future__ import annotations

import numpy as np

from .resample import resize_uint8
from .spec import PreprocessSpec, TileLayout


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


def normalise_lut(spec: PreprocessSpec) -> np.ndarray:
    """(3, 256) float32: uint8 value → normalised value, with transformers' float32 rounding."""
    v = (np.arange(256, dtype=np.float64) * spec.rescale_factor).astype(np.float32)
    if not spec.do_normalize:
        return np.broadcast_to(v, (3, 256)).copy()
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None]
    return ((v[None, :] - mean) / std).astype(np.float32)


def pad_square(image: np.ndarray, background: list[int]) -> np.ndarray:
    """Centre the image on a square canvas of its longest side, filled with ``background`` (uint8)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image
    return canvas


def crop_window(size: int, crop: int) -> tuple[slice, int]:
    """Rows kept by transformers' centre crop, and where they land in the output (it pads when size < crop)."""
    start = (size - crop) // 2
    if start >= 0:
        return slice(start, start + crop), 0
    return slice(0, size), -start


def fixed_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray) -> TileLayout:
    """Write one normalised (3, H, W) tile into ``out[0]``."""
    if spec.pad_to_square:
        image = pad_square(image, spec.background)
    h, w = image.shape[:2]
    rh, rw = resize_target(h, w, spec)
    ch, cw = spec.crop if spec.crop else (rh, rw)
    rows, top = crop_window(rh, ch)
    cols, left = crop_window(rw, cw)
    if spec.resize == "none":
        values = image[rows, cols].astype(np.float64)
    else:
        values = resize_uint8(image, rh, rw, spec.resample, rows=rows, cols=cols)
    lut = normalise_lut(spec)
    tile = out[0]
    if top or left or values.shape[:2] != (ch, cw):
        tile[:] = lut[:, 0][:, None, None]  # transformers pads with 0 before rescale
    idx = values.astype(np.intp)  # (h, w, 3)
    for c in range(3):
        tile[c, top : top + idx.shape[0], left : left + idx.shape[1]] = lut[c][idx[..., c]]
    return TileLayout(num_tiles=1, tile_hw=(ch, cw), num_image_tokens=spec.tokens_per_tile)


def fixed_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    h, w = image_hw
    if spec.pad_to_square:
        h = w = max(h, w)
    rh, rw = resize_target(h, w, spec)
    ch, cw = spec.crop if spec.crop else (rh, rw)
    return (1, 3, ch, cw)
