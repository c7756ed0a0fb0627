"""The decoder-only LLM graph (inputs_embeds + KV cache → last logits + presents), for any
causal LM transformers builds with ``DynamicCache`` layers (Llama, Qwen2, Mistral, OPT …)."""

from __future__ import annotations

import torch

from .graphs import DecoderWithCache
from .grouped_attention import use_grouped_attention
from .onnx_export import GraphExport


def kv_layout(text_config) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim) as the attention layers allocate them."""
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return text_config.num_hidden_layers, kv_heads, head_dim


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, present


def decoder_graph(language_model: torch.nn.Module, lm_head: torch.nn.Module, text_config,
                  position_rows: int = 1) -> GraphExport:
    """``position_rows`` 3: M-RoPE's (temporal, height, width) position_ids (3, b, s) instead of (b, s)."""
    num_layers, kv_heads, head_dim = kv_layout(text_config)
    use_grouped_attention(language_model.config)  # no repeat_kv copy of the cache in the graph
    # batch 2, seq 3, past 4: torch.export specialises sizes 0 and 1, so examples avoid them
    batch, seq, past = 2, 3, 4
    embeds = torch.randn(batch, seq, text_config.hidden_size)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq).contiguous()
    if position_rows > 1:
        positions = positions.expand(position_rows, batch, seq).contiguous()
    cache = tuple(torch.randn(batch, kv_heads, past, head_dim) for _ in range(2 * num_layers))
    past_names, present_names = cache_names(num_layers)
    dims = {
        "inputs_embeds": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"} if position_rows == 1 else {1: "batch", 2: "sequence"},
        **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
    }
    return GraphExport(
        name="llm",
        module=DecoderWithCache(language_model, lm_head, num_layers).eval(),
        example_inputs=(embeds, mask, positions, cache),
        input_names=["inputs_embeds", "attention_mask", "position_ids", *past_names],
        output_names=["logits", *present_names],
        dims=dims,
    )
