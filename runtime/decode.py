"""The decode loop's plain verbs: ``prefill``, ``decode_one_token``, ``generate_tokens``.

Nothing here knows the model family; the decoder step and the embedding table come from the
manifest. Position ids come from the scheme the manifest declares (runtime/positions/):
consecutive when none is given (1-D RoPE or learned positions).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .positions import Positions
from .sampling import Sampler
from .stats import StageTimer
from .token_inputs import TokenFeeds


def prefill(decoder, inputs_embeds: np.ndarray, timer: StageTimer, positions: Positions | None = None,
            feeds: TokenFeeds | None = None) -> np.ndarray:
    """inputs_embeds (1, seq, d) → logits (vocab,) for the next token; fills the cache.
    ``feeds``: the manifest's per-token inputs (runtime/token_inputs.py), when it declares any.

    The caller resets the decoder (and sets its cross-attention memory) before."""
    seq = inputs_embeds.shape[1]
    ids = np.arange(seq, dtype=np.int64)[None, :] if positions is None else positions.prefill
    with timer("prefill", decoder):
        return decoder.step(inputs_embeds, ids, feeds.prefill if feeds else None)


def decode_one_token(decoder, embed_table: np.ndarray, token_id: int, timer: StageTimer,
                     positions: Positions | None = None, feeds: TokenFeeds | None = None) -> np.ndarray:
    """Feed one token at the next position → logits (vocab,)."""
    n = decoder.cache.num_tokens
    position = np.array([[n]], dtype=np.int64) if positions is None else positions.decode(n)
    embeds = embed_table[token_id][None, None, :]  # (1, 1, d): one row of the memory-mapped table
    with timer("decode", decoder):
        return decoder.step(embeds, position, feeds.decode if feeds else None)


def generate_tokens(
    decoder,
    embed_table: np.ndarray,
    logits: np.ndarray,
    prompt_ids: np.ndarray,
    sampler: Sampler,
    max_new_tokens: int,
    eos_ids: set[int],
    timer: StageTimer,
    positions: Positions | None = None,
    feeds: TokenFeeds | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` ids, the first chosen from the prefill ``logits``; stops after EOS."""
    n = len(prompt_ids)
    seen = np.empty(n + max_new_tokens, dtype=np.int64)  # prompt + generated, for the penalty: no list → array per step
    seen[:n] = prompt_ids
    for i in range(max_new_tokens):
        if i:
            logits = decode_one_token(decoder, embed_table, int(seen[n - 1]), timer, positions, feeds)
        with timer("sample"):
            token = sampler(logits, seen[:n])
        seen[n] = token
        n += 1
        yield token
        if token in eos_ids:
            return
