"""CogAgent's decoder: CogVLM v1's visual-expert layers (export/families/cogvlm/decoder.py) with a
cross-attention onto the high-resolution picture in every layer. Per layer, as the original's
``CogAgentDecoderLayer``:

    h = h + self_attn(input_layernorm(h))                  # experts routed by expert_mask
    h = h + cross_attn(post_cross_attention_layernorm(h))   # query (d → c), K/V of the memory
    h = h + mlp(post_attention_layernorm(h))                # experts routed

``cross_attn``: ``num_attention_heads`` heads of c / heads (c = cross_compute_hidden_size); its
``key_value`` projection of the memory is the cross_kv graph, run once per picture — the llm graph
reads ``cross.{i}.key`` / ``.value`` (b, heads, m, c / heads) and ``encoder_attention_mask`` (b, m).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...graphs import additive_causal_mask
from ...original_weights import RMSNorm
from ..cogvlm.decoder import ExpertAttention, ExpertMLP, Routes, rotary
from .config import CogAgentConfig


class CrossAttention(nn.Module):
    def __init__(self, c: CogAgentConfig):
        super().__init__()
        d, inner = c.base.hidden_size, c.cross_compute_hidden_size
        self.heads, self.head_dim = c.base.num_heads, c.cross_head_dim
        self.query = nn.Linear(d, inner, bias=False)
        self.key_value = nn.Linear(c.cross_hidden_size, 2 * inner, bias=False)
        self.dense = nn.Linear(inner, d, bias=False)

    def kv(self, memory):
        """memory (b, m, 1024) → key, value (b, heads, m, head_dim)."""
        b, m, _ = memory.shape
        k, v = self.key_value(memory).chunk(2, dim=-1)
        return (t.reshape(b, m, self.heads, self.head_dim).transpose(1, 2) for t in (k, v))

    def forward(self, x, key, value, memory_mask):
        """x (b, s, d); memory_mask (b, 1, 1, m) additive."""
        b, s, _ = x.shape
        q = self.query(x).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, key.transpose(-1, -2)) / math.sqrt(self.head_dim) + memory_mask
        out = torch.matmul(scores.softmax(-1), value).transpose(1, 2).reshape(b, s, -1)
        return self.dense(out)


class Layer(nn.Module):
    def __init__(self, c: CogAgentConfig):
        super().__init__()
        base = c.base
        self.input_layernorm = RMSNorm(base.hidden_size, base.rms_norm_eps)
        self.self_attn = ExpertAttention(base)
        self.post_cross_attention_layernorm = RMSNorm(base.hidden_size, base.rms_norm_eps)
        self.cross_attn = CrossAttention(c)
        self.post_attention_layernorm = RMSNorm(base.hidden_size, base.rms_norm_eps)
        self.mlp = ExpertMLP(base)

    def forward(self, x, routes, mask, cos, sin, past_k, past_v, cross_k, cross_v, memory_mask):
        a, k, v = self.self_attn(self.input_layernorm(x), routes, mask, cos, sin, past_k, past_v)
        x = x + a
        x = x + self.cross_attn(self.post_cross_attention_layernorm(x), cross_k, cross_v, memory_mask)
        return x + self.mlp(self.post_attention_layernorm(x), routes), k, v


class CogAgentDecoder(nn.Module):
    """inputs_embeds (b, s, d), attention_mask (b, past+s), position_ids (b, s), expert_mask (b, s),
    encoder_attention_mask (b, m), past (b, heads, past, hd) ×2·layers, cross (b, heads, m, c/heads)
    ×2·layers → logits (b, 1, vocab), presents."""

    def __init__(self, c: CogAgentConfig):
        super().__init__()
        self.c = c
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.base.num_layers))
        self.norm = RMSNorm(c.base.hidden_size, c.base.rms_norm_eps)
        self.lm_head = nn.Linear(c.base.hidden_size, c.base.vocab_size, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, expert_mask, encoder_attention_mask, *kv):
        n = len(self.layers)
        past, cross = kv[: 2 * n], kv[2 * n :]
        routes = Routes(expert_mask)
        cos, sin = rotary(position_ids, self.c.base.head_dim, self.c.base.rope_base)
        mask = additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        neg = torch.finfo(inputs_embeds.dtype).min
        memory_mask = ((1.0 - encoder_attention_mask.to(inputs_embeds.dtype)) * neg)[:, None, None, :]
        x, presents = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, routes, mask, cos, sin, past[2 * i], past[2 * i + 1], cross[2 * i], cross[2 * i + 1],
                            memory_mask)
            presents += [k, v]
        return (self.lm_head(self.norm(x[:, -1:])), *presents)


class CrossKV(nn.Module):
    """encoder_hidden_states (b, m, 1024) — the high-resolution tower's output — → cross.{i}.key /
    .value (b, heads, m, c/heads) for every layer: once per picture, bound to every step."""

    def __init__(self, decoder: CogAgentDecoder):
        super().__init__()
        self.layers = decoder.layers

    def forward(self, encoder_hidden_states):
        out = []
        for layer in self.layers:
            out += list(layer.cross_attn.kv(encoder_hidden_states))
        return tuple(out)
