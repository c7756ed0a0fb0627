"""Run a scheme's placements on the GPU: the same geometry as the NumPy kernels, one launch per
tile (grid: columns × rows × 3 channels), the HD global view by a second kernel.

``CudaTiler`` is the reusable form (a camera feeding frames of one size): the plan and its device
tables (coefficients, LUT, fill colours) are built once per image size and kept, the uint8 upload
buffer grows once, so a frame costs one host→device copy and the launches."""

from __future__ import annotations

import ctypes
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..anyres import anyres_output_shape, anyres_plan, anyres_tiles_layout
from ..canvas import canvas_layout, canvas_output_shape, canvas_plan
from ..dynamic import dynamic_layout, dynamic_output_shape, dynamic_plan
from ..fixed import fixed_output_shape, fixed_plan
from ..hd import hd_layout, hd_output_shape, hd_plan
from ..native import native_layout, native_output_shape, native_plan
from ..images import prepare_image
from ..pan_and_scan import pan_and_scan_layout, pan_and_scan_output_shape, pan_and_scan_plan
from ..patches import patches_layout, patches_output_shape, patches_plan
from ..plan import Placement, normalise_lut
from ..resample import identity_coeffs, pillow_vertical_first, precompute_coeffs
from ..spec import PreprocessSpec, TileLayout
from ..split import split_source, split_source_plan
from .driver import BLOCK, CudaKernels, DeviceBuffer, ResizeArgs

_KERNELS: dict[int, CudaKernels] = {}
PLANS_KEPT = 8  # image sizes whose device tables a tiler keeps (least recently used dropped)


def kernels_on(device: int) -> CudaKernels:
    """The compiled module on ``device`` (NVRTC runs once per process and device)."""
    return _KERNELS.get(device) or _KERNELS.setdefault(device, CudaKernels(device))


