"""What a caller asks for (``Request``) and what the pipeline makes of it before the first LLM
step (``Prepared``): the prompt's ids and embeddings, its positions, per-token inputs, the
cross-attention memory and its token budget. Preparing touches no decoder state, so requests
are prepared in the caller's thread while the engine decodes others."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..positions import Positions
from ..prompt import PreparedPrompt
from ..manifest import GroundingSpec
from ..token_inputs import TokenFeeds

SAMPLING_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")


@dataclass
class Request:
    """One generation, with ``Pipeline.generate``'s arguments (None: the export's default)."""

    prompt: str | None = None
    images: list | None = None
    messages: list | None = None
    videos: list | None = None
    max_new_tokens: int | None = None
    stop: list[str] | str | None = None
    ignore_eos: bool = False
    max_pixels: int | None = None
    video_fps: float = 2.0
    sample_fps: float | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None

    def kwargs(self) -> dict:
        """As keyword arguments of ``Pipeline.generate`` (the cold, one-request path)."""
        out = {k: getattr(self, k) for k in ("prompt", "images", "messages", "videos", "max_new_tokens", "stop",
                                             "ignore_eos", "max_pixels", "video_fps", "sample_fps")}
        out.update(self.sampling())
        return out

    def sampling(self) -> dict:
        return {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}


def make_request(prompt, images, kwargs: dict) -> Request:
    """``generate(prompt, images, **kwargs)``'s arguments as a Request; unknown names are refused by name."""
    known = set(Request.__dataclass_fields__)
    unknown = set(kwargs) - known
    if unknown:
        sampling = sorted(SAMPLING_FIELDS)
        raise TypeError(f"unknown generation argument(s) {sorted(unknown)}; valid: {sampling} and "
                        f"{sorted(known - set(SAMPLING_FIELDS) - {'prompt', 'images'})}")
    return Request(prompt, images, **kwargs)


@dataclass
class Prepared:
    prompt: PreparedPrompt  # the prompt's ids and image slots
    input_ids: np.ndarray  # (seq,) what the decoder is fed: the prompt, or the start token (encoder-decoder)
    inputs_embeds: np.ndarray  # (1, seq, hidden) float32
    positions: Positions
    feeds: TokenFeeds  # the manifest's per-token inputs (llm.token_inputs)
    max_new_tokens: int  # the request's, cut to what the context leaves
    memory: dict | None = None  # cross-attention K/V and mask, (1, …) each: fixed for the whole generation
    media_keys: list[str] = field(default_factory=list)  # per image slot run: the hash of its pixels and settings
    picture_sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) of each image given, in order
    grounding: GroundingSpec | None = None  # the manifest's: read boxes out of the answer

    @property
    def num_tokens(self) -> int:
        return int(self.inputs_embeds.shape[1])
