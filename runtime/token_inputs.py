"""Per-token inputs of the LLM graph beside inputs_embeds, as the manifest declares them
(``llm.token_inputs``): what a prefill feeds for its prompt and what every decode step feeds for
one generated (text) token. The decode loop passes them through without knowing what they are.

deepstack (Qwen3-VL): (layers, 1, seq, hidden) float32 — each image's connector output of that
name, (layers, tokens, hidden), written at the image's slots; zeros at text tokens, so a decode
step feeds (layers, 1, 1, hidden) zeros.

token_spans (the attention pattern, ``llm.attention``): (1, seq) int64 span ids, -1 at decode steps.

ntk_alpha (Qwen-VL): (1,) float32, one value for the whole sequence (every prefill chunk and decode
step): the original picks its dynamic-NTK α from the prompt's length at the prefill and keeps it.

image_mask (InternLM-XComposer2's LoRA, CogVLM's vision expert): (1, seq) float32, 1 at every image
and video slot (but each one's last ``skip_last``), 0 at text tokens; a decode step (a generated text
token) feeds (1, 1) zeros.

cross_mask (Mllama): (1, seq, memory) float32, the memory rows each token sees (runtime/cross_mask.py);
a decode step feeds the prompt's last row (1, 1, memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .attention import chunk_bounds, decode_spans, plan_spans
from .cross_mask import cross_mask
from .manifest import LLMSpec


SEQUENCE_AXIS = 2  # of every prefill array built here: (layers, batch, seq, hidden)


@dataclass
class TokenFeeds:
    prefill: dict[str, np.ndarray] = field(default_factory=dict)
    decode: dict[str, np.ndarray] = field(default_factory=dict)  # the same arrays at every decode step
    constant: dict[str, np.ndarray] = field(default_factory=dict)  # per sequence, fed at every step
    seq_axes: dict[str, int] = field(default_factory=dict)  # prefill array → its sequence axis (default 2)
    spans: np.ndarray | None = None  # (1, seq) the attention pattern's span ids (runtime/attention.py), if any

    def prefill_part(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The prefill arrays for prompt tokens start … stop - 1 (a prefill chunk)."""
        part = {name: a[(slice(None),) * self.seq_axes.get(name, SEQUENCE_AXIS) + (slice(start, stop),)]
                for name, a in self.prefill.items()}
        return {**part, **self.constant}

    def chunk_bounds(self, seq_len: int, chunk: int) -> list[int]:
        """Where prefill steps of ``chunk`` tokens end, never inside an attention span."""
        return chunk_bounds(seq_len, chunk, self.spans)

    @property
    def cache_context(self) -> str:
        """What a KV cache built under these inputs depends on beyond the tokens (ntk_alpha's α):
        a cached prefix is reused only under the same context."""
        return ";".join(f"{k}={v.tolist()}" for k, v in sorted(self.constant.items()))


def ntk_alpha(prompt_tokens: int, seq_length: int) -> float:
    """Qwen's dynamic-NTK α: 2^⌈log2(n / seq_length) + 1⌉ − 1, at least 1 (1 up to seq_length tokens)."""
    if prompt_tokens <= 0:
        return 1.0
    return float(max(2 ** math.ceil(math.log(prompt_tokens / seq_length, 2) + 1) - 1, 1))


def image_mask(seq_len: int, slots: list[tuple[int, int]], skip_last: int = 0) -> np.ndarray:
    """(1, seq) float32: 1 at the slots (first position, count) but each one's last ``skip_last``, 0 elsewhere."""
    mask = np.zeros((1, seq_len), dtype=np.float32)
    for start, count in slots:
        mask[0, start : start + max(count - skip_last, 0)] = 1.0
    return mask


def plan_token_inputs(spec: LLMSpec, seq_len: int, slots: list[tuple[int, int]], media, input_ids=None) -> TokenFeeds:
    """``slots``: (first position, count) of each item in ``media`` (prompt order), whose
    ``extras`` hold the connector outputs the declarations name; ``input_ids`` (seq,): the
    decoder's prompt ids (cross_mask finds the pictures' tokens in them)."""
    feeds = TokenFeeds()
    feeds.spans = plan_spans(spec.attention, seq_len, slots)
    if feeds.spans is not None:  # (1, seq): batch, then sequence
        name = spec.attention.input
        feeds.prefill[name], feeds.decode[name], feeds.seq_axes[name] = feeds.spans, decode_spans(), 1
    for declared in spec.token_inputs:
        if declared.kind == "ntk_alpha":
            alpha = np.array([ntk_alpha(seq_len, declared.seq_length)], dtype=np.float32)
            feeds.constant[declared.name] = feeds.decode[declared.name] = alpha
            continue
        if declared.kind == "cross_mask":
            mask = cross_mask(input_ids, declared.token_id, media, declared.tokens_per_tile)
            feeds.prefill[declared.name], feeds.seq_axes[declared.name] = mask, 1
            feeds.decode[declared.name] = np.ascontiguousarray(mask[:, -1:])
            continue
        if declared.kind == "image_mask":
            mask = image_mask(seq_len, slots, declared.skip_last)
            feeds.prefill[declared.name], feeds.seq_axes[declared.name] = mask, 1
            feeds.decode[declared.name] = np.zeros((1, 1), dtype=np.float32)
            continue
        shape = (declared.layers, 1, seq_len, spec.hidden_size)
        dense = np.zeros(shape, dtype=np.float32)
        for (start, count), item in zip(slots, media):
            rows = item.extras.get(declared.name)
            if rows is None or rows.shape != (declared.layers, count, spec.hidden_size):
                got = None if rows is None else rows.shape
                raise ValueError(f"the connector gave {declared.name} of shape {got} for an image of {count} tokens; "
                                 f"the manifest declares ({declared.layers}, tokens, {spec.hidden_size}) — "
                                 "re-export the model with this vlmforge version")
            dense[:, 0, start : start + count] = rows
        feeds.prefill[declared.name] = dense
        feeds.decode[declared.name] = np.zeros((declared.layers, 1, 1, spec.hidden_size), dtype=np.float32)
    return feeds
