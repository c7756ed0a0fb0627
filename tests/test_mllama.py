"""Llama-3.2-Vision (mllama): tiled pictures, cross-attention layers and the per-token cross mask.

One tiny checkpoint, its free dimensions (layers, cross-layer indexes, heads, tile size, …) drawn
from a seeded generator, exported once. The oracle is transformers: its image processor for the
pixels, its modules for every graph, its ``generate`` for the tokens — fed our prompt ids, with
the cross-attention mask its processor builds from them (``get_cross_attention_token_mask``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_images
from parity import assert_batched_and_chat_equal_solo, assert_logits_every_step, assert_same_tokens

SEED = 20261203
ATOL = 1e-4


def draw_config(seed: int) -> dict:
    draw = np.random.default_rng(seed)
    layers = int(draw.choice([3, 4, 5]))  # layer 0 and at least one more self-attention layer
    cross = sorted(draw.choice(np.arange(1, layers), size=int(draw.integers(1, layers - 1)), replace=False).tolist())
    patch = int(draw.choice([7, 14]))
    return dict(layers=layers, cross_layers=tuple(int(c) for c in cross), kv_heads=int(draw.choice([1, 2, 4])),
                patch_size=patch, image_size=patch * int(draw.choice([2, 3])), vision_layers=3,
                global_layers=int(draw.choice([1, 2])), intermediate_layers=(0, int(draw.choice([1, 2]))), seed=seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_mllama import make_tiny_mllama
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("mllama")
    model_dir = make_tiny_mllama(root / "hf", **draw_config(SEED))
    export_model(model_dir, root / "out")
    model = MllamaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    return Pipeline.load(root / "out"), model, AutoProcessor.from_pretrained(model_dir)


def hf_inputs(pipe, proc, ids: list[int], images) -> dict:
    """transformers' model inputs for our prompt ids: its processor's pixels and cross mask."""
    from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                              get_cross_attention_token_mask)

    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if not images:
        return inputs
    pix = proc.image_processor(images=[list(images)], return_tensors="pt")
    sparse = [get_cross_attention_token_mask(ids, pipe.manifest.image.image_token_id)]
    max_tiles = pix["pixel_values"].shape[2]
    mask = convert_sparse_cross_attention_mask_to_dense(sparse, pix["num_tiles"], max_tiles, len(ids))
    return {**inputs, "pixel_values": pix["pixel_values"], "aspect_ratio_ids": pix["aspect_ratio_ids"],
            "aspect_ratio_mask": pix["aspect_ratio_mask"], "cross_attention_mask": torch.as_tensor(mask)}


def stepwise_logits(pipe, request, steps: int, chunk: int) -> tuple[list[int], list[np.ndarray]]:
    """parity.stepwise_logits with the request's cross memory bound: prefill in ``chunk``-token
    steps, then ``steps`` greedy decode steps → (prompt ids, the logits before each new token)."""
    from vlmforge.runtime.decode import decode_one_token, prefill
    from vlmforge.runtime.stats import StageTimer

    timer = StageTimer()
    p = pipe.prepare(request, timer)
    pipe.decoder.reset()
    pipe.decoder.set_memory(p.memory)
    logits = [np.array(prefill(pipe.decoder, p.inputs_embeds, timer, p.positions, p.feeds, chunk))]
    for _ in range(steps):
        token = int(np.argmax(logits[-1]))
        logits.append(np.array(decode_one_token(pipe.decoder, pipe.embed_table, token, timer, p.positions, p.feeds)))
    return p.input_ids.tolist(), logits


def user(*parts):
    """Chat content from strings and None (a picture)."""
    content = [{"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


def test_kernel_pixels_equal_the_processor(tiny, rng):
    from vlmforge.kernels import tile_and_patchify, vision_geometry

    pipe, model, proc = tiny
    spec = pipe.manifest.image.preprocess
    t = spec.tile_size
    # not (1, 1): transformers reads a (1, 1, 3) array as one channel of 1×3
    sizes = [(t, t), (t - 3, 3 * t + 5), (4 * t + 9, t // 2), (2 * t, 2 * t + 1), (5 * t, 7 * t), (7, 300), (2, 5)]
    for image in random_images(rng, sizes):
        want = proc.image_processor(images=[[image]], return_tensors="np")
        n = int(want["num_tiles"][0][0])
        for backend in ("numpy", "c"):
            pixels, layout = tile_and_patchify(image, spec, backend=backend)
            assert pixels.shape[0] == n == layout.num_tiles, image.shape
            assert np.array_equal(pixels, want["pixel_values"][0, 0, :n]), (image.shape, backend)
        assert not want["pixel_values"][0, 0, n:].any()  # the padding the vision graph adds itself
        geometry = vision_geometry(layout, spec)
        assert np.array_equal(geometry["aspect_ratio_ids"], want["aspect_ratio_ids"])
        assert np.array_equal(geometry["aspect_ratio_mask"], want["aspect_ratio_mask"])


def test_each_graph_matches_transformers(tiny, rng):
    """vision, connector and cross_kv on one picture against the transformers modules (cross K/V
    against what its prefill puts in the cache); the llm by its logits at every prefill chunk and
    decode step against transformers' full forward."""
    from vlmforge.kernels import vision_geometry
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, model, proc = tiny
    images = random_images(rng, [(30, 75)])
    messages = user("Look at", None, "and tell me what it is.")
    ids, ours = stepwise_logits(pipe, Request(messages=messages, images=images), steps=8, chunk=4)
    ref = hf_inputs(pipe, proc, ids, images)
    with torch.no_grad():
        want_features = model.model.vision_model(ref["pixel_values"], ref["aspect_ratio_ids"],
                                                 ref["aspect_ratio_mask"]).last_hidden_state[0, 0]
        want_embeds = model.model.multi_modal_projector(want_features)
        out = model(**ref, use_cache=True)
    pixels, layout = pipe.preprocess(images[0], pipe.manifest.image.preprocess)
    features = pipe.vision.run({"pixel_values": pixels, **vision_geometry(layout, pipe.manifest.image.preprocess)})
    assert np.abs(features["image_features"] - want_features.numpy()).max() < ATOL
    embeds = pipe.connector.run({"image_features": features["image_features"]})["image_embeds"]
    assert np.abs(embeds - want_embeds.numpy()).max() < ATOL
    memory = pipe.cross_memory(embeds.reshape(1, -1, embeds.shape[-1]), StageTimer())
    for j, idx in enumerate(sorted(model.config.text_config.cross_attention_layers)):
        layer = out.past_key_values.layers[idx]
        assert np.abs(memory[f"cross.{j}.key"] - layer.keys.numpy()).max() < ATOL
        assert np.abs(memory[f"cross.{j}.value"] - layer.values.numpy()).max() < ATOL

    def forward(seq):
        inputs = hf_inputs(pipe, proc, seq, images)
        with torch.no_grad():
            return model(**inputs).logits[0, -1].numpy()

    assert_logits_every_step(ours, forward, ids, ATOL)


