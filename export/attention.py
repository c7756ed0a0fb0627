"""Attention patterns other than causal, in the LLM graph: bidirectional spans.

The graph takes ``token_spans`` (b, s) int64 for its new tokens: tokens that share a span id ≥ 0
see each other whatever their order (PaliGemma's prefix: the image and the prompt; Gemma 3: each
image's tokens); -1 is causal. Keys already in the cache are always visible (they come earlier),
so a span must not be split across steps — the runtime keeps each span inside one prefill step
(runtime/attention.py). Decode steps feed -1: generated tokens attend causally.
"""

from __future__ import annotations

import torch

from .graphs import DecoderWithCache


def additive_span_mask(attention_mask: torch.Tensor, token_spans: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """attention_mask (b, past+s) 0/1, token_spans (b, s) → (b, 1, s, past+s) additive mask:
    key j visible to query i if j ≤ i, or both are new tokens of the same span ≥ 0; padding never."""
    total, seq = attention_mask.shape[1], token_spans.shape[1]
    past = total - seq
    query_pos = torch.arange(seq, device=attention_mask.device).unsqueeze(1) + past  # (s, 1)
    key_pos = torch.arange(total, device=attention_mask.device).unsqueeze(0)  # (1, total)
    causal = (key_pos <= query_pos).unsqueeze(0)  # (1, s, total)
    # the spans of all keys: cached ones -1 (never bidirectional), the new ones as given
    key_spans = torch.cat([torch.full_like(attention_mask[:, :past], -1), token_spans], dim=1)  # (b, total)
    same = (token_spans.unsqueeze(2) == key_spans.unsqueeze(1)) & (token_spans.unsqueeze(2) >= 0)  # (b, s, total)
    allowed = (causal | same) & attention_mask.bool().unsqueeze(1)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, torch.zeros((), dtype=dtype), neg).unsqueeze(1)


def windowed(mask: torch.Tensor, window: int) -> torch.Tensor:
    """(b, 1, s, total) additive mask → the same with keys ``window`` or more positions before the
    query hidden too (a sliding-window layer: key j visible to query i only if j > i - window)."""
    seq, total = mask.shape[-2], mask.shape[-1]
    query_pos = torch.arange(seq, device=mask.device).unsqueeze(1) + (total - seq)
    key_pos = torch.arange(total, device=mask.device).unsqueeze(0)
    return torch.where(key_pos > query_pos - window, mask, torch.full((), torch.finfo(mask.dtype).min, dtype=mask.dtype))


class SpanDecoderWithCache(DecoderWithCache):
    """``DecoderWithCache`` with ``token_spans`` (b, s) after position_ids; ``logit_softcap``: Gemma 2's
    cap·tanh(logits/cap) on the head's output (0: none); ``sliding_window``: the text model's layers
    of type "sliding_attention" get the span mask cut to the window (Gemma 3), passed as
    transformers' per-layer-type mask mapping (0: one mask for every layer).

    ``window_cache`` > 0: those layers' present.* keep only their last ``window_cache`` tokens
    (at least window − 1: what the next step can see), so their past is that long at most, and their
    mask is the last (past + s) columns of the full one — the window hides every older key anyway.
    Otherwise every layer keeps all its keys and the mask alone hides what a window must not see."""

    cache_from_config = False  # the window is in the mask; the trim (if any) is ours, in forward

    @property
    def append_ok(self) -> bool:  # a window counts columns: the runtime's capacity gap would shift it
        return not self.sliding_window

    def __init__(self, language_model, lm_head, num_layers: int, logit_softcap: float = 0.0, sliding_window: int = 0,
                 window_cache: int = 0):
        super().__init__(language_model, lm_head, num_layers)
        self.logit_softcap = float(logit_softcap or 0.0)
        self.sliding_window = int(sliding_window or 0)
        types = getattr(language_model.config, "layer_types", None) or []
        self.window_cache = int(window_cache)
        self.bounded_layers = [i for i, t in enumerate(types) if t == "sliding_attention"] if window_cache else []

    def forward(self, inputs_embeds, attention_mask, position_ids, token_spans, *past):
        mask = additive_span_mask(attention_mask, token_spans, inputs_embeds.dtype)
        if self.sliding_window:
            slide = windowed(mask, self.sliding_window)
            if self.bounded_layers:  # (b, 1, s, kept + s): a bounded layer's keys are the last ones
                keys = past[2 * self.bounded_layers[0]].shape[2] + inputs_embeds.shape[1]
                slide = slide[..., slide.shape[-1] - keys:]
            mask = {"full_attention": mask, "sliding_attention": slide}
        logits, *presents = self.step(inputs_embeds, attention_mask, position_ids, past, mask=mask)
        for i in self.bounded_layers:  # (b, kv, min(past + s, window_cache), hd)
            for j in (2 * i, 2 * i + 1):
                presents[j] = presents[j][:, :, -self.window_cache:]
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return (logits, *presents)
