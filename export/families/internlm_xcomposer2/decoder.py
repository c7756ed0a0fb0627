"""InternLM-XComposer2's LLM: InternLM2 whose five projections are Partial LoRA, one step with a
KV cache, written from the architecture (the checkpoint's ``modeling_internlm2.py`` is never run).

Parameter names are the checkpoint's below ``model.``: ``layers.{i}.attention.{wqkv,wo}``,
``layers.{i}.feed_forward.{w1,w2,w3}`` (each with ``Plora_A`` / ``Plora_B``),
``layers.{i}.{attention_norm,ffn_norm}``, ``norm``; ``output`` is the LM head
(``model.tok_embeddings`` is the embedding table, gathered by the runtime).

- Partial LoRA: ``y = W·x + b + m · B·A·x`` with m the image mask — 1 at image tokens, 0 at text
  and at every decode step (the original adds the branch only at ``im_mask`` positions, and
  ``lora_alpha / lora_r`` is 256 / 256, so the branch is unscaled). The mask is a graph input,
  ``image_mask`` (batch, seq) float.
- wqkv is laid out per KV head as [group query heads | key | value] × head_dim (the original
  rearranges ``b q (h gs d)`` with gs = groups + 2); query head h·groups + g reads KV head h.
- RoPE as the original's cached table: cos/sin of position · base^(-2i/d) (position / factor for
  linear scaling), halves rotated ``(-x2, x1)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...graphs import additive_causal_mask
from ...original_weights import RMSNorm
from .config import XComposer2Config

LORA_RANK = 256  # the original builds every PLoRA with lora_r = lora_alpha = 256


class PLoRA(nn.Module):
    """x (b, s, in), image_mask (b, s, 1) → (b, s, out): the linear layer plus the low-rank branch
    where the mask is 1."""

    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int = LORA_RANK):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.Plora_A = nn.Linear(in_features, rank, bias=False)
        self.Plora_B = nn.Linear(rank, out_features, bias=False)

    def forward(self, x, image_mask):
        return nn.functional.linear(x, self.weight, self.bias) + self.Plora_B(self.Plora_A(x)) * image_mask


def rotary(position_ids, c: XComposer2Config):
    """position_ids (b, s) → cos, sin (b, 1, s, head_dim): the original's ``cat(freqs, freqs)`` table row."""
    d = c.head_dim
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, d, 2).float() / d))  # (d/2,)
    t = position_ids.float()
    if c.rope_type == "linear":
        t = t / c.rope_factor
    freqs = t[:, :, None] * inv_freq  # (b, s, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, c: XComposer2Config):
        super().__init__()
        self.c = c
        self.wqkv = PLoRA(c.hidden_size, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim, c.bias)
        self.wo = PLoRA(c.num_heads * c.head_dim, c.hidden_size, c.bias)

    def forward(self, x, m, mask, cos, sin, past_k, past_v):
        c = self.c
        b, s, _ = x.shape
        kv, g, hd = c.num_kv_heads, c.groups, c.head_dim
        qkv = self.wqkv(x, m).reshape(b, s, kv, g + 2, hd)
        q = qkv[:, :, :, :g].reshape(b, s, kv * g, hd).transpose(1, 2)  # (b, heads, s, hd)
        k = qkv[:, :, :, g].transpose(1, 2)  # (b, kv, s, hd)
        v = qkv[:, :, :, g + 1].transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = torch.cat([past_k, k], dim=2)  # (b, kv, past + s, hd)
        v = torch.cat([past_v, v], dim=2)
        # each KV head's query group stacked along the query axis: the cache is read as it is, no repeat
        scores = torch.matmul(q.reshape(b, kv, g * s, hd), k.transpose(2, 3)) / math.sqrt(hd)
        scores = scores.reshape(b, kv * g, s, -1) + mask  # (b, heads, s, past + s)
        weights = scores.softmax(-1).reshape(b, kv, g * s, -1)
        out = torch.matmul(weights, v).reshape(b, kv * g, s, hd).transpose(1, 2).reshape(b, s, -1)
        return self.wo(out, m), k, v


class FeedForward(nn.Module):
    def __init__(self, c: XComposer2Config):
        super().__init__()
        self.w1 = PLoRA(c.hidden_size, c.intermediate_size, False)
        self.w3 = PLoRA(c.hidden_size, c.intermediate_size, False)
        self.w2 = PLoRA(c.intermediate_size, c.hidden_size, False)

    def forward(self, x, m):
        return self.w2(nn.functional.silu(self.w1(x, m)) * self.w3(x, m), m)


class DecoderLayer(nn.Module):
    def __init__(self, c: XComposer2Config):
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.ffn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, m, mask, cos, sin, past_k, past_v):
        a, k, v = self.attention(self.attention_norm(x), m, mask, cos, sin, past_k, past_v)
        x = x + a
        return x + self.feed_forward(self.ffn_norm(x), m), k, v


class Model(nn.Module):
    """The checkpoint's ``model`` minus its embedding table."""

    def __init__(self, c: XComposer2Config):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class XComposer2Decoder(nn.Module):
    """inputs_embeds (b, s, d), attention_mask (b, past+s), position_ids (b, s), image_mask (b, s),
    past (b, kv_heads, past, head_dim) ×2·layers → logits (b, 1, vocab) (last position only), presents."""

    def __init__(self, c: XComposer2Config):
        super().__init__()
        self.c = c
        self.model = Model(c)
        self.output = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, image_mask, *past):
        cos, sin = rotary(position_ids, self.c)
        mask = additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        m = image_mask.to(inputs_embeds.dtype)[:, :, None]  # (b, s, 1)
        x, presents = inputs_embeds, []
        for i, layer in enumerate(self.model.layers):
            x, k, v = layer(x, m, mask, cos, sin, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.output(self.model.norm(x[:, -1:])), *presents)
