"""The ``hd`` scheme (InternLM-XComposer2-4KHD, "HD_transform"; not in transformers).

Our reading of the original code (InternLM-XComposer ``ixc_utils.py`` / the 4KHD remote code):

* ``HD_transform(img, hd_num)``: portrait images are transposed so width ≥ height; with
  ratio = w / h the largest ``scale`` with ``scale * ceil(scale / ratio) <= hd_num`` is taken;
  new_w = scale·336, new_h = int(new_w / ratio); ``torchvision.transforms.functional.resize``
  on the PIL image (default interpolation: BILINEAR through Pillow); ``padding_336`` pads the
  height to a multiple of 336 with white, top = int((tar − h) / 2), the rest at the bottom; the
  image is transposed back. So portrait images are padded left/right, and Pillow resized their
  transpose (which can change its pass order: ``resize_hcw(transposed=True)``).
* ``vis_processor``: ToTensor + Normalize(CLIP mean, std).
* vision tower: the local tiles are the 336×336 blocks of the padded image, row-major; the global
  view is ``F.interpolate(img, (336, 336), mode="bicubic")`` of the *normalised* padded image
  (align_corners=False, no antialias, A = −0.75), and comes first.
* tokens: 24×24 patches merged 2×2 → 12×12 per tile; the global view's 12 rows each end with the
  learnable newline (``sub_GN``), then one separator (``glb_GN``), then the local grid as
  h·12 rows of w·12 tokens, each row ending with the newline:
  (h·w + 1)·144 + 1 + (h + 1)·12 tokens.

IXC-2.5 (``InternLM-XComposer-2.5`` ``ixc_utils.Image_transform``, 560-px tiles) differs in two
places, each a spec field: ``scale = min(ceil(width / 560), scale)`` (``hd_cap_scale``: a small
picture is not enlarged to many tiles) and ``padding_336(img, 560)`` pads with top_padding = 0,
all below — right of a portrait picture (``hd_padding="end"``). With several pictures in one
prompt its ``interleav_wrap_chat`` tiles each with hd_num = 6 (``multi_image_max_tiles``).

Deviation: an image so elongated that int(new_w / ratio) is 0 makes the original crash; we
raise ValueError instead.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout

CUBIC_A = -0.75  # torch's bicubic


def hd_resize(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int, bool]:
    """(new_h, new_w, transposed) of HD_transform, in the image's own orientation."""
    transposed = w < h
    if transposed:
        h, w = w, h
    ratio = w / h
    scale = 1
    while scale * math.ceil(scale / ratio) <= spec.max_tiles:
        scale += 1
    scale -= 1
    if spec.hd_cap_scale:  # IXC-2.5: no more tiles across than the picture's own width needs
        scale = min(scale, math.ceil(w / spec.tile_size))
    new_w = int(scale * spec.tile_size)
    new_h = int(new_w / ratio)
    if new_h == 0:
        raise ValueError(
            f"a {h}×{w} image is too elongated for the hd scheme (it would be resized to 0 pixels); crop it first"
        )
    return (new_w, new_h, True) if transposed else (new_h, new_w, False)


