"""Gemma 3: bidirectional attention within each image, sliding-window and global layers (the tiny
window is 8 tokens, so every prompt here runs past it) — greedy tokens equal transformers'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens


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
    return export(tmp_path_factory.mktemp("gemma3"))


def user(n_images: int, text: str):
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def check(tiny, images, messages, n=24):
    from vlmforge.kernels import tile_and_patchify

    pipe, model, proc = tiny
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n)
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    ref = proc(images=images or None, text=[text], return_tensors="pt")
    assert ours.stats.num_prompt_tokens == ref["input_ids"].shape[1]
    kwargs = {}
    if images:
        pixels = np.stack([tile_and_patchify(im, pipe.manifest.image.preprocess)[0][0] for im in images])
        np.testing.assert_allclose(pixels, ref["pixel_values"].numpy(), atol=1e-5, rtol=0)
        kwargs = {"pixel_values": torch.as_tensor(pixels), "token_type_ids": ref["token_type_ids"]}
    with torch.no_grad():
        out = model.generate(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=n,
                             do_sample=False, **kwargs)
    assert_same_tokens(ours.token_ids, out[0, ref["input_ids"].shape[1]:].tolist(), n,
                       set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


def test_tokens_equal_transformers_past_the_window(tiny, rng):
    for shape in [(40, 60), (100, 12), (56, 56)]:
        ours = check(tiny, random_images(rng, [shape]), user(1, "Describe the picture in detail, please."))
        assert ours.stats.num_prompt_tokens > 2 * 8  # prompt + answer run well past the sliding window


def test_two_images_and_text_only(tiny, rng):
    check(tiny, random_images(rng, [(30, 50), (50, 30)]), user(2, "Compare them."))
    check(tiny, [], user(0, "Tell me a long story about a small cat on a red chair."))


def test_each_image_is_one_span(tiny, rng):
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, _, _ = tiny
    assert pipe.manifest.llm.attention.pattern == "image"
    prepared = pipe.prepare(Request(messages=user(2, "Compare."), images=random_images(rng, [(30, 30), (30, 30)])),
                            StageTimer())
    spans = prepared.feeds.prefill["token_spans"][0]
    (a, n), (b, m) = prepared.prompt.image_slots
    assert (spans[a:a + n] == 0).all() and (spans[b:b + m] == 1).all() and (spans == -1).sum() == len(spans) - n - m


def test_batched_rows_and_chat_turns_equal_solo_runs(tiny, rng):
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = random_images(rng, [(40, 60), (60, 40)])
    reqs = [Request(messages=user(1, "What is it?"), images=images[:1], max_new_tokens=10),
            Request(messages=user(2, "Which is larger?"), images=images, max_new_tokens=10),
            Request(messages=user(1, "What is it?"), images=images[:1], max_new_tokens=10)]
    solo = [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == solo
    chat = pipe.chat()
    chat.send("Look.", images=images[:1], max_new_tokens=6)
    second = chat.send("And now?", max_new_tokens=8)
    fresh = pipe.generate(messages=chat.messages[:-1], images=images[:1], max_new_tokens=8)
    assert second.token_ids == fresh.token_ids and second.stats.cached_prompt_tokens > 0


def test_a_random_configuration(tmp_path, rng):
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    config = dict(sliding_window=int(draw.choice([4, 8, 16])), sliding_pattern=int(draw.choice([2, 3])),
                  layers=int(draw.choice([3, 4])), tokens_per_image=int(draw.choice([1, 4, 16])),
                  kv_heads=int(draw.choice([1, 2, 4])), seed=seed)
    tiny = export(tmp_path, **config)
    check(tiny, random_images(rng, [(int(draw.integers(20, 90)), int(draw.integers(20, 90)))]),
          user(1, "What do you see here?"))
