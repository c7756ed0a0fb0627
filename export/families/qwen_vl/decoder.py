"""Qwen-VL's LLM (the Qwen-7B decoder), written from the architecture, one step with a KV cache.

Parameter names are the checkpoint's: ``transformer.h.{i}.{ln_1,attn.c_attn,attn.c_proj,ln_2,
mlp.w1,mlp.w2,mlp.c_proj}``, ``transformer.ln_f``, ``lm_head`` (``transformer.wte`` is the
embedding table, gathered by the runtime). The original's two long-context mechanisms are graph
arithmetic here:

- dynamic NTK RoPE: the rotary base is ``base · α^(d/(d-2))`` with α chosen from the *prompt*
  length (the original computes it at the prefill and keeps it while decoding), so α is an input,
  ``ntk_alpha`` (batch,), that the runtime computes as the manifest's token input declares;
- log-n attention scaling: a query at position p ≥ seq_length is scaled by log(p+1)/log(seq_length),
  computed from position_ids.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...graphs import additive_causal_mask
from ...original_weights import RMSNorm
from .config import QwenVLConfig


def rotary(position_ids, ntk_alpha, c: QwenVLConfig):
    """position_ids (b, s), ntk_alpha (b,) → cos, sin (b, s, 1, rotary_dim): the original's table
    ``cat(freqs, freqs)`` with ``freqs = p · 1/(base·α^(d/(d-2)))^(2i/d)``."""
    d = c.rotary_dim
    base = c.rotary_emb_base * ntk_alpha.float() ** (d / (d - 2))  # (b,)
    exponents = torch.arange(0, d, 2, dtype=torch.float32) / d  # (d/2,)
    inv_freq = 1.0 / base[:, None] ** exponents[None, :]  # (b, d/2)
    freqs = position_ids.float()[:, :, None] * inv_freq[:, None, :]  # (b, s, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]
    return emb.cos(), emb.sin()


def apply_rotary(x, cos, sin):
    """x (b, s, heads, hd): the first rotary_dim channels rotated (halves: (-x2, x1))."""
    d = cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    x1, x2 = rot.chunk(2, dim=-1)
    return torch.cat([rot * cos + torch.cat([-x2, x1], dim=-1) * sin, rest], dim=-1)


def logn_scale(position_ids, seq_length: int):
    """(b, s) → (b, s, 1, 1): log(p+1)/log(seq_length) where p + 1 > seq_length, else 1."""
    n = position_ids.float() + 1.0
    scale = torch.where(n > seq_length, torch.log(n) / math.log(seq_length), torch.ones_like(n))
    return scale[:, :, None, None]


class Attention(nn.Module):
    def __init__(self, c: QwenVLConfig):
        super().__init__()
        self.c = c
        self.heads, self.hd = c.num_heads, c.kv_channels
        self.c_attn = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.c_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=not c.no_bias)

    def forward(self, x, mask, cos, sin, logn, past_k, past_v):
        b, s, _ = x.shape
        q, k, v = (t.reshape(b, s, self.heads, self.hd) for t in self.c_attn(x).chunk(3, dim=-1))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if logn is not None:
            q = q * logn
        k = torch.cat([past_k, k.transpose(1, 2)], dim=2)  # (b, heads, past + s, hd)
        v = torch.cat([past_v, v.transpose(1, 2)], dim=2)
        scores = torch.matmul(q.transpose(1, 2), k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        out = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, s, -1)
        return self.c_proj(out), k, v


class MLP(nn.Module):
    def __init__(self, c: QwenVLConfig):
        super().__init__()
        inner = c.intermediate_size // 2
        self.w1 = nn.Linear(c.hidden_size, inner, bias=not c.no_bias)
        self.w2 = nn.Linear(c.hidden_size, inner, bias=not c.no_bias)
        self.c_proj = nn.Linear(inner, c.hidden_size, bias=not c.no_bias)

    def forward(self, x):
        return self.c_proj(self.w1(x) * nn.functional.silu(self.w2(x)))


class Block(nn.Module):
    def __init__(self, c: QwenVLConfig):
        super().__init__()
        self.ln_1 = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.attn = Attention(c)
        self.ln_2 = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.mlp = MLP(c)

    def forward(self, x, mask, cos, sin, logn, past_k, past_v):
        a, k, v = self.attn(self.ln_1(x), mask, cos, sin, logn, past_k, past_v)
        x = x + a
        return x + self.mlp(self.ln_2(x)), k, v


class QwenDecoder(nn.Module):
    """inputs_embeds (b, s, d), attention_mask (b, past+s), position_ids (b, s)[, ntk_alpha (b,)],
    past (b, heads, past, hd) ×2·layers → logits (b, 1, vocab), presents."""

    def __init__(self, c: QwenVLConfig):
        super().__init__()
        self.c = c
        self.h = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.ln_f = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        return self.step(inputs_embeds, attention_mask, position_ids, torch.ones(inputs_embeds.shape[0]), past)

    def step(self, inputs_embeds, attention_mask, position_ids, ntk_alpha, past):
        cos, sin = rotary(position_ids, ntk_alpha, self.c)
        logn = logn_scale(position_ids, self.c.seq_length) if self.c.use_logn_attn else None
        mask = additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        x, presents = inputs_embeds, []
        for i, block in enumerate(self.h):
            x, k, v = block(x, mask, cos, sin, logn, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.lm_head(self.ln_f(x[:, -1:])), *presents)


class QwenDecoderNTK(QwenDecoder):
    """With dynamic NTK on: ``ntk_alpha`` (b,) is an input after position_ids."""

    def forward(self, inputs_embeds, attention_mask, position_ids, ntk_alpha, *past):
        return self.step(inputs_embeds, attention_mask, position_ids, ntk_alpha, past)
