"""CogVLM2 (Llama-3 decoder with GQA, the tower's 2×2 stride-2 convolution, rotary base 500000): our
implementation against its HF remote code (../shared/reference/cogvlm), run as the oracle on tiny random
checkpoints written in the original layout. The oracle preprocesses the pictures itself (its
``build_conversation_input_ids`` transform on a PIL image), so the pixels are checked too.

The oracle must import: a missing one fails here (it is the only reference this family has)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from cogvlm_cases import QUESTION, export_tiny, llm_session, oracle_prompt, run_llm
from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user

VOCAB = 128256  # the remote code hard-codes padding_idx 128002 (also its image pad id)


def oracle():
    return load_harness("cogvlm")


def oracle_model(config: dict, seed: int):
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_multi_query_heads",
            "max_position_embeddings")
    model, _, _ = oracle().build_tiny(seed, vision_config=config["vision_config"], **{k: config[k] for k in keys})
    return model


def build(root: pathlib.Path, seed: int = 0, **config):
    from vlmforge.export.tiny_cogvlm import tiny_config

    cfg = tiny_config(2, **{"vocab_size": VOCAB, "image_size": 56, "max_positions": 512, **config})
    model = oracle_model(cfg, seed)
    return export_tiny(root, cfg, model.state_dict()), model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("cogvlm2"))


def oracle_pixels(model, image: np.ndarray) -> torch.Tensor:
    """The picture through the original's own transform (Resize bicubic, ToTensor, Normalize): (1, 3, S, S)."""
    from PIL import Image

    built = model.build_conversation_input_ids(oracle().ByteTokenizer(), query="", images=[Image.fromarray(image)],
                                               template_version="chat")
    return built["images"][0][None]


def compare(pipe, model, images, messages, n=24):
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n)
    ids, types = oracle_prompt(pipe, messages, len(images), pad_id=128002)
    inputs = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids),
              "images": [[oracle_pixels(model, images[0])[0]]] if images else None}
    theirs = oracle().greedy(model, inputs, n)
    assert_same_until_eos(ours.token_ids, theirs, n, set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes_and_text_only(tiny, rng):
    pipe, model = tiny
    for image in random_images(rng, [(48, 64), (100, 40), (56, 56)]):
        ours = compare(pipe, model, [image], user(None, QUESTION))
        assert ours.stats.image_tokens == [(56 // 14 // 2) ** 2 + 2]
    compare(pipe, model, [], [{"role": "user", "content": "Tell me a story about a cat."}])


def test_graphs_and_pixels_equal_the_original(tiny, rng):
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, model = tiny
    image = random_images(rng, [(45, 70)])[0]
    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    theirs_px = oracle_pixels(model, image)
    np.testing.assert_allclose(pixels, theirs_px.numpy(), atol=2e-6, rtol=0)
    with torch.no_grad():
        theirs = model.model.vision(theirs_px)[0].numpy()
    np.testing.assert_allclose(pipe.encode_image(image, StageTimer()), theirs, atol=1e-4, rtol=0)

    prepared = pipe.prepare(Request(messages=user(None, QUESTION), images=[image]), StageTimer())
    logits, presents = run_llm(llm_session(pipe), pipe.manifest.llm, prepared.inputs_embeds,
                               prepared.feeds.prefill["expert_mask"], prepared.positions.prefill)
    ids, types = oracle_prompt(pipe, user(None, QUESTION), 1, pad_id=128002)
    with torch.no_grad():
        want = model(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids),
                     images=[[theirs_px[0]]]).logits[0, -1].numpy()
    np.testing.assert_allclose(logits[0, -1], want, atol=1e-4, rtol=0)
    # GQA: the cache holds the 2 KV heads, not the 4 query heads
    assert pipe.manifest.llm.num_kv_heads == 2 and presents[0].shape[1] == 2


def test_a_random_configuration(tmp_path, rng):
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    heads = int(draw.choice([2, 4, 8]))
    config = dict(layers=int(draw.choice([1, 2])), heads=heads, kv_heads=int(draw.choice([g for g in (1, 2, 4) if heads % g == 0])),
                  image_size=int(draw.choice([28, 56, 84])), vision_heads=int(draw.choice([1, 2])))
    pipe, model = build(tmp_path, seed=seed, **config)
    image = random_images(rng, [(int(draw.integers(20, 120)), int(draw.integers(20, 120)))])[0]
    ours = compare(pipe, model, [image], user(QUESTION, None))
    assert ours.stats.image_tokens == [(config["image_size"] // 28) ** 2 + 2], (seed, config)
