"""The decode loop's plain verbs on one decoder: ``prefill`` and ``decode_one_token`` (which token
comes next and when to stop is the request's ``Sequence``, runtime/serving/sequence.py).

Nothing here knows the model family; the decoder step and the embedding table come from the
manifest. Position ids come from the scheme the manifest declares (runtime/positions/):
consecutive when none is given (1-D RoPE or learned positions).
"""

from __future__ import annotations

import numpy as np

from .positions import Positions
from .stats import StageTimer
from .token_inputs import TokenFeeds


PREFILL_CHUNK = 512  # tokens per prefill step: attention scores stay (heads, 512, past + 512), not (heads, seq, seq)


def prefill(decoder, inputs_embeds: np.ndarray, timer: StageTimer, positions: Positions | None = None,
            feeds: TokenFeeds | None = None, chunk: int | None = PREFILL_CHUNK) -> np.ndarray:
    """inputs_embeds (1, seq, d) → logits (vocab,) for the next token; fills the cache.
    ``feeds``: the manifest's per-token inputs (runtime/token_inputs.py), when it declares any.

    Long prompts go in ``chunk`` tokens per step (each attends to the cache so far), so prefill's
    workspace stops growing with the square of the prompt; decoders that take the whole prompt in
    one step (TensorRT's prefill profile) get it whole. A step never ends inside a bidirectional
    attention span (runtime/attention.py). The caller resets the decoder (and sets its
    cross-attention memory) before."""
    seq = inputs_embeds.shape[1]
    ids = np.arange(seq, dtype=np.int64)[None, :] if positions is None else positions.prefill
    step = chunk if chunk and getattr(decoder, "chunked_prefill", False) else seq
    ends = feeds.chunk_bounds(seq, step) if feeds else list(range(step, seq, step)) + [seq]
    with timer("prefill", decoder):
        for start, stop in zip([0, *ends[:-1]], ends):
            extra = feeds.prefill_part(start, stop) if feeds else None
            logits = decoder.step(inputs_embeds[:, start:stop], ids[..., start:stop], extra)
    return logits


def decode_one_token(decoder, embed_table: np.ndarray, token_id: int, timer: StageTimer,
                     positions: Positions | None = None, feeds: TokenFeeds | None = None) -> np.ndarray:
    """Feed one token at the next position → logits (vocab,)."""
    n = decoder.cache.num_tokens
    position = np.array([[n]], dtype=np.int64) if positions is None else positions.decode(n)
    embeds = embed_table[token_id][None, None, :]  # (1, 1, d): one row of the memory-mapped table
    with timer("decode", decoder):
        return decoder.step(embeds, position, feeds.decode if feeds else None)
