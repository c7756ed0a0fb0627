"""The "append" KV layout: the LLM graph reads the cache and returns only the new keys/values.

The concat layout's graph writes ``present = concat(past, new)``: every step copies the whole
cache into a fresh tensor (at 2,400 tokens of a Qwen2-0.5B-sized model, 60 MB read and written
per token besides the 60 MB attention reads). Here the graph never builds that tensor: each
layer's scores are two MatMuls, one against the cached keys and one against the new keys,
concatenated along the key axis (a (heads, q, past + s) tensor — one row per new token — not
the cache), and the output is ``w[:past]·V_past + w[past:]·V_new``. Outputs ``new.{i}.key`` /
``.value`` (b, kv_heads, s, head_dim); the runtime writes them into its preallocated cache
(runtime/kv_cache.py), so the cache stays where it is and a step reads it once.

Same scores, mask and float32 softmax as grouped attention (export/grouped_attention.py) — the
cached columns the mask hides (the runtime's unused capacity) weigh exactly 0. Used for the text
config of an LLM graph whose layers all run the attention interface; ``decoder_graph`` checks
that on the example inputs and keeps the concat layout otherwise.
"""

from __future__ import annotations

import contextlib

import torch

from .grouped_attention import attention_weights

NAME = "vlmforge_append"

_ACTIVE: list = []  # the AppendCache of the forward being traced (a stack: at most one deep)


class AppendCache:
    """Mixin for transformers' ``DynamicCache``: prefilled with the past, ``update`` keeps the new
    keys/values aside and returns them alone — the attention below reads the past from here."""

    def setup_append(self, num_layers: int) -> None:
        self.new = [None] * num_layers
        self.calls = 0  # layers whose attention ran through append_attention_forward

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.new[layer_idx] = (key_states, value_states)
        return key_states, value_states

    def past(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[layer_idx]
        return layer.keys, layer.values


def append_cache(past: tuple, num_layers: int):
    """A DynamicCache holding ``past`` ((key, value) per layer, flat) whose updates append nothing."""
    from transformers.cache_utils import DynamicCache

    cls = type("AppendDynamicCache", (AppendCache, DynamicCache), {})
    cache = cls()
    for i in range(num_layers):
        DynamicCache.update(cache, past[2 * i], past[2 * i + 1], i)
    cache.setup_append(num_layers)
    return cache


@contextlib.contextmanager
def appending(cache):
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.pop()


def append_attention_forward(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                             softcap: float | None = None, **kwargs):
    """query (B, H, q, D), key / value (B, KV, q, D) — the new tokens' only — with the past from the
    active AppendCache (B, KV, P, D) → (B, q, H, D), weights (B, H, q, P + q): eager's contract."""
    unknown = [k for k in ("position_bias", "sinks") if kwargs.get(k) is not None]
    assert not unknown, f"append attention does not apply {unknown}: export this model with the concat KV layout"
    assert _ACTIVE, "append attention runs only inside export.append_cache.appending(cache)"
    cache = _ACTIVE[-1]
    past_key, past_value = cache.past(module.layer_idx)
    cache.calls += 1
    b, h, q, d = query.shape
    kv, past, s = key.shape[1], past_key.shape[2], key.shape[2]
    g = h // kv  # query head i reads KV head i // g, as repeat_kv lays them out
    grouped = query.reshape(b, kv, g * q, d)
    scores = torch.cat([torch.matmul(grouped, past_key.transpose(2, 3)),
                        torch.matmul(grouped, key.transpose(2, 3))], dim=-1) * scaling  # (B, KV, G·q, P + s)
    scores = scores.reshape(b, h, q, past + s)
    weights = attention_weights(module, scores, attention_mask, softcap, dropout, query.dtype)
    w = weights.reshape(b, kv, g * q, past + s)
    out = torch.matmul(w[..., :past], past_value) + torch.matmul(w[..., past:], value)  # (B, KV, G·q, D)
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), weights


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, append_attention_forward)
    AttentionMaskInterface.register(NAME, eager_mask)
