"""BLIP-2 with decoder-only LMs (OPT, Llama): query embeddings before BOS, Q-Former connector."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens, hf_generate_ids
from vlmforge.runtime.serving import Request

PROMPTS = ["Question: what is in the picture? Answer:", "a photo of"]


@pytest.mark.parametrize("text,queries", [("opt", 8), ("llama", 5), ("t5", 6)])
def test_generation_matches_transformers(text, queries, tmp_path, rng):
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_blip import make_tiny_blip2
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_blip2(tmp_path / "hf", text=text, num_query_tokens=queries, kv_heads=1)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    hf = Blip2ForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    requests, answers = [], []
    for prompt, image in zip(PROMPTS, random_images(rng, [(41, 53), (30, 90)])):
        ours = pipe.generate(prompt, images=[image], max_new_tokens=24)
        requests.append(Request(prompt, [image], max_new_tokens=24))
        answers.append(ours.token_ids)
        # Blip2Processor's layout: num_query_tokens image tokens, then the tokenised prompt (BOS first)
        ids = torch.tensor([[hf.config.image_token_index] * queries + tok(prompt).input_ids])
        pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
        theirs = hf_generate_ids(hf, 24, input_ids=ids, attention_mask=torch.ones_like(ids),
                                 pixel_values=torch.as_tensor(pixels))
        assert_same_tokens(ours.token_ids, theirs, 24, eos)
        assert ours.stats.num_image_tokens == queries
    # decoded together (T5: each its own encoder memory, batched with the rows whose memory has its shape)
    assert [r.token_ids for r in pipe.generate_batch(requests)] == answers
    if text == "t5":  # the encoder ran once and the decoder read its cross-attention K/V
        assert pipe.manifest.capabilities.encoder_decoder and "cross_kv" in pipe.manifest.graphs
        assert len(ours.stats.stages["encoder"]) == 1 and len(ours.stats.stages["cross_kv"]) == 1


def test_prefix_models_refuse_placeholders(tmp_path, rng):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_blip import make_tiny_blip2
    from vlmforge.runtime import Pipeline, PromptError

    export_model(make_tiny_blip2(tmp_path / "hf"), tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    image = random_images(rng, [(30, 30)])[0]
    with pytest.raises(PromptError, match="places images before the prompt"):
        pipe.generate("<image> what is it?", images=[image], max_new_tokens=2)
    # text-only prompts work too: no image slots at all
    assert pipe.generate("a photo of", images=[], max_new_tokens=3).stats.num_image_tokens == 0


def test_random_config_parity(tmp_path, rng):
    """Sizes drawn from a seed (layers, queries, widths, KV heads): export works from the config alone."""
    import numpy as np
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_blip import make_tiny_blip2
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    r = np.random.default_rng(11)
    heads = int(r.choice([2, 4]))
    cfg = dict(text=str(r.choice(["opt", "llama", "t5"])), num_query_tokens=int(r.integers(2, 12)),
               vision_layers=int(r.integers(1, 4)), qformer_layers=int(r.integers(1, 4)), layers=int(r.integers(1, 4)),
               hidden=heads * int(r.choice([8, 16])), heads=heads, kv_heads=int(r.choice([1, heads])),
               qformer_hidden=int(r.choice([32, 64])))
    model_dir = make_tiny_blip2(tmp_path / "hf", **cfg)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    hf = Blip2ForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    image = random_images(rng, [(33, 47)])[0]
    ours = pipe.generate(PROMPTS[0], images=[image], max_new_tokens=24)
    ids = torch.tensor([[hf.config.image_token_index] * cfg["num_query_tokens"] + tok(PROMPTS[0]).input_ids])
    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    theirs = hf_generate_ids(hf, 24, input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values=torch.as_tensor(pixels))
    assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
