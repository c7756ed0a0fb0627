"""A video as a batch of frames, each preprocessed alone by a per-frame spec (LLaVA-OneVision's
video processor: every frame resized to the tower's square, rescaled, normalised — the ``fixed``
scheme), for models whose tower sees each frame as one tile.

The layout counts the tokens after ``feature_pooling`` (each frame's P×P features pooled to
ceil(P / n)²) and one newline after the whole video when ``image_newline`` is set, as
``LlavaOnevisionModel.get_video_features`` and ``LlavaOnevisionProcessor.replace_video_token`` do."""

from __future__ import annotations

import numpy as np

from . import tile_and_patchify, tile_output_shape
from .anyres_max import pooled_side
from .spec import PreprocessSpec, TileLayout


def frame_tokens(num_frames: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(tokens per frame side after pooling, tokens of the whole video)."""
    side = pooled_side(spec.tile_size // spec.patch_size, spec.feature_pooling)
    return side, num_frames * side * side + (1 if spec.image_newline else 0)


def frame_batch(frames: np.ndarray, spec: PreprocessSpec, backend: str = "auto") -> tuple[np.ndarray, TileLayout]:
    """(T, H, W, 3) uint8 → ((T, 3, t, t) float32, layout); every frame through ``spec``'s kernel."""
    if spec.scheme != "fixed" or spec.output_hw != (spec.tile_size, spec.tile_size):
        raise ValueError(f"video frames need a fixed spec resizing to tile_size² ({spec.tile_size}²), got "
                         f"scheme {spec.scheme!r} to {spec.output_hw}; re-export the model")
    num_frames = len(frames)
    shape = tile_output_shape(frames.shape[1:3], spec)
    out = np.empty((num_frames, *shape[1:]), dtype=np.float32)
    for i, frame in enumerate(frames):
        tile_and_patchify(frame, spec, backend=backend, out=out[i : i + 1])
    side, tokens = frame_tokens(num_frames, spec)
    return out, TileLayout(num_frames, (spec.tile_size, spec.tile_size), tokens, (side, side), num_frames)
