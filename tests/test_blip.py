"""BLIP captioning: the text decoder reads the image through cross-attention K/V computed once."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens
from vlmforge.runtime.serving import Request


@pytest.mark.parametrize("layers,hidden", [(2, 32), (3, 48)])
def test_captions_match_transformers(layers, hidden, tmp_path, rng):
    from transformers import AutoTokenizer, BlipForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_blip import make_tiny_blip
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_blip(tmp_path / "hf", layers=layers, hidden=hidden)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    caps = pipe.manifest.capabilities
    assert caps.cross_attention and not caps.encoder_decoder and "connector" not in pipe.manifest.graphs
    hf = BlipForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    requests, answers = [], []
    for prefix, image in zip(["a picture of", ""], random_images(rng, [(41, 53), (70, 20)])):
        ours = pipe.generate(prefix, images=[image], max_new_tokens=24)
        requests.append(Request(prefix, [image], max_new_tokens=24))
        answers.append(ours.token_ids)
        pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
        kwargs = {"input_ids": tok(prefix, return_tensors="pt").input_ids} if prefix else {}
        with torch.no_grad():
            out = hf.generate(pixel_values=torch.as_tensor(pixels), max_new_tokens=24, do_sample=False, **kwargs)
        # generate returns [DEC] + prefix (without [CLS]/[SEP]) + the caption
        start = kwargs["input_ids"].shape[1] - 1 if prefix else 1
        assert_same_tokens(ours.token_ids, out[0, start:].tolist(), 24, eos)
        assert len(ours.stats.stages["cross_kv"]) == 1  # once per image, not per token
    # decoded in one batch: each row binds its own image's cross K/V
    assert [r.token_ids for r in pipe.generate_batch(requests)] == answers
    assert pipe.engine.stats["max_rows"] == 2
