"""The C kernel's side of ``kernels/plan.py``: the same geometry, the same Pillow-exact bytes.

``resize_hcw``, ``write_tiles``, ``global_view`` and ``write_patches`` replace their NumPy
counterparts (``resample.resize_hcw``, ``plan._write_chw``, ``hd.global_view``,
``plan._write_patches``) when the compiled library is available; the placements — what goes
where — stay the NumPy modules'. Outputs and the resized window are NumPy arrays (so
``tracemalloc`` counts them in benchmarks/bench_kernels.py); each C thread also holds, while a
pass runs, its transposition strip (input width × 48 bytes) and one band of intermediate rows
(≤ ~512 KiB).
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

from ..plan import normalise_lut
from ..resample import Coeffs, identity_coeffs, pillow_vertical_first, precompute_coeffs
from .build import load

MAX_THREADS = 8  # the passes are memory-bound well before this


@lru_cache(maxsize=1)
def library():
    return load()


def _check(failed: int) -> None:
    """The C functions return how many work chunks could not allocate their buffers."""
    if failed:
        raise MemoryError(f"the C preprocessing kernel ran out of memory in {failed} work chunk(s); "
                          "the output is incomplete — free memory or set VLMFORGE_KERNEL_THREADS=1")


def default_threads() -> int:
    """$VLMFORGE_KERNEL_THREADS, else the cores this process may run on (at most MAX_THREADS)."""
    env = os.environ.get("VLMFORGE_KERNEL_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"VLMFORGE_KERNEL_THREADS={env!r} is not a positive integer")
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


_LOCAL = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's uint8 buffer for the resized window, grown as needed and kept: a camera's frames
    then reuse its pages instead of faulting in ~7 MB of fresh memory per HD frame."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _LOCAL.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes]


def release_scratch() -> None:
    """Free this thread's scratch buffer (benchmarks measure its allocation as extra memory)."""
    _LOCAL.buf = None


