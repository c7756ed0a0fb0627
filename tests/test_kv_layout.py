"""The append KV layout (export/append_cache.py, runtime/kv_cache.py): the LLM graph returns only
the new keys/values and the runtime's preallocated cache stays where it is; against the concat
layout's graph of the same checkpoint, step by step."""

from __future__ import annotations

import numpy as np
import pytest

from vlmforge.runtime.kv_cache import CAPACITY_BLOCK
from vlmforge.runtime.manifest import LLMSpec, ManifestError


@pytest.fixture(scope="module")
def exports(tiny_llava, tmp_path_factory):
    from vlmforge.export import export_model

    concat = tmp_path_factory.mktemp("kv_layout") / "concat"
    export_model(tiny_llava[0], concat, kv_layout="concat", check=False)
    return tiny_llava[1], concat


def _pipes(exports):
    from vlmforge.runtime import Pipeline

    return [Pipeline.load(folder, backend="onnxruntime") for folder in exports]


def test_the_export_declares_the_layout_and_its_outputs(exports):
    append, concat = (p.manifest for p in _pipes(exports))
    assert (append.llm.cache_layout, concat.llm.cache_layout) == ("append", "concat")
    assert append.graphs["llm"].output_names[1:3] == ["new.0.key", "new.0.value"]
    assert concat.graphs["llm"].output_names[1:3] == ["present.0.key", "present.0.value"]
    # the new keys' sequence axis is the step's, not past + step
    new = next(t for t in append.graphs["llm"].outputs if t.name == "new.0.key")
    assert new.shape[2] == next(t for t in append.graphs["llm"].inputs if t.name == "inputs_embeds").shape[1]


def test_logits_equal_the_concat_graph_at_every_step_across_blocks(exports):
    """A 50-token prefill in chunks of 20, then 40 decode steps: the cache grows past a block twice."""
    from vlmforge.runtime.decode import prefill
    from vlmforge.runtime.stats import NullTimer

    append, concat = _pipes(exports)
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((1, 50, append.manifest.llm.hidden_size), dtype=np.float32)
    for pipe in (append, concat):
        pipe.decoder.reset()
    got = [prefill(p.decoder, embeds, NullTimer(), chunk=20).copy() for p in (append, concat)]
    np.testing.assert_allclose(got[0], got[1], atol=2e-5, rtol=1e-5)
    cache = append.decoder.cache
    for i in range(40):
        x = rng.standard_normal((1, 1, embeds.shape[2]), dtype=np.float32)
        position = np.array([[50 + i]], dtype=np.int64)
        arrays_before = cache.arrays
        a, c = (p.decoder.step(x, position).copy() for p in (append, concat))
        np.testing.assert_allclose(a, c, atol=2e-5, rtol=1e-5)
        grew = cache.num_tokens - 1 == cache.capacity - CAPACITY_BLOCK  # this step opened a new block
        assert (cache.arrays is arrays_before) != grew  # within a block the cache stays where it is
    assert (cache.num_tokens, cache.capacity) == (90, 128)
    np.testing.assert_allclose(np.concatenate([v.numpy() for v in concat.decoder.cache.values]),
                               np.concatenate(cache.views()), atol=1e-6)  # float32 rounding of two graphs
    assert append.decoder.cache.nbytes == concat.decoder.cache.nbytes == append.manifest.llm.cache_bytes(90)


def test_greedy_tokens_and_interleaved_streams_equal_the_concat_export(exports):
    """Two streams interleaved on one pipeline (runtime/turns.py swaps each one's cache in)."""
    append, concat = _pipes(exports)
    prompts = ["USER: <image>\nWhat is it? ASSISTANT:", "USER: <image>\nAnd the colours of it all? ASSISTANT:"]
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40 + 10 * i, 60, 3), dtype=np.uint8) for i in range(2)]
    ref = [concat.generate(p, images=[im], max_new_tokens=70, ignore_eos=True).token_ids for p, im in zip(prompts, images)]
    streams = [append.stream(p, images=[im], max_new_tokens=70, ignore_eos=True) for p, im in zip(prompts, images)]
    live = [iter(s) for s in streams]
    while live:  # one piece of each in turn: the two caches swap in and out of the decoder
        for it in list(live):
            if next(it, None) is None:
                live.remove(it)
    assert [s.result.token_ids for s in streams] == ref and all(len(t) == 70 for t in ref)


def test_the_manifest_refuses_append_with_a_sliding_window():
    spec = dict(num_layers=2, num_kv_heads=1, head_dim=8, hidden_size=16, vocab_size=10, max_context=64)
    with pytest.raises(ManifestError, match="sliding window"):
        LLMSpec(**spec, cache_layout="append", attention={"window": 8, "window_layers": [0], "window_cache": 8})
    with pytest.raises(ManifestError, match="cache_layout 'ring'"):
        LLMSpec(**spec, cache_layout="ring")


def test_a_layer_outside_the_attention_interface_keeps_the_concat_layout(tiny_llava):
    """choose_cache_layout runs both layouts on the example inputs: a layer that bypasses our attention
    (here: every call of it undone) must not get an append graph whose attention skips the cache."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlmforge.export import append_cache
    from vlmforge.export.decoder import decoder_graph

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava[0], attn_implementation="eager", dtype=torch.float32)
    lm = model.model.language_model
    assert decoder_graph(lm, model.lm_head, model.config.text_config).cache_layout == "append"
    real = append_cache.append_attention_forward

    def bypass(module, query, key, value, *args, **kwargs):  # attends to the new tokens only
        cache = append_cache._ACTIVE[-1]
        cache.calls -= 1
        out = real(module, query, key, value, *args, **kwargs)
        return out

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava[0], attn_implementation="eager", dtype=torch.float32)
    try:
        append_cache.append_attention_forward = bypass
        g = decoder_graph(model.model.language_model, model.lm_head, model.config.text_config)
    finally:
        append_cache.append_attention_forward = real
    assert g.cache_layout == "concat" and g.output_names[1] == "present.0.key"
