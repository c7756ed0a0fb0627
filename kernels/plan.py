"""What every scheme reduces to: resize the image once, place it on a background canvas, and
write windows of that canvas, normalised, straight into the output. Schemes only compute the
geometry (a ``Placement``); the NumPy executor here and the CUDA kernel both run it.

Normalisation is a (3, 256) lookup table per output dtype: ``(v * rescale - mean) / std`` with
the float32 rounding of transformers' rescale + normalise, so a uint8 value maps to exactly the
float the PIL image processors produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .resample import resize_hcw
from .spec import PreprocessSpec


@dataclass(frozen=True)
class Tile:
    """Canvas window [y0, y0+h) × [x0, x0+w) written to ``out[index]``."""

    index: int
    y0: int
    x0: int
    h: int
    w: int


@dataclass(frozen=True)
class Placement:
    """One resize: the source (optionally pasted centred on a ``source_canvas`` of background first,
    LLaVA's pad-to-square) is resized to ``resized_hw`` and put at ``offset`` on a background canvas.

    ``layout``: "chw" writes each tile as out[index] (3, h, w); "patches" writes the one tile as
    Fuyu's (num_patches, patch·patch·3) row-major vectors (``patch`` pixels a side).
    (The CUDA kernel also takes "native": Qwen2-VL's merge-ordered (c, t, y, x) patch vectors,
    which the CPU path lays out from a "chw" canvas in kernels/native.py.)
    """

    resized_hw: tuple[int, int]
    offset: tuple[int, int]
    tiles: tuple[Tile, ...]
    source_canvas: tuple[int, int] | None = None
    transposed: bool = False  # Pillow resized the transposed image (InternLM-XComposer portrait)
    layout: str = "chw"
    patch: int = 0
    fill: tuple[int, int, int] | None = None  # canvas colour when it differs from spec.background
    # (y0, x0, h, w): resize only this window of the source (Gemma 3's pan-and-scan crops); None: all of it
    source_window: tuple[int, int, int, int] | None = None

    def canvas_fill(self, spec: PreprocessSpec) -> list[int]:
        return [int(b) for b in (self.fill if self.fill is not None else spec.background)]


def normalise_lut(spec: PreprocessSpec, dtype=np.float32) -> np.ndarray:
    """(3, 256) ``dtype``: uint8 value → normalised value, with transformers' float32 rounding."""
    v = (np.arange(256, dtype=np.float64) * spec.rescale_factor).astype(np.float32)
    if not spec.do_normalize:
        return np.broadcast_to(v, (3, 256)).astype(dtype)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None]
    return ((v[None, :] - mean) / std).astype(np.float32).astype(dtype)


