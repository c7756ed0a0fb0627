"""Run samples through the real pipeline stages and keep what each graph saw.

``encode_sample`` calls ``Pipeline.encode_image`` (tiles from the manifest's preprocess spec →
vision → connector → packing), ``prepare_prompt`` and ``merge`` exactly as generation does;
recording proxies around the vision and connector sessions capture their feeds and outputs.
``llm_feeds`` replays the KV-cached decoder: a prefill with an empty cache, then greedy decode
steps whose past_key_values are the real cache of that prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.kv_cache import cache_names
from ..runtime.stats import NullTimer
from .precision import QuantizationError
from .samples import Sample


def require_decoder_only(manifest, action: str) -> None:
    """Replaying the LLM step needs a decoder-only LM with 1-D positions; say so otherwise."""
    flags = [f for f in ("encoder_decoder", "cross_attention", "uses_mrope") if getattr(manifest.capabilities, f, False)]
    if flags:
        raise QuantizationError(
            f"{action} replays the decoder-only LLM step, but this model declares {', '.join(flags)}; "
            "quantise it weight-only (--precision w8 or w4), which needs no calibration"
        )


class Recorder:
    """Wraps an engine session; remembers the last feeds and outputs of ``run``."""

    def __init__(self, session):
        self.session = session
        self.spec = session.spec
        self.feeds: dict | None = None
        self.outputs: dict | None = None

    def run(self, feeds):
        self.feeds = {k: np.array(v, copy=True) for k, v in feeds.items()}
        self.outputs = self.session.run(feeds)
        return self.outputs


@dataclass
class EncodedSample:
    feeds: dict[str, dict[str, np.ndarray]]  # graph → what it got: vision (pixel_values), connector (image_features …)
    outputs: dict[str, dict[str, np.ndarray]]  # graph → what it returned
    inputs_embeds: np.ndarray  # (1, seq, d_model) — the prompt with the image merged in
    input_ids: np.ndarray  # (seq,)


def sample_prompt_text(pipe, sample: Sample) -> str:
    """A prompt with the placeholder is used as written; plain text becomes one chat turn with the image."""
    if pipe.manifest.image.image_token in sample.prompt:
        return pipe.prompt_text(sample.prompt, None, 1)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.prompt}]}]
    return pipe.prompt_text(None, messages, 1)


def encode_sample(pipe, sample: Sample) -> EncodedSample:
    """The steps of ``Pipeline._generate`` for one image and prompt, recording each graph's I/O."""
    recorders = {name: Recorder(getattr(pipe, name)) for name in ("vision", "connector") if getattr(pipe, name, None)}
    saved = {name: getattr(pipe, name) for name in recorders}
    for name, rec in recorders.items():
        setattr(pipe, name, rec)
    try:
        text = sample_prompt_text(pipe, sample)
        packed = pipe.encode_image(sample.image, NullTimer(), text)
    finally:
        for name, session in saved.items():
            setattr(pipe, name, session)
    prepared = pipe.prepare_prompt(text, None, 1, [packed.shape[0]])
    return EncodedSample(
        feeds={name: rec.feeds for name, rec in recorders.items()},
        outputs={name: rec.outputs for name, rec in recorders.items()},
        inputs_embeds=pipe.merge(prepared, [packed]),
        input_ids=prepared.input_ids,
    )


def decoder_feeds(inputs_embeds, past: list[np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """The LLM graph's inputs for one step, as ``OrtDecoder.step`` binds them."""
    seq, num_past = inputs_embeds.shape[1], past[0].shape[2]
    feeds = {
        "inputs_embeds": np.ascontiguousarray(inputs_embeds, dtype=np.float32),
        "attention_mask": np.ones((1, num_past + seq), dtype=np.int64),
        "position_ids": np.arange(num_past, num_past + seq, dtype=np.int64)[None],
    }
    feeds.update(zip(cache_names(num_layers)[0], past))
    return feeds


def llm_feeds(pipe, inputs_embeds: np.ndarray, num_decode_steps: int) -> list[dict[str, np.ndarray]]:
    """Prefill (empty past) + ``num_decode_steps`` greedy steps (real past) → one feed dict per step."""
    decoder, spec = pipe.decoder, pipe.manifest.llm
    decoder.reset()
    embeds, out = inputs_embeds, []
    for _ in range(1 + num_decode_steps):
        past = [v.copy() for v in decoder.cache.views()]  # (1, kv_heads, past, head_dim) each
        out.append(decoder_feeds(embeds, past, spec.num_layers))
        positions = out[-1]["position_ids"]
        token = int(np.argmax(decoder.step(embeds, positions)))
        embeds = np.asarray(pipe.embed_table[token], dtype=np.float32)[None, None]  # (1, 1, d)
    return out
