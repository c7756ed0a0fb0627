"""Inputs → HWC uint8 RGB arrays (the only image type the kernels accept).

Accepts paths, PIL images and NumPy arrays. Files are fully decoded here (a truncated file
fails now, not halfway through a kernel), EXIF orientation is applied like transformers does
through PIL, and every mode (L, LA, P, RGBA, CMYK, I;16 …) is converted to 8-bit RGB, with
transparency composited onto white exactly as transformers' ``convert_to_rgb`` does (so a
transparent PNG gives the tokens transformers gives). The pixel count is checked from the file's
header before anything is decoded: a small file that declares a huge picture allocates nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..kernels.images import prepare_image
from .errors import ImageError

# the default limit: PreprocessSpec.max_input_pixels (50 MP); Pipeline.load(max_image_pixels=...) changes it
DEFAULT_MAX_PIXELS = 50_000_000


def _to_rgb(img) -> np.ndarray:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than letting PIL clip at 255
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / peak + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if has_alpha:  # transformers' convert_to_rgb: RGBA over an opaque white background
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path, PIL image or array → (H, W, 3) uint8 RGB; pictures over ``max_pixels`` are refused."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        height, width = (tuple(source.shape) + (0, 0))[:2]
        _check_pixels(width, height, max_pixels, "the image array")
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels, "the PIL image")
        return _to_rgb(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image file; pass the path of each picture")
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with warnings.catch_warnings():  # Pillow warns of bombs at open; our limit below decides
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)  # reads the header only
            with img:
                _check_pixels(img.width, img.height, max_pixels, str(path))
                img.load()  # decode fully now: truncated files raise here
                return _to_rgb(img)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read image {path}: {e}; is it a complete PNG/JPEG/WebP file?") from None
    raise TypeError(f"images must be paths, PIL images or HWC uint8 arrays, got {type(source).__name__}")


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{what} is {width}×{height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,}; downscale it, or raise the limit "
                         "(Pipeline.load(max_image_pixels=...), --max-image-pixels)")


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
    if arr.shape[2] == 4:  # RGBA: composited onto white, as transformers' convert_to_rgb does
        return prepare_image(arr, arr.shape[0] * arr.shape[1])
    return np.ascontiguousarray(arr)
