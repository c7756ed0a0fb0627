"""Separable resampling that reproduces Pillow's ``Image.resize`` bit for bit on uint8 images.

Pillow resizes 8-bit images in two passes (horizontal, then vertical), each with fixed-point
coefficients of ``PRECISION_BITS`` fraction bits, rounding and clipping to uint8 after each
pass (libImaging/Resample.c). The Hugging Face PIL image processors resize through Pillow, so
emulating that integer arithmetic exactly is what makes our pixels match theirs to float
rounding instead of to ±1 grey level.

The passes here are banded: for each of the ``ksize`` taps we gather one column (or row) per
output pixel and accumulate in float64, which holds these integer sums exactly (|sum| < 2^40).
Only the output window that is actually needed (a centre crop, a tile) is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow: Resample.c


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0),
    )


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _lanczos(x: np.ndarray) -> np.ndarray:
    def sinc(v):
        return np.where(v == 0.0, 1.0, np.sin(np.pi * v) / np.where(v == 0.0, 1.0, np.pi * v))

    return np.where((x > -3.0) & (x < 3.0), sinc(x) * sinc(x / 3.0), 0.0)


# name → (filter, support); Pillow's enum values are accepted too (see FILTER_IDS).
FILTERS = {
    "box": (_box, 0.5),
    "bilinear": (_bilinear, 1.0),
    "bicubic": (_bicubic, 2.0),
    "lanczos": (_lanczos, 3.0),
}
FILTER_IDS = {1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box"}


def filter_name(resample: int | str) -> str:
    """Normalise a Pillow enum value or name ('bicubic') to a name in FILTERS."""
    name = FILTER_IDS.get(resample, resample) if isinstance(resample, int) else str(resample).lower()
    if name not in FILTERS:
        raise ValueError(f"unsupported resampling filter {resample!r}; choose one of {sorted(FILTERS)}")
    return name


@dataclass(frozen=True)
class Coeffs:
    """Banded fixed-point weights for one axis: output i reads input[start[i] + k] * weight[i, k]."""

    start: np.ndarray  # (out,) int64
    weight: np.ndarray  # (out, ksize) float64 holding Pillow's integer coefficients
    ksize: int


def precompute_coeffs(in_size: int, out_size: int, resample: str) -> Coeffs:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for box (0, in_size)."""
    name = filter_name(resample)
    filt, support = FILTERS[name]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) cast truncates toward zero; negatives are clamped to 0 right after anyway
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    w = filt((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale)
    w = np.where(taps[None, :] < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0.0, w / np.where(total == 0.0, 1.0, total), 0.0)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * (1 << PRECISION_BITS)), np.trunc(0.5 + w * (1 << PRECISION_BITS)))
    # taps past the end of the input carry weight 0; clamp their index so the gather stays in bounds
    return Coeffs(xmin, fixed, ksize)


def _round_clip(acc: np.ndarray) -> np.ndarray:
    """Pillow's clip8: (acc + 2^(P-1)) >> P, clamped to [0, 255]."""
    return np.clip(np.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)), 0, 255)


def resample_axis(image: np.ndarray, coeffs: Coeffs, axis: int, limit: int) -> np.ndarray:
    """Resample ``image`` (H, W, C) along ``axis`` (0 rows, 1 columns); returns float64 holding uint8 values."""
    out_len = coeffs.start.shape[0]
    shape = list(image.shape)
    shape[axis] = out_len
    acc = np.zeros(shape, dtype=np.float64)
    for k in range(coeffs.ksize):
        idx = np.minimum(coeffs.start + k, limit - 1)
        w = coeffs.weight[:, k]
        if not w.any():
            continue
        src = np.take(image, idx, axis=axis)
        acc += src * (w[:, None, None] if axis == 0 else w[None, :, None])
    return _round_clip(acc)


def resize_uint8(image: np.ndarray, height: int, width: int, resample: str, rows=None, cols=None) -> np.ndarray:
    """Pillow-exact resize of an (H, W, C) uint8 image to (height, width).

    ``rows``/``cols`` (slices) restrict the output to a window — a centre crop or a tile —
    so only the needed outputs are computed. Returns float64 holding integer values 0..255.
    """
    in_h, in_w = image.shape[:2]
    rows = rows or slice(0, height)
    cols = cols or slice(0, width)
    out = image
    if width != in_w:
        c = precompute_coeffs(in_w, width, resample)
        c = Coeffs(c.start[cols], c.weight[cols], c.ksize)
        out = resample_axis(out, c, axis=1, limit=in_w)
    else:
        out = out[:, cols]
    if height != in_h:
        c = precompute_coeffs(in_h, height, resample)
        c = Coeffs(c.start[rows], c.weight[rows], c.ksize)
        out = resample_axis(out, c, axis=0, limit=in_h)
    else:
        out = out[rows]
    return out
