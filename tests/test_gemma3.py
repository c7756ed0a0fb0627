"""Gemma 3: bidirectional attention within each image, sliding-window and global layers (the tiny
window is 8 tokens, so every prompt here runs past it), pan-and-scan crops (the module's model has
them on, the random configuration off) — greedy tokens equal transformers'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_images
from parity import assert_batched_and_chat_equal_solo, assert_same_tokens


def export(root, **kw):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_gemma3 import make_tiny_gemma3
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_gemma3(root / "hf", **kw)
    export_model(model_dir, root / "out")
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    return Pipeline.load(root / "out"), model, AutoProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export(tmp_path_factory.mktemp("gemma3"), pan_and_scan_min_crop=16)


def user(n_images: int, text: str):
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def processor_inputs(pipe, proc, images, messages):
    """transformers' processor on the chat; pan-and-scan is its call option, set as the export has it."""
    spec = pipe.manifest.image.preprocess
    crops = {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": spec.pan_min_crop} \
        if spec.scheme == "pan_and_scan" else {}
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    return proc(images=images or None, text=[text], return_tensors="pt", **crops)


def check(tiny, images, messages, n=24):
    from vlmforge.kernels import tile_and_patchify

    pipe, model, proc = tiny
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n)
    ref = processor_inputs(pipe, proc, images, messages)
    assert ours.stats.num_prompt_tokens == ref["input_ids"].shape[1]
    kwargs = {}
    if images:  # every picture's views: itself, then its crops
        pixels = np.concatenate([tile_and_patchify(im, pipe.manifest.image.preprocess)[0] for im in images])
        np.testing.assert_allclose(pixels, ref["pixel_values"].numpy(), atol=1e-5, rtol=0)
        kwargs = {"pixel_values": torch.as_tensor(pixels), "token_type_ids": ref["token_type_ids"]}
    with torch.no_grad():
        out = model.generate(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=n,
                             do_sample=False, **kwargs)
    assert_same_tokens(ours.token_ids, out[0, ref["input_ids"].shape[1]:].tolist(), n,
                       set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


def test_tokens_equal_transformers_past_the_window(tiny, rng):
    for shape in [(40, 60), (30, 200), (56, 56)]:  # 2 crops, 4 crops, none
        ours = check(tiny, random_images(rng, [shape]), user(1, "Describe the picture in detail, please."))
        assert ours.stats.num_prompt_tokens > 2 * 8  # prompt + answer run well past the sliding window


def test_two_images_and_text_only(tiny, rng):
    check(tiny, random_images(rng, [(30, 50), (200, 30)]), user(2, "Compare them."))
    check(tiny, [], user(0, "Tell me a long story about a small cat on a red chair."))


def test_each_view_is_one_span(tiny, rng):
    """A square picture is one span; a wide one is its whole view and 4 crops, five spans."""
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, _, _ = tiny
    assert pipe.manifest.llm.attention.pattern == "image"
    prepared = pipe.prepare(Request(messages=user(2, "Compare."), images=random_images(rng, [(30, 30), (30, 200)])),
                            StageTimer())
    spans = prepared.feeds.prefill["token_spans"][0]
    runs = prepared.prompt.image_slots
    assert len(runs) == 6
    for k, (a, n) in enumerate(runs):
        assert (spans[a:a + n] == k).all()
    assert (spans == -1).sum() == len(spans) - sum(n for _, n in runs)


def test_batched_rows_and_chat_turns_equal_solo_runs(tiny, rng):
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = random_images(rng, [(40, 60), (60, 40)])
    reqs = [Request(messages=user(1, "What is it?"), images=images[:1], max_new_tokens=10),
            Request(messages=user(2, "Which is larger?"), images=images, max_new_tokens=10),
            Request(messages=user(1, "What is it?"), images=images[:1], max_new_tokens=10)]
    second = assert_batched_and_chat_equal_solo(pipe, reqs, images[:1])
    assert second.stats.cached_prompt_tokens > 0


def test_a_random_configuration(tmp_path, rng):
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    config = dict(sliding_window=int(draw.choice([4, 8, 16])), sliding_pattern=int(draw.choice([2, 3])),
                  layers=int(draw.choice([3, 4])), tokens_per_image=int(draw.choice([1, 4, 16])),
                  kv_heads=int(draw.choice([1, 2, 4])), seed=seed)
    tiny = export(tmp_path, **config)
    check(tiny, random_images(rng, [(int(draw.integers(20, 90)), int(draw.integers(20, 90)))]),
          user(1, "What do you see here?"))


def test_logits_at_every_step_past_the_window(tiny, rng):
    """The attention room on its own: per-image bidirectional spans and sliding-window layers, fed in
    5-token prefill chunks (a chunk never splits an image span), give transformers' logits at every
    prefill and decode step, well past the 8-token window."""
    from vlmforge.runtime.serving import Request
    from parity import assert_logits_every_step, stepwise_logits

    pipe, model, proc = tiny
    images = random_images(rng, [(40, 60)])
    messages = user(1, "Describe the picture in detail, please.")
    ids, ours = stepwise_logits(pipe, Request(messages=messages, images=images), steps=12, chunk=5)
    ref = processor_inputs(pipe, proc, images, messages)
    assert ref["input_ids"][0].tolist() == ids and len(ids) + 12 > 3 * 8 and len(ref["pixel_values"]) == 3
    pixels = ref["pixel_values"]  # equal to our kernel's (test_tokens_equal_transformers_past_the_window)

    def forward(seq):
        types = torch.zeros(1, len(seq), dtype=torch.long)
        types[0, : len(ids)] = ref["token_type_ids"][0]
        with torch.no_grad():
            return model(input_ids=torch.tensor([seq]), pixel_values=pixels, token_type_ids=types).logits[0, -1].numpy()

    assert_logits_every_step(ours, forward, ids)


def test_sliding_layers_keep_a_bounded_cache(tiny, rng):
    """The sliding layers' caches stop at window − 1 + slack tokens (global ones keep all), the
    reported KV bytes are exact, and the tokens are transformers' (test_tokens_equal_… runs the
    same export well past the bound)."""
    pipe, _, _ = tiny
    attention = pipe.manifest.llm.attention
    assert attention.window_layers == [0, 2] and attention.window_cache == 2 * attention.window - 1
    out = pipe.generate(messages=user(1, "Describe the picture in detail, please."),
                        images=random_images(rng, [(40, 60)]), max_new_tokens=30)
    cache = pipe.decoder.cache
    n = cache.num_tokens
    assert n > 3 * attention.window_cache
    lengths = [v.shape()[2] for v in cache.values]
    assert lengths == [attention.window_cache if i in attention.window_layers else n for i in range(4) for _ in "kv"]
    assert out.stats.kv_cache_bytes == pipe.manifest.llm.cache_bytes(n) == cache.nbytes
    assert cache.nbytes < pipe.manifest.llm.kv_bytes_per_token * n
