"""Video inputs → (frames, H, W, 3) uint8: an array, a list of pictures, a folder of frames, or a
video file (decoded with PyAV, the optional ``vlmforge[video]`` extra).

Frames are taken as given unless a sampling rate is asked for (``sample_frames``, as the
transformers video processor samples with ``fps``: uniformly, a multiple of the temporal patch,
between ``min_frames`` and ``max_frames``); every frame must have the same size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import ImageError
from .images import load_image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_FRAMES, MAX_FRAMES = 4, 768  # Qwen2VLVideoProcessor's defaults


def sample_frames(total: int, source_fps: float, fps: float, temporal_patch: int,
                  min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES, rule: str = "qwen2") -> np.ndarray:
    """Indices of the frames to keep when a ``total``-frame video taken at ``source_fps`` is
    sampled at ``fps``: ``rule`` "qwen2" as ``Qwen2VLVideoProcessor.sample_frames`` (a multiple of
    the temporal patch, evenly stepped), "linspace" as ``Qwen3VLVideoProcessor.sample_frames``."""
    if not (math.isfinite(fps) and fps > 0 and math.isfinite(source_fps) and source_fps > 0):
        raise ImageError(f"frame rates must be positive numbers, got sample fps {fps!r} and video fps {source_fps!r}")
    if rule == "linspace":
        count = min(max(int(total / source_fps * fps), min_frames), max_frames, total)
        return np.linspace(0, total - 1, count).round().astype(np.int64)
    most = math.floor(min(max_frames, total) / temporal_patch) * temporal_patch
    count = min(max(total / source_fps * fps, min_frames), most, total)
    count = math.floor(count / temporal_patch) * temporal_patch
    if count < 1:
        raise ImageError(f"a {total}-frame video is too short to sample {temporal_patch}-frame temporal patches at "
                         f"{fps} fps; pass more frames or leave out the sampling rate")
    return np.arange(0, total, total / count).astype(np.int64)[:count]


def load_video(source, max_pixels: int) -> np.ndarray:
    """A video in any accepted form → (T, H, W, 3) uint8; ``max_pixels`` bounds each frame."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (3, 4):
            raise ImageError(f"a video array must be (frames, H, W[, C]), got shape {source.shape}")
        frames = [load_image(f, max_pixels) for f in source]
    elif isinstance(source, (str, Path)) and Path(source).is_dir():
        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        frames = [load_image(f, max_pixels) for f in files]
    elif isinstance(source, (str, Path)):
        frames = _decode_file(Path(source), max_pixels)
    elif isinstance(source, (list, tuple)):
        frames = [load_image(f, max_pixels) for f in source]
    else:
        raise TypeError(f"a video is a (T, H, W, 3) array, a list of pictures, a folder of frames or a video file; "
                        f"got {type(source).__name__}")
    if not frames:
        raise ImageError("the video has no frames; pass at least one")
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise ImageError(f"the video's frames differ in size ({', '.join(f'{w}×{h}' for h, w in sorted(sizes))}); "
                         "resize them to one size first")
    return np.stack(frames)


def _decode_file(path: Path, max_pixels: int) -> list[np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    try:
        import av
    except ImportError:
        raise ImageError(f"decoding {path.name} needs PyAV: pip install \"vlmforge[video]\" (or pass the frames as "
                         "an array, a list of pictures or a folder of frames)") from None
    try:
        with av.open(str(path)) as container:
            return [load_image(frame.to_ndarray(format="rgb24"), max_pixels) for frame in container.decode(video=0)]
    except av.FFmpegError as e:
        raise ImageError(f"cannot decode video {path}: {e}") from None
