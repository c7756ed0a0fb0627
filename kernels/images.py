"""Array inputs → the kernels' contract, an (H, W, 3) uint8 RGB array, as the transformers PIL
image processors convert arrays (``convert_to_rgb``): grey (H, W) / (H, W, 1) is repeated to
three channels; (H, W, 4) is RGBA, composited onto white. Anything else is refused.

An array carries no colour mode, so 4 channels always mean RGBA here, as in transformers: CMYK
must be converted when the file is decoded (runtime/images.py does that with Pillow).
"""

from __future__ import annotations

import numpy as np


def check_image_size(h: int, w: int, max_pixels: int) -> None:
    """Refuse empty or absurdly large images from their declared size, before anything is allocated."""
    if h <= 0 or w <= 0:
        raise ValueError(f"image has zero size ({h}×{w})")
    if h * w > max_pixels:
        raise ValueError(
            f"image of {h}×{w} exceeds the limit of {max_pixels} pixels; downscale it first "
            "or raise PreprocessSpec.max_input_pixels"
        )


def _alpha_table() -> np.ndarray:
    """(256, 256) uint8: [alpha, value] → round(a/255·v + (1 − a/255)·255), transformers' float64 formula."""
    alpha = np.arange(256, dtype=np.float64)[:, None] / 255
    value = np.arange(256, dtype=np.float64)[None, :]
    return np.round(alpha * value + (1 - alpha) * 255).astype(np.uint8)


_ALPHA = _alpha_table()


def prepare_image(image, max_pixels: int) -> np.ndarray:
    """Validate and convert an array image to (H, W, 3) uint8 RGB (see module docstring)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}; decode files with runtime.images first")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    check_image_size(image.shape[0], image.shape[1], max_pixels)
    if image.dtype != np.uint8:
        raise ValueError(
            f"expected 8-bit pixels, got dtype {image.dtype}; convert 16-bit images with (x >> 8).astype(np.uint8) "
            "and float images with (x * 255).round().astype(np.uint8)"
        )
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        grey = image if image.ndim == 2 else image[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    if channels == 4:
        return _ALPHA[image[:, :, 3:4], image[:, :, :3]]  # alpha-composite onto white
    raise ValueError(
        f"expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {channels}; convert the image to RGB first"
    )
