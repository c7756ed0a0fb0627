"""The attention pattern the manifest declares (``llm.attention``), as the LLM graph's span input.

Span ids per prompt token: tokens sharing an id ≥ 0 attend to each other bidirectionally, -1 is
causal (export/attention.py builds the mask from them). prefix: the whole prompt is span 0
(PaliGemma's prefix-LM — transformers' ``token_type_ids == 0``); image: each image's slots are
their own span (Gemma 3). Generated tokens are always -1.

A span must sit inside one prefill step (keys of earlier steps are only visible causally), so
``chunk_bounds`` moves a prefill chunk's end back to the start of the span it would cut — or past
its end when the span alone is longer than a chunk.
"""

from __future__ import annotations

import numpy as np

from .manifest import AttentionSpec


def plan_spans(spec: AttentionSpec, seq_len: int, image_slots: list[tuple[int, int]]) -> np.ndarray | None:
    """(1, seq_len) int64 span ids for the prompt, or None for causal attention."""
    if spec.pattern == "causal":
        return None
    spans = np.full((1, seq_len), -1, dtype=np.int64)
    if spec.pattern == "prefix":
        spans[:] = 0
    else:  # image
        for i, (start, count) in enumerate(image_slots):
            spans[0, start : start + count] = i
    return spans


def decode_spans() -> np.ndarray:
    """(1, 1): a generated token attends causally."""
    return np.full((1, 1), -1, dtype=np.int64)


def chunk_bounds(seq_len: int, chunk: int, spans: np.ndarray | None) -> list[int]:
    """The ends of the prefill steps (the last is ``seq_len``); no step boundary inside a span."""
    ends, start = [], 0
    while start < seq_len:
        end = min(seq_len, start + chunk)
        if spans is not None and end < seq_len:
            row = spans[0]
            cut = end
            while cut > start and row[cut] >= 0 and row[cut] == row[cut - 1]:
                cut -= 1
            if cut == start:  # the span is longer than a chunk: take it whole
                cut = end
                while cut < seq_len and row[cut] >= 0 and row[cut] == row[cut - 1]:
                    cut += 1
            end = cut
        ends.append(end)
        start = end
    return ends
