"""Graphs for decoders that attend to a memory through cross-attention: encoder-decoder LMs
(Flan-T5 under BLIP-2 / InstructBLIP) and BLIP's text decoder over image embeddings.

encoder:  inputs_embeds (b, s, d), attention_mask (b, s) → encoder_hidden_states (b, s, d)
cross_kv: encoder_hidden_states (b, m, d_mem) → cross.{i}.key / .value (b, heads, m, head_dim),
          computed once per prompt instead of at every decode step
llm:      inputs_embeds, attention_mask, encoder_attention_mask (b, m), past self KV, cross KV
          → logits (b, 1, vocab), present self KV
"""

from __future__ import annotations

import torch
from torch import nn

from .graphs import additive_causal_mask


def additive_padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, m) 0/1 → (b, 1, 1, m) additive: attend everywhere the mask is 1."""
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype)
    return torch.where(mask.bool(), torch.zeros((), dtype=dtype), neg)[:, None, None, :]


class T5Encoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs_embeds, attention_mask):
        mask = additive_padding_mask(attention_mask, inputs_embeds.dtype)
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=mask, return_dict=True).last_hidden_state


class CrossKV(nn.Module):
    """Every decoder layer's cross-attention keys and values of the memory, in layer order."""

    def __init__(self, projections: list[tuple[nn.Module, nn.Module]], heads: int, head_dim: int):
        super().__init__()
        self.keys = nn.ModuleList(k for k, _ in projections)
        self.values = nn.ModuleList(v for _, v in projections)
        self.heads, self.head_dim = heads, head_dim

    def forward(self, encoder_hidden_states):
        b, m, _ = encoder_hidden_states.shape
        out = []
        for k, v in zip(self.keys, self.values):
            out.append(k(encoder_hidden_states).view(b, m, self.heads, self.head_dim).transpose(1, 2))
            out.append(v(encoder_hidden_states).view(b, m, self.heads, self.head_dim).transpose(1, 2))
        return tuple(out)


class T5DecoderWithCache(nn.Module):
    """T5's decoder stack + lm_head with self-attention KV cache and precomputed cross KV."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Module, num_layers: int, scale_output: float | None):
        super().__init__()
        self.decoder, self.lm_head = decoder, lm_head
        self.num_layers = num_layers
        self.scale_output = scale_output  # tied T5 checkpoints scale by d_model**-0.5 before lm_head

    def forward(self, inputs_embeds, attention_mask, encoder_attention_mask, *kv):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        n = self.num_layers
        past, cross = kv[: 2 * n], kv[2 * n :]
        config = self.decoder.config
        self_cache, cross_cache = DynamicCache(config=config), DynamicCache(config=config)
        for i in range(n):
            self_cache.update(past[2 * i], past[2 * i + 1], i)
            cross_cache.update(cross[2 * i], cross[2 * i + 1], i)
        cache = EncoderDecoderCache(self_cache, cross_cache)
        for i in range(n):
            cache.is_updated[i] = True  # cross K/V are given: never recompute them from the memory
        b, m = encoder_attention_mask.shape
        # only the memory's shape is read (masks, do_cross_attention): its values are never used
        memory = torch.zeros(b, m, inputs_embeds.shape[-1], dtype=inputs_embeds.dtype)
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype),
            encoder_hidden_states=memory,
            encoder_attention_mask=additive_padding_mask(encoder_attention_mask, inputs_embeds.dtype),
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        hidden = out.last_hidden_state[:, -1:, :]
        if self.scale_output:
            hidden = hidden * self.scale_output
        presents = []
        for layer in self_cache.layers[:n]:
            presents += [layer.keys, layer.values]
        return (self.lm_head(hidden), *presents)
