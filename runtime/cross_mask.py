"""The ``cross_mask`` token input (Mllama): which rows of the cross-attention memory each prompt
token sees, built from where the pictures' tokens stand and how many real tiles each picture has.

The memory is the pictures' embeddings in prompt order, each ``num_image_tokens`` rows (every
tile the vision graph pads to, ``tokens_per_tile`` rows each); only the first ``num_tiles`` tiles'
rows are ever seen. Picture k is seen from its token up to the next picture token, or to the end
for the last — a run of directly consecutive picture tokens is seen together until the run after
it (``MllamaProcessor``'s ``get_cross_attention_token_mask``). Tokens before the first picture see
nothing (the graph then masks their cross MLP out). Decoding repeats the prompt's last row, as
transformers' ``generate`` extends its mask. A prompt without pictures has one zero memory row
(``Capabilities.cross_attention_optional``), seen by nobody.
"""

from __future__ import annotations

import numpy as np

from .errors import PromptError


def seen_spans(input_ids: np.ndarray, token_id: int) -> list[tuple[int, int]]:
    """Per picture token, in order: [start, end) of the tokens that see it."""
    at = [int(i) for i in np.flatnonzero(np.asarray(input_ids) == token_id)]
    ends = at[1:] + [len(input_ids)]
    spans = [[a, e] for a, e in zip(at, ends)]
    last_end = len(input_ids)
    for span in reversed(spans):  # consecutive picture tokens: all seen until the run after them ends
        if span[0] == span[1] - 1:
            span[1] = last_end
        last_end = span[1]
    return [(a, e) for a, e in spans]


def cross_mask(input_ids: np.ndarray, token_id: int, media, tokens_per_tile: int) -> np.ndarray:
    """(1, seq, memory) float32 0/1; memory is the rows of all ``media`` (one zero row when none)."""
    spans = seen_spans(input_ids, token_id)
    if len(spans) != len(media):
        raise PromptError(f"the prompt holds {len(spans)} picture token(s) but {len(media)} picture(s) were given; "
                          "put one image placeholder where each picture belongs")
    rows = [m.embeds.shape[0] for m in media]
    mask = np.zeros((1, len(input_ids), max(1, sum(rows))), dtype=np.float32)
    offset = 0
    for (start, end), item, count in zip(spans, media, rows):
        seen = item.layout.num_tiles * tokens_per_tile  # the real tiles' rows, not the padding's
        assert seen <= count, (seen, count)
        mask[0, start:end, offset : offset + seen] = 1.0
        offset += count
    return mask
