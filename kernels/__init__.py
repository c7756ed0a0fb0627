"""Image preprocessing kernels: one call from an HWC uint8 RGB image to the tile batch a
vision graph reads. NumPy here is the reference implementation."""

from __future__ import annotations

import numpy as np

from .fixed import fixed_output_shape, fixed_tiles
from .spec import PreprocessSpec, TileLayout

__all__ = ["PreprocessSpec", "TileLayout", "tile_and_patchify", "check_image"]

_SCHEMES = {"fixed": (fixed_output_shape, fixed_tiles)}


def check_image(image: np.ndarray, max_pixels: int) -> None:
    """Validate the kernel's input contract: (H, W, 3) uint8, non-empty, not absurdly large."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}; convert to 8-bit RGB first")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image has zero size ({h}×{w})")
    if h * w > max_pixels:
        raise ValueError(f"image of {h}×{w} exceeds the limit of {max_pixels} pixels; downscale it first")


def tile_and_patchify(image: np.ndarray, spec: PreprocessSpec, dtype=np.float32) -> tuple[np.ndarray, TileLayout]:
    """(H, W, 3) uint8 → (pixels (tiles, 3, h, w) in ``dtype``, layout)."""
    check_image(image, spec.max_input_pixels)
    output_shape, kernel = _SCHEMES[spec.scheme]
    out = np.empty(output_shape(image.shape[:2], spec), dtype=dtype)
    layout = kernel(image, spec, out)
    return out, layout