def check(tiny, images, messages, tokens: int = 24) -> list[int]:
    pipe, model, proc = tiny
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=tokens)
    ids = pipe.prompter.prepare_prompt(None, messages, len(images), []).input_ids.tolist()
    with torch.no_grad():
        out = model.generate(**hf_inputs(pipe, proc, ids, images), max_new_tokens=tokens, do_sample=False)
    assert_same_tokens(ours.token_ids, out[0, len(ids):].tolist(), tokens, set(pipe.manifest.tokenizer.eos_token_ids))
    if images:
        assert len(ours.stats.stages["cross_kv"]) == 1  # once per prompt, not per token
    return ours.token_ids


def test_tokens_equal_transformers(tiny, rng):
    """Three aspect ratios (1×3, 4×1 and 1×1 tiles) with text before and after the picture, two
    pictures (the second's text sees only it), a picture first, and text alone."""
    pipe, _, _ = tiny
    t = pipe.manifest.image.preprocess.tile_size
    wide, tall, square = random_images(rng, [(t - 2, 2 * t + 3), (3 * t + 1, t), (t - 3, t - 1)])
    grids = [pipe.preprocess(image, pipe.manifest.image.preprocess)[1].grid for image in (wide, tall, square)]
    assert len(set(grids)) == 3 and len({r * c for r, c in grids}) == 3, grids  # three tile counts
    question = user("Here is a picture:", None, "What is in it?")
    answers = [check(tiny, [image], question) for image in (wide, tall, square)]
    assert len({tuple(a) for a in answers}) == 3  # the pictures reach the answer
    check(tiny, [wide, tall], user("First", None, "then", None, "which is taller?"))
    check(tiny, [square], user(None, "Describe it."))
    check(tiny, [], user("Tell me a story about a cat."))


