"""InstructBLIP: the Q-Former reads the instruction in its own (BERT) vocabulary."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens, hf_generate_ids

PROMPTS = ["What is in the picture?", "Describe the image in detail."]


@pytest.mark.parametrize("text", ["llama", "t5"])
def test_generation_matches_transformers(text, tmp_path, rng):
    from transformers import AutoTokenizer, InstructBlipForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_blip import make_tiny_blip2
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_blip2(tmp_path / "hf", text=text, instruct=True, qformer_layers=3)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    assert pipe.manifest.capabilities.connector_text_inputs
    hf = InstructBlipForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok, qtok = AutoTokenizer.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir / "qformer_tokenizer")
    for prompt, image in zip(PROMPTS, random_images(rng, [(41, 53), (64, 20)])):
        ours = pipe.generate(prompt, images=[image], max_new_tokens=24)
        ids = torch.tensor([[hf.config.image_token_index] * hf.config.num_query_tokens + tok(prompt).input_ids])
        q = qtok(prompt, return_tensors="pt")
        pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
        theirs = hf_generate_ids(hf, 24, input_ids=ids, attention_mask=torch.ones_like(ids),
                                 pixel_values=torch.as_tensor(pixels), qformer_input_ids=q.input_ids,
                                 qformer_attention_mask=q.attention_mask)
        assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
