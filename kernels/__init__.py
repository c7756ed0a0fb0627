"""Image preprocessing kernels: one call from an HWC uint8 RGB image to the tile batch (or patch
sequence) a vision graph reads. NumPy here is the reference implementation; ``kernels.cpu`` runs
its resampling and normalisation in C (compiled at first use, byte-identical, the default when a
C compiler is present); ``kernels.cuda`` runs the same placements on a GPU.

Schemes: ``fixed`` (CLIP / LLaVA-1.5), ``anyres`` (LLaVA-NeXT), ``hd`` (InternLM-XComposer2-4KHD),
``patches`` (Fuyu), ``native`` (Qwen2-VL), ``dynamic`` (InternVL), ``split`` (Idefics3 / SmolVLM), ``pan_and_scan`` (Gemma 3). Each is (output_shape_fn, kernel_fn); the kernel writes into a preallocated
output and returns the ``TileLayout`` the prompt builder needs.
"""

from __future__ import annotations

import os

import numpy as np

from .anyres import anyres_num_image_tokens, anyres_output_shape, anyres_tiles, pack_anyres_features
from .dual import dual_output_shape, dual_tiles, dual_views
from .dynamic import dynamic_output_shape, dynamic_tiles
from .fixed import fixed_output_shape, fixed_tiles
from .hd import hd_output_shape, hd_tiles
from .images import check_image_size, prepare_image
from .native import native_geometry, native_output_shape, native_tiles, pack_geometry
from .pan_and_scan import pan_and_scan_output_shape, pan_and_scan_tiles
from .patches import patches_output_shape, patches_tiles
from .spec import PreprocessSpec, TileLayout
from .split import split_output_shape, split_tiles
from .canvas import canvas_geometry, canvas_output_shape, canvas_tiles

__all__ = [
    "PreprocessSpec",
    "TileLayout",
    "BACKENDS",
    "anyres_num_image_tokens",
    "c_kernel_error",
    "check_image",
    "check_image_size",
    "pack_anyres_features",
    "prepare_image",
    "resolve_backend",
    "tile_and_patchify",
    "tile_output_shape",
    "vision_geometry",
    "pack_geometry",
    "packed_patches_per_call",
    "pixel_views",
]

_SCHEMES = {
    "fixed": (fixed_output_shape, fixed_tiles),
    "anyres": (anyres_output_shape, anyres_tiles),
    "hd": (hd_output_shape, hd_tiles),
    "patches": (patches_output_shape, patches_tiles),
    "native": (native_output_shape, native_tiles),
    "dynamic": (dynamic_output_shape, dynamic_tiles),
    "split": (split_output_shape, split_tiles),
    "pan_and_scan": (pan_and_scan_output_shape, pan_and_scan_tiles),
    "dual": (dual_output_shape, dual_tiles),
    "canvas": (canvas_output_shape, canvas_tiles),  # Llama-3.2-Vision
}
_DTYPES = (np.float32, np.float16)
BACKENDS = ("auto", "c", "numpy")
_C_STATE: dict[str, object] = {}  # "ok": bool, "error": the build error — decided once per process


def resolve_backend(backend: str = "auto") -> str:
    """"auto" → "c" when the C kernel builds (else "numpy", and the reason is kept in
    ``c_kernel_error()``); $VLMFORGE_CPU_KERNEL (c | numpy) overrides "auto". "c" raises if it cannot build."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = os.environ.get("VLMFORGE_CPU_KERNEL", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"VLMFORGE_CPU_KERNEL={backend!r} is not one of c, numpy")
    if backend == "numpy":
        return backend
    if "ok" not in _C_STATE:
        from .cpu import KernelBuildError
        from .cpu.run import library

        try:
            library()
            _C_STATE["ok"] = True
        except KernelBuildError as e:
            _C_STATE.update(ok=False, error=e)
    if _C_STATE["ok"]:
        return "c"
    if backend == "c":
        raise _C_STATE["error"]
    return "numpy"


def c_kernel_error() -> Exception | None:
    """Why "auto" fell back to NumPy in this process (None when the C kernel is in use or untried)."""
    return _C_STATE.get("error")


def check_image(image: np.ndarray, max_pixels: int) -> None:
    """Validate the kernel's input contract: (H, W, 3) uint8, non-empty, not absurdly large."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}; convert to 8-bit RGB first")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    check_image_size(image.shape[0], image.shape[1], max_pixels)


def tile_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, ...]:
    """Shape of the pixels ``tile_and_patchify`` returns for an (h, w) image (to preallocate ``out``)."""
    check_image_size(image_hw[0], image_hw[1], spec.max_input_pixels)
    return tuple(_SCHEMES[spec.scheme][0](tuple(image_hw), spec))


def tile_and_patchify(image: np.ndarray, spec: PreprocessSpec, dtype=np.float32, backend: str = "auto", out=None):
    """(H, W[, C]) uint8 → (pixels, layout).

    pixels: (tiles, 3, h, w) for fixed / anyres / hd, (patches, patch·patch·3) for patches, in
    ``dtype`` (float32 or float16). Grey and RGBA arrays are converted like transformers does.
    ``backend``: "auto" (C when it builds, else NumPy), "c" or "numpy" — the same bytes either way.
    ``out``: a C-contiguous array of that shape and dtype to write into (every element is
    written) — a buffer reused across frames skips the page faults of a fresh 30 MB allocation."""
    if np.dtype(dtype) not in _DTYPES:
        raise ValueError(f"unsupported output dtype {np.dtype(dtype)}; choose float32 or float16")
    backend = resolve_backend(backend)
    image = prepare_image(image, spec.max_input_pixels)
    output_shape, kernel = _SCHEMES[spec.scheme]
    shape = tuple(output_shape(image.shape[:2], spec))
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif not (isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.dtype(dtype)
              and out.flags.c_contiguous and out.flags.writeable):  # fmt: skip
        got = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
        raise ValueError(f"out must be a writeable C-contiguous {np.dtype(dtype).name} array of shape {shape} "
                         f"for this {image.shape[0]}×{image.shape[1]} image, got {got}; "
                         "allocate it with tile_output_shape(image.shape[:2], spec)")
    layout = kernel(image, spec, out, backend)
    return out, layout


def vision_geometry(layout: TileLayout, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Host-computed inputs the vision graph takes beside the pixels (rotary positions of a
    native-resolution grid …); empty for schemes whose graph needs none."""
    if spec.scheme == "canvas":  # Llama-3.2-Vision: the aspect-ratio id and tile mask
        return canvas_geometry(layout, spec)
    return native_geometry(layout, spec) if spec.scheme == "native" else {}


def packed_patches_per_call(spec: PreprocessSpec) -> int:
    """How many patches one vision call may take when several images go through it together
    (``pack_geometry``): the export's bound for one image (what TensorRT's profile allows); 0 for
    schemes whose tower takes one image per call."""
    return spec.max_pixels // spec.patch_size**2 if spec.scheme == "native" and spec.max_pixels else 0


def pixel_views(pixels: np.ndarray, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """The kernel's output by the name each vision graph reads it under: ``pixel_values`` alone,
    or (dual) the low-resolution views and ``pixel_values_aux``, views of one buffer."""
    return dual_views(pixels, spec) if spec.scheme == "dual" else {"pixel_values": pixels}
