"""Separable resampling that reproduces Pillow's ``Image.resize`` bit for bit on uint8 images.

Pillow resizes 8-bit images in two passes (horizontal, then vertical), each with fixed-point
coefficients of ``PRECISION_BITS`` fraction bits, rounding and clipping to uint8 after each
pass (libImaging/Resample.c). The Hugging Face PIL image processors resize through Pillow, so
emulating that integer arithmetic exactly is what makes our pixels match theirs to float
rounding instead of to ±1 grey level.

Each pass is a banded matrix product, done as dense blocks of ``BLOCK`` outputs in float32
(BLAS sgemm). float32 is *not* exact here: a product pixel × coefficient needs up to 30 bits.
The error is bounded (see ``_ambiguity``), so outputs whose float32 sum lies within that bound
of a rounding boundary — about 0.1 % of them — are recomputed exactly in float64, which holds
these integer sums exactly (|sum| < 2^31); blocks full of exact ties are redone in float64
outright — except blocks whose coefficients are dyadic (exact scales: 2×, ½×), where float32 is
exact and nothing is redone. Result: Pillow's exact uint8 values at sgemm speed.
Only the output window that is actually needed (a centre crop, a tile) is computed, and a small
output is computed in bands of output rows so the working memory follows the output's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .blas import single_thread_blas

PRECISION_BITS = 32 - 8 - 2  # Pillow: Resample.c
BLOCK = 32  # outputs per dense block: larger blocks waste more zero taps, smaller ones cost more calls
STRIP_ELEMS = 1 << 19  # at most this many uint8 → float32 elements converted at a time in the first pass (2 MiB)
# Working memory follows the output (``budget``: a quarter of the caller's output bytes, i.e. its values
# when float32). The first pass's float32 strip holds at most budget / 2 elements (floor MIN_STRIP_ELEMS:
# narrower strips make the GEMMs too small to be fast), and the intermediate image, when larger than
# 3 × budget bytes, is made a band of output rows at a time, each under budget / 2 bytes. Extra memory so
# stays under twice the output (benchmarks/bench_kernels.py); multi-tile outputs keep 2 MiB strips and
# whole-picture passes, the fastest.
MIN_STRIP_ELEMS = 1 << 16


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

    def window(self, sel) -> Coeffs:
        """The coefficients of the outputs ``sel`` (a slice or an index array)."""
        return Coeffs(self.start[sel], self.weight[sel], self.ksize)


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
    # taps past the end of the input carry weight 0
    return Coeffs(xmin, fixed, ksize)


def identity_coeffs(size: int) -> Coeffs:
    """Coefficients of a pass that keeps the axis as is (weight 1.0 on one tap)."""
    return Coeffs(np.arange(size, dtype=np.int64), np.full((size, 1), float(1 << PRECISION_BITS)), 1)


def _ambiguity(c: Coeffs) -> float:
    """Half-width (in output grey levels) of the band around a rounding boundary where a float32
    sum may round the wrong way: each of the ≤ ksize nonzero products and partial sums adds at
    most 2^-24 relative error of Σ|x·w| ≤ 255·Σ|w| (exact zeros add none), plus the float32
    rounding of the rescaled sum itself (≤ 2^-15 at magnitudes < 512).

    0 when float32 is exact: if every weight is a multiple of one power of two g and 255·Σ|w|/g
    < 2^24, every product and partial sum is an integer multiple of g that float32 holds exactly
    (in any summation order, FMA or not), and so are the rescale and the + 0.5. That is the case
    of exact scales such as 2× — where nearly every sum is a rounding tie and the float64 redo
    would otherwise run on every block."""
    if _exact_in_float32(c.weight):
        return 0.0
    bound = (c.ksize + 1) * 2.0**-24 * 255.0 * float(np.abs(c.weight).sum(axis=1).max(initial=0.0))
    return 2.0 * bound / (1 << PRECISION_BITS) + 2.0**-14


def _exact_in_float32(weight: np.ndarray) -> bool:
    ints = np.abs(weight).astype(np.int64)  # Pillow's integer coefficients (held in float64)
    nonzero = ints[ints != 0]
    if nonzero.size == 0:
        return True
    g = int(np.min(nonzero & -nonzero))  # the largest power of two dividing every coefficient
    return 255 * int(ints.sum(axis=1).max()) // g < (1 << 24)


def _dense_block(c: Coeffs, o0: int, o1: int, limit: int) -> tuple[int, int, np.ndarray]:
    """Input span [s0, s1) of outputs [o0, o1) and their weights as a dense (span, n) float32 matrix."""
    start, weight = c.start[o0:o1], c.weight[o0:o1]
    s0 = int(start.min())
    s1 = min(int(start.max()) + c.ksize, limit)
    rows = start[:, None] - s0 + np.arange(c.ksize)[None, :]  # (n, ksize)
    cols = np.broadcast_to(np.arange(o1 - o0)[:, None], rows.shape)
    valid = rows < s1 - s0  # taps past the input end carry weight 0
    dense = np.zeros((s1 - s0, o1 - o0), dtype=np.float32)
    dense[rows[valid], cols[valid]] = weight[valid]
    return s0, s1, dense


def _clip8_block(a: np.ndarray, dense: np.ndarray, start: np.ndarray, weight: np.ndarray, amb: float) -> np.ndarray:
    """Pillow's clip8(a @ dense): a (M, span) float32 holding uint8 values → (M, n) uint8.

    ``start`` (n,) is relative to the span; ``weight`` (n, ksize) are the block's coefficients."""
    t = a @ dense  # (M, n); products are rounded in float32, fixed up below
    t *= np.float32(2.0**-PRECISION_BITS)
    t += np.float32(0.5)
    out = np.floor(t)
    t -= out  # fractional part
    m, o = np.nonzero((t < amb) | (t > 1.0 - amb))
    if m.size > t.size // 32:
        # many exact ties (scales like 2× give binary-fraction weights): redo the block in float64
        exact = a.astype(np.float64) @ dense.astype(np.float64)
        out = np.floor((exact + (1 << (PRECISION_BITS - 1))) * 2.0**-PRECISION_BITS)
    elif m.size:
        taps = np.minimum(start[o][:, None] + np.arange(weight.shape[1]), a.shape[1] - 1)
        exact = (a[m[:, None], taps].astype(np.float64) * weight[o]).sum(axis=1)
        out[m, o] = np.floor((exact + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS))
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def pass_cols(src: np.ndarray, c: Coeffs, strip_elems: int = STRIP_ELEMS) -> np.ndarray:
    """Resample the last axis of ``src`` (R, 3, W) uint8 → (R, 3, n) uint8 (Pillow's horizontal pass)."""
    rows, n, width = src.shape[0], c.start.shape[0], src.shape[2]
    out = np.empty((rows, 3, n), dtype=np.uint8)
    lo = int(c.start.min())
    hi = min(int(c.start.max()) + c.ksize, width)
    blocks = [(o0, min(o0 + BLOCK, n)) for o0 in range(0, n, BLOCK)]
    ambs = [_ambiguity(c.window(slice(o0, o1))) for o0, o1 in blocks]  # per block: edge rows are inexact
    dense = [_dense_block(c, o0, o1, width) for o0, o1 in blocks]
    strip = max(1, strip_elems // (3 * (hi - lo)))
    for r0 in range(0, rows, strip):
        r1 = min(r0 + strip, rows)
        # (S, 3, span) → (S·3, span) float32: one conversion per strip, shared by its blocks
        # transpose as uint8 first: 3× faster than a transposing float conversion
        a = np.ascontiguousarray(src[r0:r1, :, lo:hi]).astype(np.float32).reshape(-1, hi - lo)
        for (o0, o1), (s0, s1, d), amb in zip(blocks, dense, ambs):
            start = c.start[o0:o1] - s0
            v = _clip8_block(a[:, s0 - lo : s1 - lo], d, start, c.weight[o0:o1], amb)
            out[r0:r1, :, o0:o1] = v.reshape(r1 - r0, 3, o1 - o0)
    return out


def pass_rows(src: np.ndarray, c: Coeffs) -> np.ndarray:
    """Resample the first axis of ``src`` (H, 3, W) uint8 → (n, 3, W) uint8 (Pillow's vertical pass)."""
    n, width = c.start.shape[0], src.shape[2]
    out = np.empty((n, 3, width), dtype=np.uint8)
    for o0 in range(0, n, BLOCK):
        o1 = min(o0 + BLOCK, n)
        amb = _ambiguity(c.window(slice(o0, o1)))
        s0, s1, d = _dense_block(c, o0, o1, src.shape[0])
        a = np.ascontiguousarray(src[s0:s1]).astype(np.float32).reshape(s1 - s0, -1).T  # (3W, span) view
        v = _clip8_block(a, d, c.start[o0:o1] - s0, c.weight[o0:o1], amb)  # (3W, n)
        out[o0:o1] = v.T.reshape(o1 - o0, 3, width)
    return out


def _axis_coeffs(in_size: int, out_size: int, resample: str, sel) -> Coeffs:
    c = precompute_coeffs(in_size, out_size, resample) if in_size != out_size else identity_coeffs(in_size)
    return c.window(sel)


def _span(c: Coeffs, limit: int) -> slice:
    """Input indices read by ``c``: restricts the first pass to what the second pass needs."""
    return slice(int(c.start.min()), min(int(c.start.max()) + c.ksize, limit))


def pillow_vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool:
    """Pass order Pillow ≥ 13 uses (python-pillow/Pillow#9549): the vertical pass runs first when
    the height shrinks by more than twice as many pixels as the width. Found by testing against
    the installed Pillow (tests/test_kernels_resample.py); older Pillow always went horizontal first."""
    return PILLOW_REORDERS and out_h < in_h and 2 * (in_w - out_w) < in_h - out_h


def _pillow_reorders() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("pillow").split(".")[0]) >= 13
    except (PackageNotFoundError, ValueError):
        return True


