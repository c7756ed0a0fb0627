"""Image preprocessing kernels: one call from an HWC uint8 RGB image to the tile batch (or patch
sequence) a vision graph reads. NumPy here is the reference implementation; ``kernels.cuda`` runs
the same placements on a GPU.

Schemes: ``fixed`` (CLIP / LLaVA-1.5), ``anyres`` (LLaVA-NeXT), ``hd`` (InternLM-XComposer2-4KHD),
``patches`` (Fuyu). Each is (output_shape_fn, kernel_fn); the kernel writes into a preallocated
output and returns the ``TileLayout`` the prompt builder needs.
"""

from __future__ import annotations

import numpy as np

from .anyres import anyres_num_image_tokens, anyres_output_shape, anyres_tiles, pack_anyres_features
from .fixed import fixed_output_shape, fixed_tiles
from .hd import hd_output_shape, hd_tiles
from .images import check_image_size, prepare_image
from .patches import patches_output_shape, patches_tiles
from .spec import PreprocessSpec, TileLayout

__all__ = [
    "PreprocessSpec",
    "TileLayout",
    "anyres_num_image_tokens",
    "check_image",
    "check_image_size",
    "pack_anyres_features",
    "prepare_image",
    "tile_and_patchify",
]

_SCHEMES = {
    "fixed": (fixed_output_shape, fixed_tiles),
    "anyres": (anyres_output_shape, anyres_tiles),
    "hd": (hd_output_shape, hd_tiles),
    "patches": (patches_output_shape, patches_tiles),
}
_DTYPES = (np.float32, np.float16)


def check_image(image: np.ndarray, max_pixels: int) -> None:
    """Validate the kernel's input contract: (H, W, 3) uint8, non-empty, not absurdly large."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}; convert to 8-bit RGB first")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    check_image_size(image.shape[0], image.shape[1], max_pixels)


def tile_and_patchify(image: np.ndarray, spec: PreprocessSpec, dtype=np.float32) -> tuple[np.ndarray, TileLayout]:
    """(H, W[, C]) uint8 → (pixels, layout).

    pixels: (tiles, 3, h, w) for fixed / anyres / hd, (patches, patch·patch·3) for patches, in
    ``dtype`` (float32 or float16). Grey and RGBA arrays are converted like transformers does."""
    if np.dtype(dtype) not in _DTYPES:
        raise ValueError(f"unsupported output dtype {np.dtype(dtype)}; choose float32 or float16")
    image = prepare_image(image, spec.max_input_pixels)
    output_shape, kernel = _SCHEMES[spec.scheme]
    out = np.empty(output_shape(image.shape[:2], spec), dtype=dtype)
    layout = kernel(image, spec, out)
    return out, layout
