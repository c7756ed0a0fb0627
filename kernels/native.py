"""The ``native`` scheme (Qwen2-VL / Qwen2.5-VL): the picture at (nearly) its own resolution.

Mirrors ``Qwen2VLImageProcessorPil``: ``smart_resize`` picks the size — both sides multiples of
``patch_size · merge_size`` (28 px for Qwen2/2.5), the area inside [``min_pixels``, ``max_pixels``],
the aspect ratio kept as closely as it allows — the image is resized to it once (PIL bicubic,
as the processor does), rescaled and normalised, and cut into patches flattened (c, t, y, x), the
image repeated ``temporal_patch_size`` times along t, the patches ordered merge window by merge
window (``patchify``). Output (grid_h · grid_w, 3 · t · p · p); each merge window of
``merge_size²`` patches becomes one LLM token.

The vision graph's geometry comes from the grid, on the host (``native_geometry``): the rotary
(row, column) of every patch in the same merge-window order (``get_vision_position_ids``) and,
for Qwen2.5-VL's windowed layers, the attention window of every patch (``get_vision_window_index``:
windows of ``window_size`` pixels over the token grid, the last row / column of windows partial).
"""

from __future__ import annotations

import math

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout


def smart_resize(h: int, w: int, spec: PreprocessSpec, video: bool = False, frames: int = 1) -> tuple[int, int]:
    """transformers' ``smart_resize`` with factor = patch · merge, in the image (or video) budget.

    A video's budget bounds one frame (Qwen2/2.5-VL) or, ``video_budget == "clip"``, the whole clip
    of ``frames`` frames (Qwen3-VL's video processor: frames rounded to temporal patches, sides under
    one factor scaled up first)."""
    factor = spec.patch_size * spec.merge_size
    lo, hi = (spec.video_min_pixels, spec.video_max_pixels) if video else (spec.min_pixels, spec.max_pixels)
    clip = video and spec.video_budget == "clip"
    if clip and (h < factor or w < factor):
        scale = max(factor / h, factor / w)
        h, w = int(h * scale), int(w * scale)
    if max(h, w) / min(h, w) > 200:
        raise ValueError(f"a {h}×{w} image has an aspect ratio over 200 (the processor's limit); crop it first")
    tp = spec.temporal_patch_size
    t, count = (round(frames / tp) * tp, frames) if clip else (1, 1)  # the budget's frame factor
    rh, rw = round(h / factor) * factor, round(w / factor) * factor
    if t * rh * rw > hi:
        beta = math.sqrt(count * h * w / hi)
        rh, rw = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif t * rh * rw < lo:
        beta = math.sqrt(lo / (count * h * w))
        rh, rw = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return rh, rw


def native_plan(image_hw: tuple[int, int], spec: PreprocessSpec) -> Placement:
    rh, rw = smart_resize(*image_hw, spec)
    return Placement((rh, rw), (0, 0), (Tile(0, 0, 0, rh, rw),))