PILLOW_REORDERS = _pillow_reorders()


def resize_hcw(image, height, width, resample, rows=None, cols=None, transposed=False, budget=None) -> np.ndarray:
    """Pillow-exact resize of ``image`` (H, W, 3) uint8 to (height, width), window only.

    ``rows``/``cols`` (slices or sorted index arrays) pick the output window — a centre crop,
    the tiles. ``transposed`` reproduces Pillow resizing the *transposed* image (then transposed
    back), as InternLM-XComposer does for portrait images: same coefficients, other pass order.
    Returns (len(rows), 3, len(cols)) uint8: rows × channels × columns, ready for a CHW write.
    ``budget`` scales the working memory (see MIN_STRIP_ELEMS); default: the window's value count.
    """
    in_h, in_w = image.shape[:2]
    rows = slice(0, height) if rows is None else rows
    cols = slice(0, width) if cols is None else cols
    cv = _axis_coeffs(in_h, height, resample, rows)
    ch = _axis_coeffs(in_w, width, resample, cols)
    with single_thread_blas():
        budget = 3 * len(cv.start) * len(ch.start) if budget is None else int(budget)
        return _two_passes(image, height, width, cv, ch, transposed, budget)


def _two_passes(image, height, width, cv: Coeffs, ch: Coeffs, transposed: bool, budget: int) -> np.ndarray:
    """Both passes, whole or a band of output rows at a time (then the intermediate first-pass image
    only holds one band's rows). Each band's pixels are computed exactly as for the whole image."""
    in_h, in_w = image.shape[:2]
    src = image.transpose(0, 2, 1)  # (H, 3, W) view
    if transposed:
        vertical_first = not pillow_vertical_first(in_w, in_h, width, height)
    else:
        vertical_first = pillow_vertical_first(in_h, in_w, height, width)
    strip = min(STRIP_ELEMS, max(MIN_STRIP_ELEMS, budget // 2))
    n = len(cv.start)
    band = _band_rows(cv, ch, in_h, in_w, vertical_first, budget)
    if band >= n:
        return _band(src, height, width, cv, ch, vertical_first, strip)
    out = np.empty((n, 3, len(ch.start)), dtype=np.uint8)
    for r0 in range(0, n, band):
        out[r0 : r0 + band] = _band(src, height, width, cv.window(slice(r0, r0 + band)), ch, vertical_first, strip)
    return out


def _band_rows(cv: Coeffs, ch: Coeffs, in_h: int, in_w: int, vertical_first: bool, budget: int) -> int:
    """Output rows per band: all when the intermediate image fits in 3 × ``budget`` bytes, else a
    multiple of BLOCK whose share of it fits in budget / 2."""
    n = max(len(cv.start), 1)
    if vertical_first:  # intermediate: (output rows, 3, input columns read)
        per_row = 3 * (_span(ch, in_w).stop - _span(ch, in_w).start)
    else:  # intermediate: (input rows read, 3, output columns), ~in/out input rows per output row
        per_row = 3 * len(ch.start) * max(1.0, (_span(cv, in_h).stop - _span(cv, in_h).start) / n)
    if per_row * n <= 3 * budget:
        return n
    return max(BLOCK, int(budget // 2 // max(per_row, 1)) // BLOCK * BLOCK)


def _band(src, height, width, cv: Coeffs, ch: Coeffs, vertical_first: bool, strip: int) -> np.ndarray:
    """(len(cv.start), 3, len(ch.start)) uint8: the output rows of ``cv`` from ``src`` (H, 3, W)."""
    in_h, in_w = src.shape[0], src.shape[2]
    if vertical_first:
        span = _span(ch, in_w)
        mid = pass_rows(src[:, :, span], cv) if in_h != height else src[cv.start][:, :, span]
        shifted = Coeffs(ch.start - span.start, ch.weight, ch.ksize)
        return pass_cols(mid, shifted, strip) if in_w != width else mid[:, :, ch.start - span.start]
    span = _span(cv, in_h)
    mid = pass_cols(src[span], ch, strip) if in_w != width else src[span][:, :, ch.start]
    shifted = Coeffs(cv.start - span.start, cv.weight, cv.ksize)
    return pass_rows(mid, shifted) if in_h != height else mid[cv.start - span.start]


def resize_uint8(image: np.ndarray, height: int, width: int, resample: str, rows=None, cols=None) -> np.ndarray:
    """Pillow-exact resize of an (H, W, C) uint8 image to (height, width), as (h, w, 3) float64
    holding integer values 0..255 (kept for callers of the first version; prefer ``resize_hcw``)."""
    return resize_hcw(image, height, width, resample, rows, cols).transpose(0, 2, 1).astype(np.float64)
