"""Grouped-query attention for export, without ``repeat_kv``.

transformers' eager attention expands the KV heads to the query heads (``repeat_kv``) before
the two MatMuls; in the ONNX graph that is an Expand that copies every layer's whole cache on
every decode step (Qwen2-0.5B: 2 → 14 heads, ~7× the cache bytes written and read per token).
Here each KV head's group of query heads is stacked along the query axis instead, so the
MatMuls read the cache as it is: (B, KV, G·q, D) × (B, KV, D, S). Same arithmetic, same
mask, same softmax in float32 — only the copy is gone. Registered with transformers'
attention and mask interfaces under ``NAME`` and switched on for the text config of the LLM
graph when it would otherwise use eager attention.
"""

from __future__ import annotations

import torch

NAME = "vlmforge_grouped"


def grouped_attention_forward(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                              softcap: float | None = None, **kwargs):
    """query (B, H, q, D), key / value (B, KV, S, D) → (B, q, H, D), weights (B, H, q, S) — eager's contract.
    ``softcap``: Gemma 2's cap·tanh(scores/cap) before the mask, as its eager attention does."""
    unknown = [k for k in ("position_bias", "sinks") if kwargs.get(k) is not None]
    assert not unknown, f"grouped attention does not apply {unknown}: export this model with eager attention"
    b, h, q, d = query.shape
    kv, s = key.shape[1], key.shape[2]
    g = h // kv  # query head i reads KV head i // g, as repeat_kv lays them out
    scores = torch.matmul(query.reshape(b, kv, g * q, d), key.transpose(2, 3)) * scaling  # (B, KV, G·q, S)
    scores = scores.reshape(b, h, q, s)
    weights = attention_weights(module, scores, attention_mask, softcap, dropout, query.dtype)
    out = torch.matmul(weights.reshape(b, kv, g * q, s), value)  # (B, KV, G·q, D)
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), weights


def attention_weights(module, scores, attention_mask, softcap, dropout: float, dtype):
    """(B, H, q, S) scores → softmax weights as eager attention takes them: Gemma 2's softcap before
    the additive mask, softmax in float32, dropout (a no-op in eval)."""
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
    return torch.nn.functional.dropout(weights, p=dropout, training=module.training)


def use_grouped_attention(config) -> None:
    """Point ``config`` (an LLM's text config) at grouped attention if it runs eager attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, grouped_attention_forward)
    AttentionMaskInterface.register(NAME, eager_mask)  # the same additive float mask eager builds
    if getattr(config, "_attn_implementation", None) == "eager":
        config._attn_implementation = NAME