def pad_source(image: np.ndarray, canvas_hw: tuple[int, int], background) -> np.ndarray:
    """Paste ``image`` centred on a uint8 canvas of ``background`` (transformers' expand2square)."""
    ch, cw = canvas_hw
    h, w = image.shape[:2]
    if (ch, cw) == (h, w):
        return image
    canvas = np.empty((ch, cw, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    top, left = (ch - h) // 2, (cw - w) // 2
    canvas[top : top + h, left : left + w] = image
    return canvas


def resized_window(image, pl: Placement, resample: str, background, budget=None, backend="numpy"):
    """The part of the resized image any tile reads: ((h, 3, w) uint8, its canvas y0, x0).
    ``budget``: the NumPy resize's working-memory scale (resample.MIN_STRIP_ELEMS), a quarter of
    the output's bytes. ``backend``: "numpy" or "c" (kernels/cpu, byte-identical)."""
    rh, rw = pl.resized_hw
    top, left = pl.offset
    y0 = max(min(t.y0 for t in pl.tiles) - top, 0)
    y1 = min(max(t.y0 + t.h for t in pl.tiles) - top, rh)
    x0 = max(min(t.x0 for t in pl.tiles) - left, 0)
    x1 = min(max(t.x0 + t.w for t in pl.tiles) - left, rw)
    if y1 <= y0 or x1 <= x0:
        return np.empty((0, 3, 0), dtype=np.uint8), top, left
    if pl.source_window:
        sy, sx, sh, sw = pl.source_window
        image = image[sy : sy + sh, sx : sx + sw]  # a view: rows keep the source's stride
    src = pad_source(image, pl.source_canvas, background) if pl.source_canvas else image
    if src.shape[:2] == (rh, rw):
        vals = src[y0:y1, x0:x1].transpose(0, 2, 1)
    elif backend == "c":
        from .cpu.run import resize_hcw as resize_c

        vals = resize_c(src, rh, rw, resample, slice(y0, y1), slice(x0, x1), pl.transposed, scratch=True)
    else:
        vals = resize_hcw(src, rh, rw, resample, slice(y0, y1), slice(x0, x1), pl.transposed, budget)
    return vals, top + y0, left + x0


def _write_chw(dst: np.ndarray, tile: Tile, vals: np.ndarray, vy: int, vx: int, lut, bg) -> None:
    """dst (3, h, w) ← canvas window ``tile``; ``vals`` (n, 3, m) sits at canvas (vy, vx)."""
    iy0, iy1 = max(tile.y0, vy), min(tile.y0 + tile.h, vy + vals.shape[0])
    ix0, ix1 = max(tile.x0, vx), min(tile.x0 + tile.w, vx + vals.shape[2])
    if iy1 <= iy0 or ix1 <= ix0:
        dst[:] = lut[np.arange(3), bg][:, None, None]
        return
    ty0, ty1, tx0, tx1 = iy0 - tile.y0, iy1 - tile.y0, ix0 - tile.x0, ix1 - tile.x0
    for c in range(3):
        fill = lut[c, bg[c]]
        dst[c, :ty0], dst[c, ty1:] = fill, fill  # background bands: above, below,
        dst[c, ty0:ty1, :tx0], dst[c, ty0:ty1, tx1:] = fill, fill  # left, right
        src = vals[iy0 - vy : iy1 - vy, c, ix0 - vx : ix1 - vx]
        np.take(lut[c], src, out=dst[c, ty0:ty1, tx0:tx1], mode="wrap")  # uint8 index: no wrap happens


def _write_patches(out: np.ndarray, tile: Tile, vals: np.ndarray, vy: int, vx: int, lut, bg, p: int) -> None:
    """out (rows·cols, p·p·3) ← canvas window ``tile`` cut into p×p patches, each flattened (y, x, c)
    as FuyuImageProcessor.patchify_image does; built one row of patches at a time."""
    rows, cols = tile.h // p, tile.w // p
    view = out.reshape(rows, cols, p, p, 3)
    strip = np.empty((p, 3, tile.w), dtype=np.uint8)
    for r in range(rows):
        strip[:] = np.asarray(bg, dtype=np.uint8)[None, :, None]
        y0, y1 = max(tile.y0 + r * p, vy), min(tile.y0 + (r + 1) * p, vy + vals.shape[0])
        x0, x1 = max(tile.x0, vx), min(tile.x0 + tile.w, vx + vals.shape[2])
        if y1 > y0 and x1 > x0:
            strip[y0 - tile.y0 - r * p : y1 - tile.y0 - r * p, :, x0 - tile.x0 : x1 - tile.x0] = vals[
                y0 - vy : y1 - vy, :, x0 - vx : x1 - vx
            ]
        for c in range(3):  # (p, cols·p) → (cols, p, p) patches of this row
            view[r, :, :, :, c] = lut[c][strip[:, c, :].reshape(p, cols, p).transpose(1, 0, 2)]


def run_placement(image: np.ndarray, pl: Placement, spec: PreprocessSpec, out: np.ndarray, lut, backend="numpy"):
    """Execute ``pl`` into ``out``; returns the resized window (h, 3, w) uint8 for callers that
    need more from it (the HD global view). ``backend``: "numpy" or "c"."""
    vals, vy, vx = resized_window(image, pl, spec.resample, spec.background, out.nbytes // 4, backend)
    bg = pl.canvas_fill(spec)
    if backend == "c" and pl.layout == "chw":
        from .cpu.run import write_tiles

        write_tiles(out, pl.tiles, vals, vy, vx, spec, bg)
        return vals
    if backend == "c":  # Fuyu patches: one tile
        from .cpu.run import write_patches

        write_patches(out, pl.tiles[0], vals, vy, vx, normalise_lut(spec, np.float32), bg, pl.patch)
        return vals
    for tile in pl.tiles:
        if pl.layout == "patches":
            _write_patches(out, tile, vals, vy, vx, lut, bg, pl.patch)
        else:
            _write_chw(out[tile.index], tile, vals, vy, vx, lut, bg)
    return vals