def test_text_before_the_picture_sees_nothing(tiny, rng):
    """The cross mask from prompt ids: tokens before the first picture token see no memory row,
    each picture's own tokens its real tiles only, consecutive picture tokens share their text."""
    from vlmforge.runtime.cross_mask import seen_spans
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, _, proc = tiny
    token = pipe.manifest.image.image_token_id
    from transformers.models.mllama.processing_mllama import get_cross_attention_token_mask

    other = token + 1
    for ids in ([other, token, other, token, token, other, other], [token, token], [other, token], [token, other] * 3):
        assert seen_spans(np.array(ids), token) == [(a, len(ids) if b == -1 else b)
                                                     for a, b in get_cross_attention_token_mask(ids, token)]
    assert seen_spans(np.array([other, token, other, token, token, other, other]), token) == [(1, 3), (3, 7), (4, 7)]
    images = random_images(rng, [(40, 100), (30, 30)])
    prepared = pipe.prepare(Request(messages=user("a b", None, "c", None, "d"), images=images), StageTimer())
    mask = prepared.feeds.prefill["cross_attention_mask"][0]
    ids = prepared.input_ids.tolist()
    first = ids.index(token)
    assert not mask[:first].any() and mask[first].any()
    want = hf_inputs(pipe, proc, ids, images)["cross_attention_mask"][0].numpy()  # (seq, images, tiles)
    per_tile = np.repeat(want, pipe.manifest.image.preprocess.tokens_per_tile, axis=2).reshape(len(ids), -1)
    assert np.array_equal(mask, per_tile)
    assert np.array_equal(prepared.feeds.decode["cross_attention_mask"][0, 0], mask[-1])


def test_batched_and_chat(tiny, rng):
    """Requests decoded in one batch (each binds its own memory and cross mask) give their solo
    tokens; a chat's second turn (no new picture) gives what the whole conversation at once gives."""
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = random_images(rng, [(40, 70), (90, 30)])
    reqs = [Request(messages=user("a", None, "b"), images=images[:1], max_new_tokens=8),
            Request(messages=user(None, "and", None), images=images, max_new_tokens=8),
            Request(messages=user("text alone"), images=[], max_new_tokens=8)]
    assert_batched_and_chat_equal_solo(pipe, reqs, images[:1])


def test_tensorrt_profiles_and_trtexec_lines(tiny):
    """Host side: every graph gets profiles — cross_kv and the llm's memory from a text-only
    prompt's one row up to two padded pictures — and a trtexec line."""
    from vlmforge.export.tensorrt import BuildOptions, plan, trtexec_commands

    pipe, _, _ = tiny
    spec = pipe.manifest.image.preprocess
    rows = spec.max_tiles * spec.tokens_per_tile
    bp = plan(pipe.manifest, BuildOptions())
    assert bp.max_tiles == spec.max_tiles
    (cross,) = bp.profiles["cross_kv"]
    assert [s[1] for s in cross["encoder_hidden_states"]] == [1, rows, 2 * rows]
    for profile in bp.profiles["llm"]:  # prefill, decode
        assert [s[2] for s in profile["cross_attention_mask"]] == [1, rows, 2 * rows]
        assert [s[2] for s in profile["cross.0.key"]] == [1, rows, 2 * rows]
    cmds = trtexec_commands(pipe.manifest, BuildOptions())
    assert sorted(cmds) == ["connector", "cross_kv", "llm", "vision"]
    assert f"--maxShapes=pixel_values:{spec.max_tiles}x3x{spec.tile_size}x{spec.tile_size}," in " ".join(cmds["vision"])


def test_unsupported_configs_are_refused_at_export(tiny):
    from vlmforge.export.families.mllama import check_config

    pipe, model, proc = tiny
    good = proc.image_processor.to_dict()
    check_config(model.config, good)
    size = model.config.vision_config.image_size
    for bad, words in [({**good, "size": {"height": size + 1, "width": size + 1}}, "image_size"),
                       ({**good, "max_image_tiles": 2}, "max_num_tiles")]:
        with pytest.raises(ValueError, match=words):
            check_config(model.config, bad)
