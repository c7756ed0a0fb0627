"""The ``dual`` scheme (Mini-Gemini / MGM): two resolutions of one picture, for two towers.

Our reading of the original (dvlab-research/MGM ``mgm/serve/cli.py`` and ``mm_utils.process_images``):

* the high-resolution view is CLIP's processor with its resize and centre crop set to
  ``image_size_aux`` (optionally after ``expand2square`` with the mean colour,
  ``image_aspect_ratio="pad"``): a ``fixed`` placement — here the spec's own resize / crop /
  pad fields describe it;
* the low-resolution view is ``F.interpolate(aux, (t·g, t·g), mode="bilinear",
  align_corners=False)`` of the *normalised* aux tensor (t = ``tile_size``, the CLIP crop; g =
  ``image_grid``) — float, no antialias, so not a uint8 resize (not a Placement);
* MGM-HD (g > 1): that t·g view cut into g×g crops (row-major), then with ``image_global`` the
  t·g view bilinearly interpolated again to t×t, last.

CogAgent (``dual_low="resize"``): both views are the picture itself resized (exact, the spec's
resample) — the aux view to ``size``, the low-resolution one to ``tile_size``² — two fixed
placements from the uint8 picture in one call, as its two torchvision transforms.

Output: one flat float buffer, the low-resolution views (V, 3, t, t) first, then the aux view
(1, 3, A, A); ``dual_views`` splits it into the two towers' inputs without copying. The aux
placement runs in the C kernel when it is in use; the bilinear views are computed in float32 with
torch's tap order (separable: along width, then height)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

from .fixed import fixed_plan
from .plan import normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


def num_views(spec: PreprocessSpec) -> int:
    g = spec.image_grid
    return 1 if g == 1 else g * g + (1 if spec.image_global else 0)


def aux_side(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    tile = fixed_plan(image_hw, spec).tiles[0]
    return tile.h, tile.w


def dual_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int]:
    ah, aw = aux_side(image_hw, spec)
    t = spec.tile_size
    return (num_views(spec) * 3 * t * t + 3 * ah * aw,)


def dual_views(pixels: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """The flat buffer → {"pixel_values": (V, 3, t, t), "pixel_values_aux": (1, 3, A, A)} (views)."""
    t, v = spec.tile_size, num_views(spec)
    split = v * 3 * t * t
    side = int(round(((pixels.size - split) / 3) ** 0.5))
    if side * side * 3 != pixels.size - split:
        raise ValueError(f"a dual-resolution buffer of {pixels.size} values does not hold {v} views of {t}² and a "
                         "square aux view; pass what the dual kernel wrote")
    return {"pixel_values": pixels[:split].reshape(v, 3, t, t),
            "pixel_values_aux": pixels[split:].reshape(1, 3, side, side)}


def resized_views(image: np.ndarray, spec: PreprocessSpec, pl, views: dict, backend: str) -> TileLayout:
    """CogAgent: the aux view (spec's exact resize) and the low view (tile_size², same resample)."""
    t = spec.tile_size
    low = dataclasses.replace(spec, scheme="fixed", size=[t, t])
    lut = normalise_lut(spec, views["pixel_values"].dtype)
    run_placement(image, pl, spec, views["pixel_values_aux"], lut, backend)
    run_placement(image, fixed_plan(image.shape[:2], low), low, views["pixel_values"], lut, backend)
    return TileLayout(num_tiles=1, tile_hw=(t, t), num_image_tokens=spec.tokens_per_tile, grid=(1, 1))


@lru_cache(maxsize=16)
def _linear_taps(in_size: int, out_size: int):
    """torch's upsample_bilinear2d (align_corners=False) taps along one axis: (i0, i1, w0, w1)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    for a in (i0, i1, w0, w1):
        a.flags.writeable = False
    return i0, i1, w0, w1


def bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(3, H, W) float32 → (3, out_h, out_w) as F.interpolate(mode="bilinear", align_corners=False)."""
    x0, x1, wx0, wx1 = _linear_taps(x.shape[2], out_w)
    y0, y1, wy0, wy1 = _linear_taps(x.shape[1], out_h)
    rows = x[:, :, x0] * wx0 + x[:, :, x1] * wx1  # (3, H, out_w)
    return rows[:, y0] * wy0[None, :, None] + rows[:, y1] * wy1[None, :, None]


def dual_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """The aux view into its part of ``out`` (the placement), then the low-resolution views from it."""
    pl = fixed_plan(image.shape[:2], spec)
    views = dual_views(out, spec)
    if spec.dual_low == "resize":
        return resized_views(image, spec, pl, views, backend)
    aux = views["pixel_values_aux"]
    if out.dtype == np.float32:
        run_placement(image, pl, spec, aux, normalise_lut(spec, np.float32), backend)
        high = aux[0]
    else:  # the views are interpolated from the float32 normalised aux, as the original does in float
        high = np.empty(aux.shape, dtype=np.float32)
        run_placement(image, pl, spec, high, normalise_lut(spec, np.float32), backend)
        aux[:] = high
        high = high[0]
    t, g = spec.tile_size, spec.image_grid
    low = bilinear(high, t * g, t * g)  # (3, t·g, t·g)
    main = views["pixel_values"]
    if g == 1:
        main[0] = low
    else:
        main[: g * g] = low.reshape(3, g, t, g, t).transpose(1, 3, 0, 2, 4).reshape(g * g, 3, t, t)
        if spec.image_global:
            main[g * g] = bilinear(low, t, t)
    return TileLayout(num_tiles=num_views(spec), tile_hw=(t, t), num_image_tokens=spec.tokens_per_tile * num_views(spec),
                      grid=(g, g))
