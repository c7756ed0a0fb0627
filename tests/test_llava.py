"""LLaVA / LLaVA-1.5: graph parity and token-for-token generation parity with transformers."""

from __future__ import annotations

import numpy as np
import torch

from conftest import random_images
from parity import assert_same_tokens, hf_generate

PROMPTS = [
    "USER: <image>\nWhat is in the picture? ASSISTANT:",
    "USER: Describe <image> briefly, then count. ASSISTANT:",
]


def _hf(model_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()


def _processor(model_dir, pipe):
    """The transformers processor for this checkpoint, PIL backend (torchvision is not installed)."""
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    ip = LlavaImageProcessorPil.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = pipe.manifest.source_config
    return LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=cfg["vision_config"]["patch_size"],
        vision_feature_select_strategy=cfg["vision_feature_select_strategy"],
        num_additional_image_tokens=1,
        chat_template=pipe.manifest.tokenizer.chat_template,
    )


def test_graphs_match_transformers_modules(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_llava
    hf, pipe = _hf(model_dir), Pipeline.load(out)
    size = hf.config.vision_config.image_size
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = hf.model.get_image_features(torch.as_tensor(pixels), return_dict=True).pooler_output
    ref = torch.stack(list(ref)).numpy()
    feats = pipe.vision.run({"pixel_values": pixels})["image_features"]
    embeds = pipe.connector.run({"image_features": feats})["image_embeds"]
    assert embeds.shape == ref.shape
    assert np.abs(embeds - ref).max() < 1e-4
    # LLM: prefill a random prompt of embeddings, compare last logits with the full forward
    seq = 11
    inputs = rng.standard_normal((1, seq, hf.config.text_config.hidden_size)).astype(np.float32)
    logits = pipe.decoder.step(inputs, np.arange(seq)[None]) if pipe.decoder.reset() is None else None
    with torch.no_grad():
        ref_logits = hf(inputs_embeds=torch.as_tensor(inputs)).logits[0, -1].numpy()
    assert np.abs(logits - ref_logits).max() < 1e-4
    # one cached step equals the full forward over seq + 1 positions
    nxt = rng.standard_normal((1, 1, inputs.shape[-1])).astype(np.float32)
    step = pipe.decoder.step(nxt, np.array([[seq]]))
    with torch.no_grad():
        full = hf(inputs_embeds=torch.as_tensor(np.concatenate([inputs, nxt], 1))).logits[0, -1].numpy()
    assert np.abs(step - full).max() < 1e-4


# The kernel reproduces Pillow's fixed-point resampling (pass order included), so pixels are
# equal to transformers' PIL processor up to float32 rounding of the normalisation.
SIZES = [(64, 48), (30, 30), (200, 333)]


def test_prompt_and_pixels_match_processor(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_llava
    pipe = Pipeline.load(out)
    proc = _processor(model_dir, pipe)
    sizes = [(40, 57), (301, 120), (64, 30), (30, 77), (5, 9), (900, 31)]
    for i, image in enumerate(random_images(rng, sizes)):
        prompt = PROMPTS[i % 2]
        ref = proc(images=[image], text=prompt, return_tensors="np")
        from vlmforge.kernels import tile_and_patchify

        pixels, layout = tile_and_patchify(image, pipe.manifest.image.preprocess)
        prepared = pipe.prepare_prompt(prompt, None, 1, [layout.num_image_tokens])
        np.testing.assert_array_equal(prepared.input_ids, ref["input_ids"][0])
        np.testing.assert_allclose(pixels, ref["pixel_values"], atol=1e-6, err_msg=str(sizes[i]))


def test_generation_matches_transformers(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_llava
    hf, pipe = _hf(model_dir), Pipeline.load(out)
    proc = _processor(model_dir, pipe)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    images = random_images(rng, SIZES)
    for i, image in enumerate(images):
        prompt = PROMPTS[i % len(PROMPTS)]
        result = pipe.generate(prompt, images=[image], max_new_tokens=32)
        ref = proc(images=[image], text=prompt, return_tensors="np")
        theirs = hf_generate(hf, ref["input_ids"][0], ref["pixel_values"], 32)
        assert_same_tokens(result.token_ids, theirs, 32, eos)
        assert result.stats.num_generated_tokens == len(theirs)


def test_messages_use_the_chat_template(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_llava
    pipe = Pipeline.load(out)
    proc = _processor(model_dir, pipe)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    image = random_images(rng, [(50, 50)])[0]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    a = pipe.generate(messages=messages, images=[image], max_new_tokens=8)
    b = pipe.generate(text, images=[image], max_new_tokens=8)
    assert a.token_ids == b.token_ids
    assert a.stats.num_prompt_tokens == b.stats.num_prompt_tokens


def test_two_images_in_one_prompt(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_llava
    hf, pipe = _hf(model_dir), Pipeline.load(out)
    proc = _processor(model_dir, pipe)
    images = random_images(rng, [(40, 80), (90, 31)])
    prompt = "USER: <image> and <image>\nCompare them. ASSISTANT:"
    ours = pipe.generate(prompt, images=images, max_new_tokens=24)
    ref = proc(images=images, text=prompt, return_tensors="np")
    theirs = hf_generate(hf, ref["input_ids"][0], ref["pixel_values"], 24)
    assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))


def test_stream_yields_the_generated_text(tiny_llava, rng):
    from vlmforge.runtime import Pipeline

    _, out = tiny_llava
    pipe = Pipeline.load(out)
    image = random_images(rng, [(33, 44)])[0]
    pieces = list(pipe.stream(PROMPTS[0], images=[image], max_new_tokens=20))
    result = pipe.generate(PROMPTS[0], images=[image], max_new_tokens=20)
    assert "".join(pieces) == result.text == pipe.tokenizer.decode(result.token_ids)
