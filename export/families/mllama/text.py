"""Mllama's Llama with interleaved cross-attention layers: the cross_kv and llm graphs.

cross_kv: encoder_hidden_states (b, m, hidden) — the projected tiles of the prompt's pictures,
          in prompt order — → cross.{j}.key / .value (b, kv_heads, m, head_dim) for the j-th cross
          layer (keys through its k_norm), computed once per prompt
llm:      inputs_embeds (b, s, d), attention_mask (b, past+s), position_ids (b, s),
          cross_attention_mask (b, s, m) float 0/1 — which memory rows each token sees —,
          encoder_attention_mask (b, m), past_key_values.{i} of the self-attention layers only,
          cross.{j} → logits (b, 1, vocab), present.{i}

The text model is transformers' own, run with a cache holding the given self K/V and, at the
cross layers' indexes, the cross K/V (never recomputed); the cross mask becomes transformers'
additive mask and full-text-row mask by its own ``_prepare_cross_attention_mask``. A token that
sees no memory row (text before the first image) gets uniform attention and its cross MLP masked
out, as in transformers; a prompt without pictures runs on one zero memory row, whose zero values
make every cross layer add exactly nothing — what transformers' skipping those layers gives.
"""

from __future__ import annotations

import torch
from torch import nn

from ...decoder import EXAMPLE_BATCH, EXAMPLE_PAST, EXAMPLE_SEQ, cache_names
from ...graphs import additive_causal_mask
from ...onnx_export import GraphExport
from ...seq2seq import cross_names


def text_layout(text) -> tuple[list[int], int, int]:
    """(cross-attention layer indexes, kv heads, head dim)."""
    return sorted(int(i) for i in text.cross_attention_layers), text.num_key_value_heads, \
        text.hidden_size // text.num_attention_heads


class MllamaCrossKV(nn.Module):
    """Each cross layer's keys (k_proj → k_norm) and values (v_proj) of the memory, in layer order."""

    def __init__(self, layers: list[nn.Module], kv_heads: int, head_dim: int):
        super().__init__()
        self.attn = nn.ModuleList(layer.cross_attn for layer in layers)
        self.kv_heads, self.head_dim = kv_heads, head_dim

    def forward(self, encoder_hidden_states):
        b, m, _ = encoder_hidden_states.shape
        out = []
        for attn in self.attn:
            k = attn.k_proj(encoder_hidden_states).view(b, m, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(encoder_hidden_states).view(b, m, self.kv_heads, self.head_dim).transpose(1, 2)
            out += [attn.k_norm(k), v]
        return tuple(out)


class MllamaTextWithCache(nn.Module):
    def __init__(self, language_model: nn.Module, lm_head: nn.Module, cross_layers: list[int]):
        super().__init__()
        self.language_model, self.lm_head = language_model, lm_head
        self.num_layers = len(language_model.layers)
        self.cross_layers = set(cross_layers)
        self.num_self = self.num_layers - len(self.cross_layers)

    def forward(self, inputs_embeds, attention_mask, position_ids, cross_attention_mask, encoder_attention_mask, *kv):
        from transformers.cache_utils import DynamicCache
        from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

        past, cross = kv[: 2 * self.num_self], kv[2 * self.num_self :]
        cache, self_idx = DynamicCache(), []
        for idx in range(self.num_layers):  # one cache in layer order, as transformers keeps it
            source, j = (cross, idx - len(self_idx)) if idx in self.cross_layers else (past, len(self_idx))
            if idx not in self.cross_layers:
                self_idx.append(idx)
            cache.update(source[2 * j], source[2 * j + 1], idx)
        seen = cross_attention_mask * encoder_attention_mask[:, None, :].to(cross_attention_mask.dtype)
        # (b, s, m) as transformers' (b, s, images, tiles) with one vision token per "tile"
        cross_mask, full_row = _prepare_cross_attention_mask(seen[..., None], 1, inputs_embeds.dtype)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype),
            position_ids=position_ids,
            cross_attention_mask=cross_mask,
            full_text_row_masked_out_mask=full_row,
            cache=cache,
            use_cache=True,
        )
        presents = []
        for idx in self_idx:
            presents += [cache.layers[idx].keys, cache.layers[idx].values]
        return (self.lm_head(out.last_hidden_state[:, -1:, :]), *presents)


def cross_kv_graph(model) -> GraphExport:
    text = model.config.text_config
    cross, kv_heads, head_dim = text_layout(text)
    layers = [model.model.language_model.layers[i] for i in cross]
    return GraphExport(
        name="cross_kv",
        module=MllamaCrossKV(layers, kv_heads, head_dim).eval(),
        example_inputs=(torch.randn(2, 5, text.hidden_size),),
        input_names=["encoder_hidden_states"],
        output_names=cross_names(len(cross)),
        dims={"encoder_hidden_states": {0: "batch", 1: "memory_sequence"}},
    )


def llm_graph(model) -> GraphExport:
    text = model.config.text_config
    cross, kv_heads, head_dim = text_layout(text)
    num_self = text.num_hidden_layers - len(cross)
    b, s, past, m = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST, 5
    seen = (torch.rand(b, s, m) > 0.5).float()
    seen[:, 0] = 0  # a token before any picture
    head = (torch.randn(b, s, text.hidden_size), torch.ones(b, past + s, dtype=torch.int64),
            torch.arange(past, past + s).expand(b, s).contiguous(), seen, torch.ones(b, m, dtype=torch.int64))
    kv = tuple(torch.randn(b, kv_heads, past, head_dim) for _ in range(2 * num_self))
    kv += tuple(torch.randn(b, kv_heads, m, head_dim) for _ in range(2 * len(cross)))
    past_names, present_names = cache_names(num_self)
    module = MllamaTextWithCache(model.model.language_model, model.lm_head, cross)
    return GraphExport(
        name="llm",
        module=module.eval(),
        example_inputs=(*head, kv),
        input_names=["inputs_embeds", "attention_mask", "position_ids", "cross_attention_mask",
                     "encoder_attention_mask", *past_names, *cross_names(len(cross))],
        output_names=["logits", *present_names],
        dims={
            "inputs_embeds": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "cross_attention_mask": {0: "batch", 1: "sequence", 2: "memory_sequence"},
            "encoder_attention_mask": {0: "batch", 1: "memory_sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: "memory_sequence"} for n in cross_names(len(cross))},
        },
    )