def native_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    """grid (rows, cols) of patches; one token per merge window."""
    rh, rw = smart_resize(*image_hw, spec)
    gh, gw = rh // spec.patch_size, rw // spec.patch_size
    return TileLayout(gh * gw, (rh, rw), gh * gw // spec.merge_size**2, (gh, gw))


def native_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    layout = native_layout(image_hw, spec)
    return (layout.num_tiles, 3 * spec.temporal_patch_size * spec.patch_size**2)


def native_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Resize + normalise into a (3, H, W) canvas (C or NumPy), then lay it out as patches."""
    pl = native_plan(image.shape[:2], spec)
    canvas = np.empty((1, 3, *pl.resized_hw), dtype=out.dtype)
    run_placement(image, pl, spec, canvas, normalise_lut(spec, out.dtype), backend)
    patchify_into(canvas[0], spec, out)
    return native_layout(image.shape[:2], spec)


def patchify_into(chw: np.ndarray, spec: PreprocessSpec, out: np.ndarray) -> None:
    """(3, H, W) → out (gh·gw, 3·t·p·p) in merge-window order, the frame repeated t times."""
    c, height, width = chw.shape
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    gh, gw = height // p, width // p
    windows = chw.reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, c, p, p)
    out.reshape(gh // m, gw // m, m, m, c, t, p, p)[:] = windows[:, :, :, :, :, None]


def native_video(frames: np.ndarray, spec: PreprocessSpec, backend: str = "numpy", dtype=np.float32):
    """frames (T, H, W, 3) uint8 → (pixels (t·gh·gw, 3·tp·p·p), layout): every frame resized to the
    video budget's size, the last repeated to a multiple of ``temporal_patch_size`` (as the video
    processor pads), consecutive frames grouped into temporal patches."""
    count, h, w = frames.shape[:3]
    tp = spec.temporal_patch_size
    if spec.video_budget == "clip" and count < tp:
        raise ValueError(f"this model's video processor needs at least {tp} frames (one temporal patch), got {count}; "
                         "pass more frames, or the picture as an image")
    rh, rw = smart_resize(h, w, spec, video=True, frames=count)
    pl = Placement((rh, rw), (0, 0), (Tile(0, 0, 0, rh, rw),))
    groups = -(-count // tp)
    canvas = np.empty((groups * tp, 3, rh, rw), dtype=dtype)
    lut = normalise_lut(spec, dtype)
    for i, frame in enumerate(frames):
        run_placement(np.ascontiguousarray(frame), pl, spec, canvas[i : i + 1], lut, backend)
    canvas[count:] = canvas[count - 1]
    p, m = spec.patch_size, spec.merge_size
    gh, gw = rh // p, rw // p
    out = np.empty((groups * gh * gw, 3 * tp * p * p), dtype=dtype)
    x = canvas.reshape(groups, tp, 3, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    out.reshape(groups, gh // m, gw // m, m, m, 3, tp, p, p)[:] = x
    return out, TileLayout(groups * gh * gw, (rh, rw), groups * gh * gw // m**2, (gh, gw), groups)


def native_geometry(layout: TileLayout, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """The vision graph's host-side inputs, for the patches in their merge-window order:
    ``rotary_pos_ids`` (patches, 2) int64, each patch's (row, column); ``segment_ids`` (patches,),
    its temporal patch (attention stays within one, as ``cu_seqlens`` makes it); with windowed
    layers ``window_ids`` (patches,), its attention window, numbered across temporal patches; with a
    learned position grid (Qwen3-VL) ``interp_indices`` (patches, 4) int64 and ``interp_weights``
    (patches, 4) float32, the bilinear taps that resample it to the patch grid."""
    gh, gw = layout.grid
    m, t = spec.merge_size, layout.frames
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    blocks = (gh // m, m, gw // m, m)
    rows = rows.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1)
    cols = cols.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1)
    feeds = {"rotary_pos_ids": np.tile(np.stack([rows, cols], axis=1).astype(np.int64), (t, 1)),
             "segment_ids": np.repeat(np.arange(t, dtype=np.int64), gh * gw)}
    if spec.position_grid:
        taps, weights = position_grid_taps(rows, cols, (gh, gw), spec.position_grid)
        feeds["interp_indices"], feeds["interp_weights"] = np.tile(taps, (t, 1)), np.tile(weights, (t, 1))
    if spec.window_size:
        side = spec.window_size // m // spec.patch_size  # tokens per window side
        across, down = -(-(gw // m) // side), -(-(gh // m) // side)  # windows per row / column of windows
        window = (rows // m // side) * across + cols // m // side
        feeds["window_ids"] = (feeds["segment_ids"] * (across * down) + np.tile(window, t)).astype(np.int64)
    return feeds


def pack_geometry(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several images' ``native_geometry`` as one vision call over their patches, concatenated in
    order: each image's ``segment_ids`` and ``window_ids`` numbered after the previous image's, so
    the graph's block mask keeps every image (and temporal patch, and window) to itself — the
    block-diagonal attention ``cu_seqlens`` gives transformers over a batch of grids."""
    packed = {}
    for name in parts[0]:
        arrays, offset = [], 0
        for part in parts:
            a = part[name]
            if name in ("segment_ids", "window_ids"):
                a = a + offset
                offset = int(a.max()) + 1 if a.size else offset
            arrays.append(a)
        packed[name] = np.concatenate(arrays, axis=0)
    return packed


def position_grid_taps(rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int], side: int):
    """Bilinear (align_corners) taps of a ``side``² learned position table for patches at (rows, cols)
    of a ``grid`` (gh, gw) → indices (n, 4) int64 into the flattened table, weights (n, 4) float32.

    As transformers' ``get_vision_interpolation_indices_and_weights`` computes them (float32, the
    same operations in the same order): what ``F.interpolate(bilinear, align_corners=True)`` of the
    table to (gh, gw) reads for each patch."""

    def axis(index: np.ndarray, size: int):
        src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
        floor = np.floor(src)
        offsets = np.arange(2)
        taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
        distance = np.abs((src - floor)[:, None] - offsets.astype(np.float32))
        return taps, np.maximum(np.float32(1) - distance, np.float32(0))

    (h_taps, h_w), (w_taps, w_w) = axis(rows, grid[0]), axis(cols, grid[1])
    indices = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
    weights = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4).astype(np.float32)
    return indices.astype(np.int64), weights
