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

from .decoder import cache_names
from .graphs import additive_causal_mask
from .onnx_export import GraphExport


def cross_names(num_layers: int) -> list[str]:
    return [f"cross.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def cross_kv_graph(projections, heads: int, head_dim: int, memory_width: int) -> GraphExport:
    """projections: per decoder layer, the (key, value) Linear layers of its cross-attention."""
    return GraphExport(
        name="cross_kv",
        module=CrossKV(projections, heads, head_dim).eval(),
        example_inputs=(torch.randn(2, 5, memory_width),),
        input_names=["encoder_hidden_states"],
        output_names=cross_names(len(projections)),
        dims={"encoder_hidden_states": {0: "batch", 1: "memory_sequence"}},
    )


def cross_decoder_graph(module, layers: int, heads: int, head_dim: int, hidden: int, with_positions: bool) -> GraphExport:
    """The llm graph of a decoder with self KV cache + cross K/V inputs (see the module docstring)."""
    batch, seq, past, memory = 2, 3, 4, 5
    past_names, present_names = cache_names(layers)
    kv = tuple(torch.randn(batch, heads, past, head_dim) for _ in range(2 * layers))
    kv += tuple(torch.randn(batch, heads, memory, head_dim) for _ in range(2 * layers))
    head = [torch.randn(batch, seq, hidden), torch.ones(batch, past + seq, dtype=torch.int64)]
    names = ["inputs_embeds", "attention_mask"]
    if with_positions:
        head.append(torch.arange(past, past + seq).expand(batch, seq).contiguous())
        names.append("position_ids")
    return GraphExport(
        name="llm",
        module=module.eval(),
        example_inputs=(*head, torch.ones(batch, memory, dtype=torch.int64), kv),
        input_names=[*names, "encoder_attention_mask", *past_names, *cross_names(layers)],
        output_names=["logits", *present_names],
        dims={
            "inputs_embeds": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "encoder_attention_mask": {0: "batch", 1: "memory_sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: "memory_sequence"} for n in cross_names(layers)},
        },
    )


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


def cross_attention_cache(past, cross, num_layers: int, config):
    """An EncoderDecoderCache holding the given self K/V and the precomputed cross K/V (never recomputed)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    self_cache, cross_cache = DynamicCache(config=config), DynamicCache(config=config)
    for i in range(num_layers):
        self_cache.update(past[2 * i], past[2 * i + 1], i)
        cross_cache.update(cross[2 * i], cross[2 * i + 1], i)
    cache = EncoderDecoderCache(self_cache, cross_cache)
    for i in range(num_layers):
        cache.is_updated[i] = True
    return cache, self_cache


def presents(self_cache, num_layers: int) -> list:
    out = []
    for layer in self_cache.layers[:num_layers]:
        out += [layer.keys, layer.values]
    return out


class BlipTextDecoderWithCache(nn.Module):
    """BLIP's BERT-style text decoder (absolute positions, cross-attention to the image) + its LM head."""

    def __init__(self, text_decoder: nn.Module, num_layers: int, memory_width: int):
        super().__init__()
        self.bert, self.cls = text_decoder.bert, text_decoder.cls
        self.num_layers, self.memory_width = num_layers, memory_width

    def forward(self, inputs_embeds, attention_mask, position_ids, encoder_attention_mask, *kv):
        n = self.num_layers
        cache, self_cache = cross_attention_cache(kv[: 2 * n], kv[2 * n :], n, self.bert.config)
        b, m = encoder_attention_mask.shape
        memory = torch.zeros(b, m, self.memory_width, dtype=inputs_embeds.dtype)  # shape only, see T5 below
        out = self.bert(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype),
            encoder_hidden_states=memory,
            encoder_attention_mask=additive_padding_mask(encoder_attention_mask, inputs_embeds.dtype),
            cache=cache,
            use_cache=True,
            is_decoder=True,
            return_dict=True,
        )
        return (self.cls(out.last_hidden_state[:, -1:, :]), *presents(self_cache, n))


class T5DecoderWithCache(nn.Module):
    """T5's decoder stack + lm_head with self-attention KV cache and precomputed cross KV."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Module, num_layers: int, scale_output: float | None):
        super().__init__()
        self.decoder, self.lm_head = decoder, lm_head
        self.num_layers = num_layers
        self.scale_output = scale_output  # tied T5 checkpoints scale by d_model**-0.5 before lm_head

    def forward(self, inputs_embeds, attention_mask, encoder_attention_mask, *kv):
        n = self.num_layers
        cache, self_cache = cross_attention_cache(kv[: 2 * n], kv[2 * n :], n, self.decoder.config)
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
        return (self.lm_head(hidden), *presents(self_cache, n))
