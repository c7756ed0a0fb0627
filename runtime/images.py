"""Inputs → HWC uint8 RGB arrays (the only image type the kernels accept).

Accepts paths, PIL images and NumPy arrays. Files are fully decoded here (a truncated file
fails now, not halfway through a kernel), EXIF orientation is applied like transformers does
through PIL, and every mode (L, LA, P, RGBA, CMYK, I;16 …) is converted to 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ImageError

MAX_DECODE_PIXELS = 178_956_970  # Pillow's decompression-bomb limit (2× its warning threshold)


def _to_rgb(img) -> np.ndarray:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than letting PIL clip at 255
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / peak + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA") else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def load_image(source) -> np.ndarray:
    """A path, PIL image or array → (H, W, 3) uint8 RGB."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_DECODE_PIXELS:
                    raise ImageError(f"{path} declares {img.width}×{img.height} pixels, too large to decode")
                img.load()  # decode fully now: truncated files raise here
                return _to_rgb(img)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read image {path}: {e}; is it a complete PNG/JPEG/WebP file?") from None
    raise TypeError(f"images must be paths, PIL images or HWC uint8 arrays, got {type(source).__name__}")


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"an image array must be HWC with 1, 3 or 4 channels, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image array has zero size {arr.shape}")
    if arr.dtype != np.uint8:
        raise ImageError(
            f"an image array must be uint8 (0–255), got {arr.dtype}; convert with (x * 255).round().astype(np.uint8)"
        )
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, :3])  # PIL's RGBA→RGB drops alpha the same way
    return np.ascontiguousarray(arr)
