"""PaliGemma 1 and 2: prefix-LM attention (images + prompt bidirectional), images before BOS,
positions from 1 — greedy tokens equal transformers' on the processor's own inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens


def export(root, **kw):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_paligemma import make_tiny_paligemma
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_paligemma(root / "hf", **kw)
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model_dir


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def tiny(request, tmp_path_factory):
    pipe, model_dir = export(tmp_path_factory.mktemp(f"paligemma{request.param}"), version=request.param)
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    return pipe, model, AutoProcessor.from_pretrained(model_dir)


def theirs(model, proc, pipe, prompt, images, n=24):
    """transformers' greedy tokens on its processor's ids and token types, with our kernel's pixels."""
    from vlmforge.kernels import tile_and_patchify

    text = "<image>" * len(images) + prompt
    ref = proc(images=images, text=[text], return_tensors="pt")
    pixels = np.stack([tile_and_patchify(im, pipe.manifest.image.preprocess)[0][0] for im in images])
    np.testing.assert_allclose(pixels, ref["pixel_values"].numpy(), atol=1e-5, rtol=0)  # same resize
    with torch.no_grad():
        out = model.generate(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                             token_type_ids=ref["token_type_ids"], pixel_values=torch.as_tensor(pixels),
                             max_new_tokens=n, do_sample=False)
    return out[0, ref["input_ids"].shape[1]:].tolist(), ref["input_ids"].shape[1]


def check(pipe, model, proc, prompt, images, n=24):
    ours = pipe.generate(prompt=prompt, images=images, max_new_tokens=n)
    want, prompt_len = theirs(model, proc, pipe, prompt, images, n)
    assert ours.stats.num_prompt_tokens == prompt_len
    assert_same_tokens(ours.token_ids, want, n, set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


def test_tokens_equal_transformers_with_and_without_a_prefix(tiny, rng):
    pipe, model, proc = tiny
    for (h, w), prompt in zip([(40, 60), (90, 20), (56, 56)], ["caption en", "", "answer en What is this?"]):
        check(pipe, model, proc, prompt, random_images(rng, [(h, w)]))


def test_two_images_and_text_only(tiny, rng):
    pipe, model, proc = tiny
    check(pipe, model, proc, "caption en", random_images(rng, [(30, 50), (50, 30)]))
    # text only: the processor wants images, so the ids are built as it would ([BOS] prompt "\n", all prefix)
    ours = pipe.generate(prompt="answer en hello", max_new_tokens=24)
    ids = torch.as_tensor(pipe.tokenizer.encode("answer en hello\n"))[None]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
                             max_new_tokens=24, do_sample=False)
    assert_same_tokens(ours.token_ids, out[0, ids.shape[1]:].tolist(), 24, set(pipe.manifest.tokenizer.eos_token_ids))


def test_the_prefix_is_bidirectional(tiny, rng):
    """The manifest declares the prefix pattern, and it matters: a causal-only mask gives other logits."""
    from vlmforge.runtime.stats import StageTimer

    pipe, _, _ = tiny
    m = pipe.manifest
    assert m.llm.attention.pattern == "prefix" and m.image.placement == "prefix" and m.llm.positions.offset == 1
    request_prompt = "caption en"
    image = random_images(rng, [(40, 40)])
    from vlmforge.runtime.serving import Request

    prepared = pipe.prepare(Request(prompt=request_prompt, images=image), StageTimer())
    spans = prepared.feeds.prefill["token_spans"]
    assert spans.shape == (1, prepared.num_tokens) and (spans == 0).all()
    feeds = dict(prepared.feeds.prefill)
    ids = prepared.positions.prefill
    session = pipe.decoder.session
    names = [i.name for i in session.get_inputs()]
    empty = np.zeros((1, m.llm.num_kv_heads, 0, m.llm.head_dim), dtype=np.float32)
    base = {"inputs_embeds": prepared.inputs_embeds, "attention_mask": np.ones((1, prepared.num_tokens), np.int64),
            "position_ids": ids, **{n: empty for n in names if n.startswith("past_key_values")}}
    bidirectional = session.run(["logits"], {**base, **feeds})[0]
    causal = session.run(["logits"], {**base, "token_spans": np.full_like(spans, -1)})[0]
    assert np.abs(bidirectional - causal).max() > 1e-3


def test_prefill_chunks_never_cut_a_span():
    from vlmforge.runtime.attention import chunk_bounds

    spans = np.array([[0, 0, 0, 0, -1, -1, 1, 1, 1, -1]])
    assert chunk_bounds(10, 3, spans) == [4, 6, 9, 10]  # 0-3 whole, 6-8 whole
    assert chunk_bounds(10, 3, None) == [3, 6, 9, 10]
    assert chunk_bounds(10, 4, np.zeros((1, 10), np.int64)) == [10]  # one span: one step


def test_batched_rows_equal_solo_runs(tiny, rng):
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = random_images(rng, [(40, 60), (60, 40)])
    reqs = [Request(prompt="caption en", images=images[:1], max_new_tokens=10),
            Request(prompt="answer en which?", images=images, max_new_tokens=10),
            Request(prompt="caption en", images=images[:1], max_new_tokens=10)]  # same prompt again: no reuse
    solo = [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    results = pipe.generate_batch(reqs)
    assert [r.token_ids for r in results] == solo
    assert results[2].stats.cached_prompt_tokens == 0  # the prompt is one bidirectional span


def test_logits_at_every_step_prefix_lm(tiny, rng):
    """The attention room on its own: the prefix (image + prompt) bidirectional, the answer causal,
    prefilled in 3-token chunks (the prefix goes in whole: a chunk never splits a span), gives
    transformers' logits at every prefill and decode step."""
    from vlmforge.runtime.serving import Request
    from parity import assert_logits_every_step, stepwise_logits

    pipe, model, proc = tiny
    images = random_images(rng, [(40, 60)])
    prompt = "answer en What is this?"
    ids, ours = stepwise_logits(pipe, Request(prompt=prompt, images=images), steps=12, chunk=3)
    ref = proc(images=images, text=["<image>" + prompt], return_tensors="pt")
    assert ref["input_ids"][0].tolist() == ids

    def forward(seq):
        types = torch.ones(1, len(seq), dtype=torch.long)  # 1: the answer (causal)
        types[0, : len(ids)] = ref["token_type_ids"][0]
        with torch.no_grad():
            return model(input_ids=torch.tensor([seq]), pixel_values=ref["pixel_values"],
                         token_type_ids=types).logits[0, -1].numpy()

    assert_logits_every_step(ours, forward, ids)