def hd_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[Placement, tuple[int, int]]:
    """Local-tile placement (tiles 1..rows·cols) and the padded canvas (H, W)."""
    t = spec.tile_size
    nh, nw, transposed = hd_resize(*image_hw, spec)
    ph, pw = math.ceil(nh / t) * t, math.ceil(nw / t) * t
    if spec.hd_padding == "end":  # IXC-2.5: top_padding = 0, all of it below (right of a portrait picture)
        offset = (0, 0)
    else:
        offset = (0, (pw - nw) // 2) if transposed else ((ph - nh) // 2, 0)
    rows, cols = ph // t, pw // t
    tiles = tuple(Tile(1 + r * cols + c, r * t, c * t, t, t) for r in range(rows) for c in range(cols))
    return Placement((nh, nw), offset, tiles, transposed=transposed), (ph, pw)


@lru_cache(maxsize=32)
def _cubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch upsample_bicubic2d source indices (out, 4), clamped, and float32 weights (out, 4);
    cached (read-only): a canvas size recurs with every image of its aspect ratio."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    x0 = np.floor(src)
    t = src - x0
    a = np.float32(CUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = np.float32(1.0)
    w = np.stack([far(t + one), near(t), near(one - t), far(np.float32(2.0) - t)], axis=1).astype(np.float32)
    idx = np.clip(x0.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    idx.flags.writeable = w.flags.writeable = False
    return idx, w


def global_view(vals, offset, canvas_hw, lut, bg, t: int) -> np.ndarray:
    """(3, t, t) float32 bicubic view of the normalised padded canvas; ``vals`` (nh, 3, nw) uint8 is
    the resized image at ``offset``. Only the 4 sampled columns per output are normalised."""
    ph, pw = canvas_hw
    top, left = offset
    nh, nw = vals.shape[0], vals.shape[2]
    iy, wy = _cubic_taps(ph, t)
    ix, wx = _cubic_taps(pw, t)
    bg_vals = lut[np.arange(3), bg].astype(np.float32)  # (3,)
    r = iy - top  # (t, 4) resized-image row, or outside it (padding)
    inside_r = (r >= 0) & (r < nh)
    need = np.unique(r[inside_r])  # only the ≤ 4t sampled rows are ever read
    pos = np.zeros_like(r)
    pos[inside_r] = np.searchsorted(need, r[inside_r]) + 1  # 0 stands for every padding row
    sub = vals[need]  # (n, 3, nw)
    # horizontal: (n + 1, 3, t), summed tap by tap in torch's order
    rows = np.empty((need.size + 1, 3, t), dtype=np.float32)
    for j in range(4):
        col = ix[:, j] - left  # (t,) resized-image column, or outside it
        inside = (col >= 0) & (col < nw)
        taps = np.empty((need.size + 1, 3, t), dtype=np.float32)
        for c in range(3):
            taps[1:, c] = lut[c][sub[:, c, np.clip(col, 0, nw - 1)]]
            taps[1:, c, ~inside] = bg_vals[c]
            taps[0, c] = bg_vals[c]
        if j == 0:
            np.multiply(taps, wx[None, None, :, 0], out=rows)
        else:
            rows += taps * wx[None, None, :, j]
    # vertical: (t, 3, t)
    out = rows[pos[:, 0]] * wy[:, 0, None, None]
    for i in range(1, 4):
        out += rows[pos[:, i]] * wy[:, i, None, None]
    return out.transpose(1, 0, 2)


def hd_num_image_tokens(rows: int, cols: int, spec: PreprocessSpec) -> int:
    per = spec.tile_size // spec.patch_size // spec.merge_size
    nl = 1 if spec.image_newline else 0
    return per * (per + nl) + 1 + rows * per * (cols * per + nl)


def hd_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Global view into out[0], local tiles into out[1:] (row-major)."""
    pl, (ph, pw) = hd_plan(image.shape[:2], spec)
    lut32 = normalise_lut(spec, np.float32)
    lut = lut32 if out.dtype == np.float32 else normalise_lut(spec, out.dtype)
    vals = run_placement(image, pl, spec, out, lut, backend)
    t = spec.tile_size
    bg = [int(b) for b in spec.background]
    if backend == "c":
        from .cpu.run import global_view as global_view_c

        iy, wy = _cubic_taps(ph, t)
        ix, wx = _cubic_taps(pw, t)
        out[0] = global_view_c(vals, pl.offset, iy, wy, ix, wx, lut32, bg)
    else:
        out[0] = global_view(vals, pl.offset, (ph, pw), lut32, bg, t)  # computed in float32, as the model does
    return hd_layout((ph, pw), spec)


def hd_layout(canvas_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    t = spec.tile_size
    rows, cols = canvas_hw[0] // t, canvas_hw[1] // t
    return TileLayout(1 + rows * cols, (t, t), hd_num_image_tokens(rows, cols, spec), (rows, cols))


def hd_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    pl, _ = hd_plan(image_hw, spec)
    return (1 + len(pl.tiles), 3, spec.tile_size, spec.tile_size)


def pack_hd_features(embeds: np.ndarray, grid: tuple[int, int], spec: PreprocessSpec,
                     newline: np.ndarray | None, separator: np.ndarray) -> np.ndarray:
    """Connector output → InternLM-XComposer2-4KHD's image token sequence.

    embeds (1 + rows·cols, per², d): the global view, then the local tiles row-major, each with
    per × per merged tokens (per = tile / patch / merge). Returns (hd_num_image_tokens, d):
    the global view's ``per`` rows each followed by ``newline`` (``sub_GN``), one ``separator``
    (``glb_GN``), then the local tiles stitched into one (rows·per) × (cols·per) grid whose rows
    each end with ``newline`` — so a row of tokens crosses tile borders, as in the original."""
    rows, cols = grid
    per = spec.tile_size // spec.patch_size // spec.merge_size
    n, tokens, d = embeds.shape
    if n != 1 + rows * cols or tokens != per * per:
        raise ValueError(f"hd features {embeds.shape} do not fit a {rows}×{cols} grid of {per}×{per}-token tiles "
                         f"plus a global view; the connector must output (1 + rows·cols, {per * per}, hidden)")
    nl = 1 if spec.image_newline else 0
    glb = np.empty((per, per + nl, d), dtype=embeds.dtype)
    glb[:, :per] = embeds[0].reshape(per, per, d)
    local = np.empty((rows * per, cols * per + nl, d), dtype=embeds.dtype)
    # (rows, cols, per, per, d) → (rows, per, cols, per, d): tile rows interleave into image rows
    local[:, : cols * per] = embeds[1:].reshape(rows, cols, per, per, d).transpose(0, 2, 1, 3, 4).reshape(rows * per, cols * per, d)
    if nl:
        glb[:, per] = newline
        local[:, cols * per] = newline
    out = np.concatenate([glb.reshape(-1, d), np.asarray(separator, dtype=embeds.dtype).reshape(1, d), local.reshape(-1, d)])
    assert out.shape[0] == hd_num_image_tokens(rows, cols, spec)
    return out


def hd_grid(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """(rows, cols) of local tiles HD_transform gives an image of this size."""
    _, (ph, pw) = hd_plan(image_hw, spec)
    return ph // spec.tile_size, pw // spec.tile_size
