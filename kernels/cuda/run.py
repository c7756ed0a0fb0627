"""Run a scheme's placements on the GPU: the same geometry as the NumPy kernels, one launch per
tile (grid: columns × rows × 3 channels), the HD global view by a second kernel."""

from __future__ import annotations

import ctypes

import numpy as np

from ..anyres import anyres_output_shape, anyres_plan, anyres_tiles_layout
from ..fixed import fixed_output_shape, fixed_plan
from ..hd import hd_layout, hd_output_shape, hd_plan
from ..images import prepare_image
from ..patches import patches_layout, patches_output_shape, patches_plan
from ..plan import Placement, normalise_lut
from ..resample import identity_coeffs, pillow_vertical_first, precompute_coeffs
from ..spec import PreprocessSpec, TileLayout
from .driver import BLOCK, CudaKernels, DeviceBuffer, ResizeArgs

_KERNELS: dict[int, CudaKernels] = {}


def _grid(w: int, h: int) -> tuple[int, int, int]:
    return (-(-w // BLOCK[0]), -(-h // BLOCK[1]), 3)


def _resize_args(image_dev, image_hw, pl: Placement, spec: PreprocessSpec, keep: list) -> ResizeArgs:
    """Coefficient tables for ``pl`` uploaded (kept alive in ``keep``), packed as struct Resize."""
    h, w = image_hw
    in_h, in_w = pl.source_canvas or (h, w)
    rh, rw = pl.resized_hw
    cy = precompute_coeffs(in_h, rh, spec.resample) if in_h != rh else identity_coeffs(in_h)
    cx = precompute_coeffs(in_w, rw, spec.resample) if in_w != rw else identity_coeffs(in_w)
    if pl.transposed:
        vertical_first = not pillow_vertical_first(in_w, in_h, rw, rh)
    else:
        vertical_first = pillow_vertical_first(in_h, in_w, rh, rw)
    tables = [np.ascontiguousarray(a, dtype=np.int32) for a in (cy.start, cy.weight, cx.start, cx.weight)]
    bg = np.asarray(spec.background, dtype=np.uint8)
    bufs = [DeviceBuffer.upload(a) for a in (*tables, bg)]
    keep.extend(bufs)
    ys, yw, xs, xw, bgd = (int(b) for b in bufs)
    return ResizeArgs(int(image_dev), h, w, w * 3, (in_h - h) // 2, (in_w - w) // 2,
                      ys, yw, cy.ksize, xs, xw, cx.ksize, rh, rw, int(vertical_first), bgd)  # fmt: skip


def _run_placement(k: CudaKernels, r: ResizeArgs, pl: Placement, spec, lut_dev, out_dev, out_shape, dtype, keep):
    fill = DeviceBuffer.upload(np.asarray(pl.canvas_fill(spec), dtype=np.uint8))
    keep.append(fill)
    name = "resample_normalise_f32" if dtype == np.float32 else "resample_normalise_f16"
    item = np.dtype(dtype).itemsize
    top, left = pl.offset
    for t in pl.tiles:
        if pl.layout == "patches":
            base, strides, patch = int(out_dev), (0, 0, 0), pl.patch
        else:
            assert out_shape[1:] == (3, t.h, t.w), (out_shape, t)  # one C-contiguous (3, h, w) tile each
            base, strides, patch = int(out_dev) + t.index * 3 * t.h * t.w * item, (t.h * t.w, t.w, 1), 0
        args = [r, ctypes.c_uint64(int(fill)), ctypes.c_int(top), ctypes.c_int(left), ctypes.c_int(t.y0),
                ctypes.c_int(t.x0), ctypes.c_int(t.h), ctypes.c_int(t.w), ctypes.c_uint64(int(lut_dev)),
                ctypes.c_uint64(base), *(ctypes.c_longlong(s) for s in strides), ctypes.c_int(patch)]  # fmt: skip
        k.launch(name, _grid(t.w, t.h), args)


def _plans(hw, spec: PreprocessSpec):
    """(placements, output shape, layout, HD canvas or None) — the NumPy modules' geometry."""
    if spec.scheme == "fixed":
        pl = fixed_plan(hw, spec)
        t = pl.tiles[0]
        return [pl], fixed_output_shape(hw, spec), TileLayout(1, (t.h, t.w), spec.tokens_per_tile), None
    if spec.scheme == "anyres":
        return list(anyres_plan(hw, spec)), anyres_output_shape(hw, spec), anyres_tiles_layout(hw, spec), None
    if spec.scheme == "hd":
        pl, canvas = hd_plan(hw, spec)
        return [pl], hd_output_shape(hw, spec), hd_layout(canvas, spec), canvas
    pl, _, _ = patches_plan(hw, spec)
    return [pl], patches_output_shape(hw, spec), patches_layout(hw, spec), None


def tile_and_patchify_cuda(image: np.ndarray, spec: PreprocessSpec, dtype=np.float32, device: int = 0):
    """GPU version of ``vlmforge.kernels.tile_and_patchify``: same inputs, same (pixels, layout);
    pixels come back as a host array. Input checks are the NumPy path's (``prepare_image``)."""
    if np.dtype(dtype) not in (np.float32, np.float16):
        raise ValueError(f"unsupported output dtype {np.dtype(dtype)}; choose float32 or float16")
    dtype = np.dtype(dtype).type
    image = np.ascontiguousarray(prepare_image(image, spec.max_input_pixels))  # (H, W, 3) uint8, rows packed
    k = _KERNELS.get(device) or _KERNELS.setdefault(device, CudaKernels(device))
    placements, shape, layout, hd_canvas = _plans(image.shape[:2], spec)
    out = np.empty(shape, dtype=dtype)
    keep: list = []
    image_dev, out_dev = DeviceBuffer.upload(image), DeviceBuffer(out.nbytes)
    lut_dev = DeviceBuffer.upload(normalise_lut(spec, np.float32))
    for pl in placements:
        r = _resize_args(image_dev, image.shape[:2], pl, spec, keep)
        _run_placement(k, r, pl, spec, lut_dev, out_dev, shape, dtype, keep)
    if hd_canvas is not None:  # global view of the padded canvas into tile 0
        pl, t = placements[0], spec.tile_size
        fill = DeviceBuffer.upload(np.asarray(pl.canvas_fill(spec), dtype=np.uint8))
        keep.append(fill)
        name = "bicubic_global_f32" if dtype == np.float32 else "bicubic_global_f16"
        args = [r, ctypes.c_uint64(int(fill)), ctypes.c_int(pl.offset[0]), ctypes.c_int(pl.offset[1]),
                ctypes.c_int(hd_canvas[0]), ctypes.c_int(hd_canvas[1]), ctypes.c_int(t),
                ctypes.c_uint64(int(lut_dev)), ctypes.c_uint64(int(out_dev))]  # fmt: skip
        k.launch(name, _grid(t, t), args)
    k.synchronize()
    return out_dev.download(out), layout