@lru_cache(maxsize=64)
def _axis(in_size: int, out_size: int, resample: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(start int64, weight int32 (out, ksize), ksize) for one axis, cached: a camera sends one size."""
    c = precompute_coeffs(in_size, out_size, resample)
    return c.start, c.weight.astype(np.int32), c.ksize


def _window(in_size: int, out_size: int, resample: str, sel) -> Coeffs:
    if in_size == out_size:
        return identity_coeffs(in_size).window(sel)
    start, weight, ksize = _axis(in_size, out_size, resample)
    return Coeffs(start[sel], weight[sel], ksize)


def _tables(c: Coeffs, lo: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 (start − lo, weight, taps to sum) for the C passes. Taps to sum: up to the last nonzero
    weight (Pillow's own tap count; ksize pads a bilinear 1.6× downscale's ~3.3 taps to 5) and
    never past ``limit``, the end of the input."""
    start = np.ascontiguousarray(c.start - lo, dtype=np.int32)
    nonzero = np.where(c.weight != 0, np.arange(1, c.ksize + 1, dtype=np.int32), 0).max(axis=1, initial=0)
    count = np.minimum(nonzero, limit - c.start).astype(np.int32)
    return start, np.ascontiguousarray(c.weight, dtype=np.int32), count


def _span(c: Coeffs, limit: int) -> tuple[int, int]:
    return int(c.start.min()), min(int(c.start.max()) + c.ksize, limit)


def hpass(src: np.ndarray, c: Coeffs, dst: np.ndarray, threads: int) -> None:
    """dst (rows, 3, n) ← horizontal pass over src (rows, W, 3) interleaved (row stride free)."""
    lo, hi = _span(c, src.shape[1])
    start, weight, count = _tables(c, lo, hi)
    view = src[:, lo:hi]
    _check(library().vf_hpass(view.ctypes.data, src.strides[0], src.shape[0], hi - lo, start.ctypes.data,
                       weight.ctypes.data, count.ctypes.data, c.ksize, len(start), dst.ctypes.data,
                       dst.strides[0], threads))  # fmt: skip


def vpass(src: np.ndarray, c: Coeffs, dst: np.ndarray, threads: int) -> None:
    """dst (n, ...) ← vertical pass over src (H, ...); each row's bytes contiguous, row strides free."""
    start, weight, count = _tables(c, 0, src.shape[0])
    width = int(np.prod(src.shape[1:]))
    _check(library().vf_vpass(src.ctypes.data, src.strides[0], width, start.ctypes.data, weight.ctypes.data,
                       count.ctypes.data, c.ksize, len(start), dst.ctypes.data, dst.strides[0], threads))  # fmt: skip


def resize_hcw(image, height, width, resample, rows=None, cols=None, transposed=False, threads=None,
               scratch=False) -> np.ndarray:
    """``kernels.resample.resize_hcw`` in C: (len(rows), 3, len(cols)) uint8, byte for byte the same.
    ``scratch``: return a view of this thread's reused buffer (valid until its next scratch call)."""
    threads = default_threads() if threads is None else threads
    if image.strides[1:] != (3, 1) or image.strides[0] < 3 * image.shape[1]:
        image = np.ascontiguousarray(image)
    in_h, in_w = image.shape[:2]
    cv = _window(in_h, height, resample, slice(0, height) if rows is None else rows)
    ch = _window(in_w, width, resample, slice(0, width) if cols is None else cols)
    if transposed:
        vertical_first = not pillow_vertical_first(in_w, in_h, width, height)
    else:
        vertical_first = pillow_vertical_first(in_h, in_w, height, width)
    n, m = len(cv.start), len(ch.start)
    out = _scratch(n * 3 * m).reshape(n, 3, m) if scratch else np.empty((n, 3, m), dtype=np.uint8)
    if in_h != height and in_w != width:  # both passes, fused band by band
        _resize(image, cv, ch, vertical_first, out, threads)
        return out
    if vertical_first:
        x0, x1 = _span(ch, in_w)
        if in_h != height:
            mid = np.empty((n, x1 - x0, 3), dtype=np.uint8)  # interleaved rows of the columns read
            vpass(image[:, x0:x1], cv, mid, threads)
        else:
            mid = image[cv.start, x0:x1]
        shifted = Coeffs(ch.start - x0, ch.weight, ch.ksize)
        if in_w != width:
            hpass(mid, shifted, out, threads)
        else:
            out[:] = mid[:, shifted.start].transpose(0, 2, 1)
        return out
    y0, y1 = _span(cv, in_h)
    if in_w != width:
        mid = np.empty((y1 - y0, 3, m), dtype=np.uint8)  # planar rows of the rows read
        hpass(image[y0:y1], ch, mid, threads)
    else:
        mid = np.ascontiguousarray(image[y0:y1][:, ch.start].transpose(0, 2, 1))
    shifted = Coeffs(cv.start - y0, cv.weight, cv.ksize)
    if in_h != height:
        vpass(mid, shifted, out, threads)
    else:
        out[:] = mid[shifted.start]
    return out


def _resize(image: np.ndarray, cv: Coeffs, ch: Coeffs, vertical_first: bool, out: np.ndarray, threads: int) -> None:
    """Both passes in one C call over bands of output rows (intermediate rows stay in cache)."""
    x0, x1 = _span(ch, image.shape[1])
    ys, yw, yc = _tables(cv, 0, image.shape[0])
    xs, xw, xc = _tables(ch, x0, x1)
    view = image[:, x0:x1]
    _check(library().vf_resize(view.ctypes.data, image.strides[0], image.shape[0], x1 - x0, ys.ctypes.data, yw.ctypes.data,
                        yc.ctypes.data, cv.ksize, len(ys), xs.ctypes.data, xw.ctypes.data, xc.ctypes.data, ch.ksize,
                        len(xs), int(vertical_first), out.ctypes.data, out.strides[0], threads))  # fmt: skip


def write_tiles(out: np.ndarray, tiles, vals: np.ndarray, vy: int, vx: int, spec, bg, threads=None) -> None:
    """``plan._write_chw`` for every tile of a placement in one call: out[t.index] (3, h, w) ←
    the canvas window of tile t, normalised; ``vals`` (n, 3, m) uint8 sits at canvas (vy, vx).
    float16 outputs are computed in float32 a tile at a time and rounded by NumPy."""
    threads = default_threads() if threads is None else threads
    h, w = out.shape[2:]
    if any((t.h, t.w) != (h, w) for t in tiles):
        raise ValueError(f"tiles {[(t.h, t.w) for t in tiles]} do not all match the output's {h}×{w}")
    vals = np.ascontiguousarray(vals)
    mean, std = _norm(spec)
    fill = np.ascontiguousarray(normalise_lut(spec, np.float32)[np.arange(3), np.asarray(bg, dtype=np.int64)])
    lib = library()

    def run(target: np.ndarray, table: np.ndarray) -> None:
        _check(lib.vf_write_tiles(vals.ctypes.data, vals.shape[0], vals.shape[2], vy, vx, table.ctypes.data, len(table),
                           h, w, target.ctypes.data, spec.rescale_factor, mean.ctypes.data, std.ctypes.data,
                           fill.ctypes.data, threads))  # fmt: skip

    table = np.array([[t.index, t.y0, t.x0, t.h, t.w] for t in tiles], dtype=np.int32).reshape(-1, 5)
    if out.dtype == np.float32 and out.flags.c_contiguous:
        run(out, table)
        return
    scratch = np.empty((1, 3, h, w), dtype=np.float32)
    for row in table:
        one = row.copy()[None]
        one[0, 0] = 0
        run(scratch, one)
        out[row[0]] = scratch[0]


def _norm(spec) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, std) per channel; (0, 1) when the spec does not normalise (then v·rescale exactly)."""
    if not spec.do_normalize:
        return np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32)
    return np.asarray(spec.mean, dtype=np.float32), np.asarray(spec.std, dtype=np.float32)


def global_view(vals: np.ndarray, offset, iy, wy, ix, wx, lut32: np.ndarray, bg, threads=None) -> np.ndarray:
    """``hd.global_view`` in C: (3, t, t) float32, the same floats (same taps, same summation order).
    ``iy``/``ix`` (t, 4) canvas indices and ``wy``/``wx`` (t, 4) float32 weights from ``hd._cubic_taps``."""
    threads = default_threads() if threads is None else threads
    t = iy.shape[0]
    vals = np.ascontiguousarray(vals)
    iy, ix = (np.ascontiguousarray(a, dtype=np.int32) for a in (iy, ix))
    wy, wx = (np.ascontiguousarray(a, dtype=np.float32) for a in (wy, wx))
    lut = np.ascontiguousarray(lut32, dtype=np.float32)
    bg = np.asarray(bg, dtype=np.uint8)
    out = np.empty((3, t, t), dtype=np.float32)
    _check(library().vf_bicubic_view(vals.ctypes.data, vals.shape[0], vals.shape[2], int(offset[0]), int(offset[1]),
                              iy.ctypes.data, wy.ctypes.data, ix.ctypes.data, wx.ctypes.data, t, lut.ctypes.data,
                              bg.ctypes.data, out.ctypes.data, threads))  # fmt: skip
    return out


def write_patches(out: np.ndarray, tile, vals: np.ndarray, vy: int, vx: int, lut32: np.ndarray, bg, p: int,
                  threads=None) -> None:
    """``plan._write_patches`` in C: out (rows·cols, p·p·3) ← the canvas window ``tile`` cut into p×p
    patches, each flattened (y, x, c). ``vals`` (n, 3, m) uint8 at canvas (vy, vx) is read through its
    strides (an identity resize hands over the interleaved image itself); ``lut32`` (3, 256) float32.
    A float16 ``out`` is written in float32 first and rounded by NumPy."""
    threads = default_threads() if threads is None else threads
    rows, cols = tile.h // p, tile.w // p
    lut = np.ascontiguousarray(lut32, dtype=np.float32)
    fill = lut[np.arange(3), np.asarray(bg, dtype=np.int64)].copy()
    target = out if out.dtype == np.float32 and out.flags.c_contiguous else np.empty(out.shape, dtype=np.float32)
    rs, cs, ps = vals.strides
    _check(library().vf_write_patches(vals.ctypes.data, rs, cs, ps, vals.shape[0], vals.shape[2], vy, vx, tile.y0,
                                      tile.x0, rows, cols, p, lut.ctypes.data, fill.ctypes.data, target.ctypes.data,
                                      threads))  # fmt: skip
    if target is not out:
        out[...] = target
