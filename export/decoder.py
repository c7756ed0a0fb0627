"""The decoder-only LLM graph (inputs_embeds + KV cache → last logits + presents), for any
causal LM transformers builds with ``DynamicCache`` layers (Llama, Qwen2, Mistral, OPT …)."""

from __future__ import annotations

import torch

from ..runtime.kv_cache import cache_names  # noqa: F401 — (past, outputs) names of a layout; families import it here
from ..runtime.manifest import LLMSpec
from .graphs import DecoderWithCache
from .grouped_attention import NAME, use_grouped_attention
from .onnx_export import GraphExport


def kv_layout(text_config) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim) as the attention layers allocate them."""
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return text_config.num_hidden_layers, kv_heads, head_dim


def text_llm_spec(text_config, vocab_size: int, max_context: int | None = None, default_context: int = 4096,
             **fields) -> LLMSpec:
    """The manifest's LLM section for a transformers text config: its KV layout and width, the
    context (``max_position_embeddings``, else ``default_context``) and any further ``fields``."""
    num_layers, kv_heads, head_dim = kv_layout(text_config)
    if max_context is None:
        max_context = int(getattr(text_config, "max_position_embeddings", None) or default_context)
    return LLMSpec(num_layers=num_layers, num_kv_heads=kv_heads, head_dim=head_dim,
                   hidden_size=text_config.hidden_size, vocab_size=int(vocab_size), max_context=max_context,
                   **fields)


# batch 2, seq 3, past 4: torch.export specialises sizes 0 and 1, so examples avoid them
EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST = 2, 3, 4


# bounded sliding-window layers (export/attention.py): their past is its own dim, shorter than the
# others' — examples 6 and 4, distinct from every other example size so torch.export keeps them apart
EXAMPLE_FULL_PAST, EXAMPLE_WINDOW_PAST = 6, 4


def decoder_graph(language_model: torch.nn.Module, lm_head: torch.nn.Module, text_config,
                  position_rows: int = 1, extra_inputs=(), module=None, window_layers=()) -> GraphExport:
    """``position_rows`` 3: M-RoPE's (temporal, height, width) position_ids (3, b, s) instead of (b, s).

    ``extra_inputs``: (name, example, {axis: dim name}) of per-token inputs after position_ids, built
    for EXAMPLE_BATCH × EXAMPLE_SEQ tokens, which ``module`` (a ``DecoderWithCache`` taking them
    before the cache) reads. ``window_layers``: layers whose cache is bounded to a window — their
    past axis is ``window_past_sequence`` (at most window − 1), the others' ``past_sequence``."""
    num_layers, kv_heads, head_dim = kv_layout(text_config)
    use_grouped_attention(language_model.config)  # no repeat_kv copy of the cache in the graph
    batch, seq, past = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_FULL_PAST if window_layers else EXAMPLE_PAST
    embeds = torch.randn(batch, seq, text_config.hidden_size)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq).contiguous()
    if position_rows > 1:
        positions = positions.expand(position_rows, batch, seq).contiguous()
    windowed = set(window_layers)
    layer_past = [EXAMPLE_WINDOW_PAST if i in windowed else past for i in range(num_layers)]
    cache = tuple(torch.randn(batch, kv_heads, n, head_dim) for n in layer_past for _ in ("key", "value"))
    past_names = cache_names(num_layers)[0]
    dims = {
        "inputs_embeds": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"} if position_rows == 1 else {1: "batch", 2: "sequence"},
        **{name: axes for name, _, axes in extra_inputs},
        **{f"past_key_values.{i}.{kind}": {0: "batch", 2: "window_past_sequence" if i in windowed else "past_sequence"}
           for i in range(num_layers) for kind in ("key", "value")},
    }
    module = (module or DecoderWithCache(language_model, lm_head, num_layers)).eval()
    example = (embeds, mask, positions, *(x for _, x, _ in extra_inputs), cache)
    layout = choose_cache_layout(module, language_model.config, example)
    return GraphExport(
        name="llm",
        module=module,
        example_inputs=example,
        input_names=["inputs_embeds", "attention_mask", "position_ids", *(n for n, _, _ in extra_inputs), *past_names],
        output_names=["logits", *cache_names(num_layers, layout)[1]],
        dims=dims,
        cache_layout=layout,
    )


def choose_cache_layout(module, config, example: tuple) -> str:
    """"append" (export/append_cache.py) where the module allows it and, on the example inputs, every
    layer ran the append attention and the logits and caches equal the concat layout's; else "concat"."""
    from . import append_cache

    if not module.append_ok or getattr(config, "_attn_implementation", None) not in ("eager", NAME):
        return "concat"
    *head, past = example
    with torch.no_grad():
        module.cache_layout = "concat"
        logits, *presents = module(*head, *past)
        append_cache.register()
        config._attn_implementation = append_cache.NAME
        module.cache_layout = "append"
        got, *new = module(*head, *past)
    # float tolerance for both: the layouts sum the softmax in another order, and on a 24-layer
    # decoder the last layers' keys differ by ~2e-6 (a bypassed layer or a rewritten cache is O(1) off)
    close = lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=1e-4)  # noqa: E731
    same = module.append_calls == module.num_layers and close(got, logits) and all(
        close(torch.cat([p, n], dim=2), c) for p, n, c in zip(past, new, presents))
    if not same:  # a layer outside the attention interface, or one that rewrites its keys after the update
        config._attn_implementation, module.cache_layout = NAME, "concat"
        return "concat"
    return "append"


def as_concat(g: GraphExport) -> None:
    """Turn an append-layout llm graph back to the concat layout (export --kv-layout concat)."""
    g.module.cache_layout, g.cache_layout = "concat", "concat"
    g.module.language_model.config._attn_implementation = NAME
    g.output_names = ["logits", *cache_names(g.module.num_layers)[1]]


def embedding_table(model) -> torch.Tensor:
    """(vocab, hidden): what the model's token lookup gives — Gemma's embedding multiplies by √hidden
    (``embed_scale``, in the weights' dtype), so its table is the scaled one; image features merged
    into the prompt are not scaled."""
    emb = model.get_input_embeddings()
    weight = emb.weight.detach()
    scale = getattr(emb, "embed_scale", None)
    return weight * scale.to(weight.dtype) if scale is not None else weight
