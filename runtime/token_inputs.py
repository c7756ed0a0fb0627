"""Per-token inputs of the LLM graph beside inputs_embeds, as the manifest declares them
(``llm.token_inputs``): what a prefill feeds for its prompt and what every decode step feeds for
one generated (text) token. The decode loop passes them through without knowing what they are.

deepstack (Qwen3-VL): (layers, 1, seq, hidden) float32 — each image's connector output of that
name, (layers, tokens, hidden), written at the image's slots; zeros at text tokens, so a decode
step feeds (layers, 1, 1, hidden) zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .manifest import LLMSpec


SEQUENCE_AXIS = 2  # of every prefill array built here: (layers, batch, seq, hidden)


@dataclass
class TokenFeeds:
    prefill: dict[str, np.ndarray] = field(default_factory=dict)
    decode: dict[str, np.ndarray] = field(default_factory=dict)  # the same arrays at every decode step

    def prefill_part(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The prefill arrays for prompt tokens start … stop - 1 (a prefill chunk)."""
        return {name: a[:, :, start:stop] for name, a in self.prefill.items()}


def plan_token_inputs(spec: LLMSpec, seq_len: int, slots: list[tuple[int, int]], media) -> TokenFeeds:
    """``slots``: (first position, count) of each item in ``media`` (prompt order), whose
    ``extras`` hold the connector outputs the declarations name."""
    feeds = TokenFeeds()
    for declared in spec.token_inputs:
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
