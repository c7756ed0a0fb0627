"""CogVLM's decoder: a Llama (v1: Vicuna, MHA; v2: Llama-3, GQA) whose every layer holds two
experts — language and vision weights for QKV, the attention output and the MLP — written from the
architecture, one step with a KV cache. Parameter names are the checkpoint's under ``model.``:
``layers.N.self_attn.{vision,language}_expert_{query_key_value,dense}``,
``layers.N.mlp.{vision,language}_mlp.{gate,up,down}_proj``, ``layers.N.{input,post_attention}_layernorm``,
``norm``, and ``lm_head``.

Routing, in the graph: ``expert_mask`` (b, s) is 1 where a token takes the vision expert (the image
slots but each one's last, end-of-image token — the original's ``get_expert_mask``). The tokens are
flattened, split by NonZero into the two experts' row lists, each expert runs on its own rows only
(Gather → MatMul on (1, k, d), so a decode step of text tokens reads the language weights alone and
an empty list costs nothing) and ScatterND puts the rows back. Attention itself is shared.

RoPE: NeoX halves, base 10000 (v1) or 500000 (v2, hard-wired upstream); the position ids come from
the runtime (CogVLM's image tokens share one position, runtime/positions/shared_span.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...graphs import additive_causal_mask
from ...grouped_attention import grouped_attention_forward
from ...original_weights import RMSNorm
from .config import CogVLMConfig


class Routes:
    """The flattened token rows of each expert, computed once per step from expert_mask (b, s)."""

    def __init__(self, expert_mask: torch.Tensor):
        flat = expert_mask.reshape(-1) > 0.5
        self.vision = torch.nonzero(flat).reshape(-1)  # (k,)
        self.language = torch.nonzero(~flat).reshape(-1)  # (b·s − k,)

    def apply(self, x: torch.Tensor, vision: nn.Module, language: nn.Module, out_features: int) -> torch.Tensor:
        """x (b, s, in) → (b, s, out): each row through its expert."""
        b, s, d = x.shape
        rows = x.reshape(b * s, d)
        out = x.new_zeros(b * s, out_features)
        for idx, expert in ((self.vision, vision), (self.language, language)):
            picked = expert(rows[idx][None])[0]  # (1, k, in): a MatMul with a 2-D weight, not a Gemm
            out = out.index_put((idx,), picked)
        return out.reshape(b, s, out_features)


def rotary(position_ids, head_dim: int, base: float):
    """(b, s) → cos, sin (b, 1, s, head_dim): ``cat(freqs, freqs)``, freqs = p · base^(-2i/d)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = position_ids.float()[:, :, None] * inv_freq  # (b, s, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class ExpertAttention(nn.Module):
    def __init__(self, c: CogVLMConfig):
        super().__init__()
        self.c = c
        qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        self.vision_expert_query_key_value = nn.Linear(c.hidden_size, qkv, bias=c.version == 2)
        self.vision_expert_dense = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        self.language_expert_query_key_value = nn.Linear(c.hidden_size, qkv, bias=False)
        self.language_expert_dense = nn.Linear(c.hidden_size, c.hidden_size, bias=False)

    def forward(self, x, routes: Routes, mask, cos, sin, past_k, past_v):
        c, (b, s, _) = self.c, x.shape
        qkv = routes.apply(x, self.vision_expert_query_key_value, self.language_expert_query_key_value,
                           self.vision_expert_query_key_value.out_features)
        q, k, v = qkv.split([c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim], -1)
        q = q.reshape(b, s, c.num_heads, c.head_dim).transpose(1, 2)  # (b, heads, s, hd)
        k = k.reshape(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = v.reshape(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = torch.cat([past_k, k], dim=2)  # (b, kv_heads, past + s, hd)
        v = torch.cat([past_v, v], dim=2)
        out, _ = grouped_attention_forward(self, q, k, v, mask, 1.0 / math.sqrt(c.head_dim))  # (b, s, heads, hd)
        out = out.reshape(b, s, c.hidden_size)
        return routes.apply(out, self.vision_expert_dense, self.language_expert_dense, c.hidden_size), k, v


class MLP(nn.Module):
    def __init__(self, c: CogVLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertMLP(nn.Module):
    def __init__(self, c: CogVLMConfig):
        super().__init__()
        self.hidden = c.hidden_size
        self.language_mlp = MLP(c)
        self.vision_mlp = MLP(c)

    def forward(self, x, routes: Routes):
        return routes.apply(x, self.vision_mlp, self.language_mlp, self.hidden)


class Layer(nn.Module):
    def __init__(self, c: CogVLMConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = ExpertAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = ExpertMLP(c)

    def forward(self, x, routes, mask, cos, sin, past_k, past_v):
        a, k, v = self.self_attn(self.input_layernorm(x), routes, mask, cos, sin, past_k, past_v)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x), routes), k, v


class CogDecoder(nn.Module):
    """inputs_embeds (b, s, d), attention_mask (b, past+s), position_ids (b, s), expert_mask (b, s),
    past (b, kv_heads, past, hd) ×2·layers → logits (b, 1, vocab), presents."""

    def __init__(self, c: CogVLMConfig):
        super().__init__()
        self.c = c
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, expert_mask, *past):
        routes = Routes(expert_mask)
        cos, sin = rotary(position_ids, self.c.head_dim, self.c.rope_base)
        mask = additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        x, presents = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, routes, mask, cos, sin, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.lm_head(self.norm(x[:, -1:])), *presents)