def _grid(w: int, h: int) -> tuple[int, int, int]:
    return (-(-w // BLOCK[0]), -(-h // BLOCK[1]), 3)


def _plans(hw, spec: PreprocessSpec):
    """(placements, output shape, layout, HD canvas or None) — the NumPy modules' geometry."""
    if spec.scheme == "fixed":
        pl = fixed_plan(hw, spec)
        t = pl.tiles[0]
        return [pl], fixed_output_shape(hw, spec), TileLayout(1, (t.h, t.w), spec.tokens_per_tile), None
    if spec.scheme == "anyres":
        return list(anyres_plan(hw, spec)), anyres_output_shape(hw, spec), anyres_tiles_layout(hw, spec), None
    if spec.scheme == "canvas":
        return canvas_plan(hw, spec), canvas_output_shape(hw, spec), canvas_layout(hw, spec), None
    if spec.scheme == "dynamic":
        return dynamic_plan(hw, spec), dynamic_output_shape(hw, spec), dynamic_layout(hw, spec), None
    if spec.scheme == "hd":
        pl, canvas = hd_plan(hw, spec)
        return [pl], hd_output_shape(hw, spec), hd_layout(canvas, spec), canvas
    if spec.scheme == "split":  # ``hw`` is the source picture's: upload() made it on the host
        return (*split_source_plan(hw, spec), None)
    if spec.scheme == "pan_and_scan":  # crops are source windows: see _resize_tables
        return pan_and_scan_plan(hw, spec), pan_and_scan_output_shape(hw, spec), pan_and_scan_layout(hw, spec), None
    if spec.scheme == "native":  # one tile, the whole resized picture, written as merge-ordered patches
        pl = replace(native_plan(hw, spec), layout="native", patch=spec.patch_size)
        return [pl], native_output_shape(hw, spec), native_layout(hw, spec), None
    pl, _, _ = patches_plan(hw, spec)
    return [pl], patches_output_shape(hw, spec), patches_layout(hw, spec), None


def _resize_tables(hw, pl: Placement, spec: PreprocessSpec, keep: list) -> ResizeArgs:
    """Coefficient tables for ``pl`` uploaded (kept alive in ``keep``), packed as struct Resize;
    the source pointer is filled in per frame (``src``)."""
    h, w = hw
    stride = w * 3  # the uploaded picture's row stride, also for a window of it
    if pl.source_window:  # read (sh, sw) pixels from the window's corner (_Launch.src_offset)
        h, w = pl.source_window[2:]
    in_h, in_w = pl.source_canvas or (h, w)
    rh, rw = pl.resized_hw
    cy = precompute_coeffs(in_h, rh, spec.resample) if in_h != rh else identity_coeffs(in_h)
    cx = precompute_coeffs(in_w, rw, spec.resample) if in_w != rw else identity_coeffs(in_w)
    if pl.transposed:
        vertical_first = not pillow_vertical_first(in_w, in_h, rw, rh)
    else:
        vertical_first = pillow_vertical_first(in_h, in_w, rh, rw)
    tables = [np.ascontiguousarray(a, dtype=np.int32) for a in (cy.start, cy.weight, cx.start, cx.weight)]
    bufs = [DeviceBuffer.upload(a) for a in (*tables, np.asarray(spec.background, dtype=np.uint8))]
    keep.extend(bufs)
    ys, yw, xs, xw, bgd = (int(b) for b in bufs)
    return ResizeArgs(0, h, w, stride, (in_h - h) // 2, (in_w - w) // 2,
                      ys, yw, cy.ksize, xs, xw, cx.ksize, rh, rw, int(vertical_first), bgd)  # fmt: skip


@dataclass
class _Launch:
    name: str  # kernel without its dtype suffix
    grid: tuple[int, int, int]
    args: list  # ctypes values; args[0] is the ResizeArgs whose .src is set per frame, the output pointer at out_arg
    out_arg: int
    out_offset: int  # bytes from the start of the output
    src_offset: int = 0  # bytes from the start of the picture (a placement's source window)


@dataclass
class _SizePlan:
    shape: tuple[int, ...]
    layout: TileLayout
    launches: list[_Launch]
    keep: list  # device buffers the launches point into


def _tile_launches(r: ResizeArgs, pl: Placement, spec, lut_dev, shape, item: int, keep: list,
                   src_offset: int = 0) -> list[_Launch]:
    fill = DeviceBuffer.upload(np.asarray(pl.canvas_fill(spec), dtype=np.uint8))
    keep.append(fill)
    top, left = pl.offset
    launches = []
    for t in pl.tiles:
        merge, temporal = (spec.merge_size, spec.temporal_patch_size) if pl.layout == "native" else (0, 1)
        if pl.layout in ("patches", "native"):
            offset, strides, patch = 0, (0, 0, 0), pl.patch
        else:
            assert shape[1:] == (3, t.h, t.w), (shape, t)  # one C-contiguous (3, h, w) tile each
            offset, strides, patch = t.index * 3 * t.h * t.w * item, (t.h * t.w, t.w, 1), 0
        args = [r, ctypes.c_uint64(int(fill)), ctypes.c_int(top), ctypes.c_int(left), ctypes.c_int(t.y0),
                ctypes.c_int(t.x0), ctypes.c_int(t.h), ctypes.c_int(t.w), ctypes.c_uint64(int(lut_dev)),
                ctypes.c_uint64(0), *(ctypes.c_longlong(s) for s in strides), ctypes.c_int(patch),
                ctypes.c_int(merge), ctypes.c_int(temporal)]  # fmt: skip
        launches.append(_Launch("resample_normalise", _grid(t.w, t.h), args, 9, offset, src_offset))
    return launches


class CudaTiler:
    """GPU ``tile_and_patchify`` for one spec and output dtype (float32 or float16)."""

    def __init__(self, spec: PreprocessSpec, dtype=np.float32, device: int = 0):
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise ValueError(f"unsupported output dtype {np.dtype(dtype)}; choose float32 or float16")
        if spec.scheme == "dual":  # two views in one flat buffer (kernels/dual.py): the C kernel and NumPy only
            raise ValueError("the CUDA kernel does not run the dual scheme (Mini-Gemini, CogAgent) yet; "
                             "use preprocess='cpu'")
        self.spec, self.dtype, self.device = spec, np.dtype(dtype), device
        self.kernels = kernels_on(device)
        self.suffix = "_f32" if self.dtype == np.float32 else "_f16"
        self.lut = DeviceBuffer.upload(normalise_lut(spec, np.float32))  # (3, 256) float32
        self.plans: OrderedDict[tuple[int, int], _SizePlan] = OrderedDict()
        self.image_buffer: DeviceBuffer | None = None  # uint8 frames, grown once
        self.out_buffer: DeviceBuffer | None = None  # tile batches when the caller gives no ``out``, grown once
        self.events = (self.kernels.event(), self.kernels.event())
        self.last_gpu_s = 0.0  # GPU time of the last call's kernels (CUDA events; the upload excluded)

    def plan(self, hw: tuple[int, int]) -> _SizePlan:
        """The launches for an (h, w) image, built and uploaded once per size."""
        if hw in self.plans:
            self.plans.move_to_end(hw)
            return self.plans[hw]
        spec, item, keep = self.spec, self.dtype.itemsize, []
        placements, shape, layout, hd_canvas = _plans(hw, spec)
        launches = []
        for pl in placements:
            r = _resize_tables(hw, pl, spec, keep)
            corner = (pl.source_window[0] * hw[1] + pl.source_window[1]) * 3 if pl.source_window else 0
            launches += _tile_launches(r, pl, spec, self.lut, shape, item, keep, corner)
        if hd_canvas is not None:  # global view of the padded canvas into tile 0
            pl, t = placements[0], spec.tile_size
            fill = DeviceBuffer.upload(np.asarray(pl.canvas_fill(spec), dtype=np.uint8))
            keep.append(fill)
            args = [r, ctypes.c_uint64(int(fill)), ctypes.c_int(pl.offset[0]), ctypes.c_int(pl.offset[1]),
                    ctypes.c_int(hd_canvas[0]), ctypes.c_int(hd_canvas[1]), ctypes.c_int(t),
                    ctypes.c_uint64(int(self.lut)), ctypes.c_uint64(0)]  # fmt: skip
            launches.append(_Launch("bicubic_global", _grid(t, t), args, 8, 0))
        self.plans[hw] = _SizePlan(tuple(shape), layout, launches, keep)
        if len(self.plans) > PLANS_KEPT:
            self.plans.popitem(last=False)
        return self.plans[hw]

    def upload(self, image: np.ndarray) -> tuple[DeviceBuffer, tuple[int, int]]:
        """Checked (``prepare_image``) uint8 (H, W, 3) image copied into the reused device buffer."""
        image = np.ascontiguousarray(prepare_image(image, self.spec.max_input_pixels))
        if self.spec.scheme == "split":  # its chain of uint8 resizes runs on the host (C kernel), the tiles here
            from .. import resolve_backend

            image = split_source(image, self.spec, resolve_backend())
        if self.image_buffer is None or self.image_buffer.nbytes < image.nbytes:
            self.image_buffer = DeviceBuffer(image.nbytes, self.device)
        self.image_buffer.write(image)
        return self.image_buffer, image.shape[:2]

    def launch(self, image_dev, hw: tuple[int, int], out_dev) -> _SizePlan:
        """Enqueue the kernels for an image already on the device (uint8 (h, w, 3), rows packed) on
        the default stream, writing into ``out_dev``; no synchronisation."""
        plan = self.plan(hw)
        for launch in plan.launches:
            launch.args[0].src = int(image_dev) + launch.src_offset  # every launch shares its placement's ResizeArgs
            launch.args[launch.out_arg].value = int(out_dev) + launch.out_offset
            self.kernels.launch(launch.name + self.suffix, launch.grid, launch.args)
        return plan

    def __call__(self, image: np.ndarray, out=None):
        """(pixels, layout) as ``tile_and_patchify``. Without ``out`` the pixels come back as a host
        array; with ``out`` — a ``DeviceBuffer`` or any object whose ``int()`` is a device pointer
        with room for the batch (a vision engine's input binding) — they are written there and
        ``(out, layout)`` is returned, with no copy back."""
        target, plan = self._run(image, out)
        if out is not None:
            return out, plan.layout
        return target.download(np.empty(plan.shape, dtype=self.dtype)), plan.layout

    def on_device(self, image: np.ndarray) -> tuple[int, tuple[int, ...], TileLayout]:
        """The batch in the tiler's own device buffer, valid until the next call: (pointer, shape, layout)."""
        target, plan = self._run(image, None)
        return int(target), plan.shape, plan.layout

    def _run(self, image: np.ndarray, out) -> tuple:
        """Upload, launch into ``out`` (or the tiler's own buffer), synchronise: (target, plan)."""
        image_dev, hw = self.upload(image)
        plan = self.plan(hw)
        nbytes = int(np.prod(plan.shape)) * self.dtype.itemsize
        if out is None:
            if self.out_buffer is None or self.out_buffer.nbytes < nbytes:
                self.out_buffer = DeviceBuffer(nbytes, self.device)
            out = self.out_buffer
        elif isinstance(out, DeviceBuffer) and out.nbytes < nbytes:
            raise ValueError(f"out holds {out.nbytes} bytes but the {plan.shape} {self.dtype.name} batch needs {nbytes}")
        self.kernels.record(self.events[0])
        self.launch(image_dev, hw, out)
        self.kernels.record(self.events[1])
        self.kernels.synchronize()
        self.last_gpu_s = self.kernels.elapsed_s(*self.events)
        return out, plan


_TILERS: OrderedDict[str, CudaTiler] = OrderedDict()


def tile_and_patchify_cuda(image: np.ndarray, spec: PreprocessSpec, dtype=np.float32, device: int = 0, out=None):
    """GPU version of ``vlmforge.kernels.tile_and_patchify``: same inputs, same (pixels, layout);
    ``out`` as in ``CudaTiler.__call__``. Tilers are kept per (spec, dtype, device)."""
    key = json.dumps([asdict(spec), np.dtype(dtype).name, device], sort_keys=True, default=str)
    if key not in _TILERS:
        _TILERS[key] = CudaTiler(spec, dtype, device)
        if len(_TILERS) > PLANS_KEPT:
            _TILERS.popitem(last=False)
    _TILERS.move_to_end(key)
    return _TILERS[key](image, out=out)
