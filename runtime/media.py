"""Images and videos on their way into the prompt: each encoded item with the layout its tokens
take (for the position scheme), put in the order the prompt's placeholders ask for them."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..kernels.spec import PreprocessSpec, TileLayout
from .errors import PromptError
from .prompt import PreparedPrompt


@dataclass
class Media:
    embeds: np.ndarray  # (tokens, hidden)
    layout: TileLayout  # grid (patches) and frames (temporal patches) of its tokens
    time_step: float = 1.0  # temporal position step per temporal patch (mrope)
    extras: dict = field(default_factory=dict)  # further connector outputs, (…, tokens, …): DeepStack's
    timestamps: list[float] = field(default_factory=list)  # a video's: seconds at each temporal patch
    key: str = ""  # hash of its pixels and settings (runtime/vision_cache.py): same key, same embeddings
    size: tuple[int, int] = (0, 0)  # (height, width) of the decoded picture (grounding boxes scale to it)

    def temporal_patches(self) -> list["Media"]:
        """A video as one item per temporal patch (for prompts that give each its own slots)."""
        t = self.layout.frames
        per = self.embeds.shape[0] // t
        one = dataclasses.replace(self.layout, num_tiles=self.layout.num_tiles // t, num_image_tokens=per, frames=1)
        return [Media(self.embeds[i * per : (i + 1) * per], one, 1.0,
                      {k: v[..., i * per : (i + 1) * per, :] for k, v in self.extras.items()}, key=f"{self.key}#{i}")
                for i in range(t)]


def as_list(items) -> list:
    """None → [], one item → [item], a list or tuple → a list (an array is one item)."""
    if items is None:
        return []
    return list(items) if isinstance(items, (list, tuple)) else [items]


def video_time_step(spec: PreprocessSpec, tokens_per_second: float, fps) -> float:
    """Qwen2.5-VL: tokens_per_second × seconds per temporal patch (temporal_patch_size / fps); Qwen2-VL: 1."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise PromptError(f"video_fps / sample_fps must be a positive number (a frame rate), got {fps!r}")
    if not tokens_per_second:
        return 1.0
    return float(np.float32(tokens_per_second) * np.float32(spec.temporal_patch_size / fps))


def in_prompt_order(prepared: PreparedPrompt, images: list[Media], videos: list[Media], image_id: int) -> list[Media]:
    """The encoded items in the order their slot runs appear in the prompt."""
    if prepared.sources is None:  # images only, in order (prefix / memory placements)
        return images
    return [images[i] if token == image_id else videos[i] for token, i in prepared.sources]


def frame_timestamps(indices, fps: float, temporal_patch: int) -> list[float]:
    """Seconds at each temporal patch of frames ``indices`` taken at ``fps``: the indices padded with
    the last to a multiple of the patch, each patch the mean of its first and last frame's time
    (``Qwen3VLProcessor._calculate_timestamps``)."""
    indices = [int(i) for i in indices]
    indices += [indices[-1]] * (-len(indices) % temporal_patch)
    times = [i / fps for i in indices]
    return [(times[i] + times[i + temporal_patch - 1]) / 2 for i in range(0, len(times), temporal_patch)]
