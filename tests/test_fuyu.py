"""Fuyu: no vision graph; patches are projected straight into the decoder, a newline ends each row."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens, hf_generate_ids


@pytest.mark.parametrize("patch,target", [(6, (36, 48)), (5, (30, 20))])
def test_generation_matches_transformers(patch, target, tmp_path, rng):
    from transformers import AutoTokenizer, FuyuForCausalLM

    from vlmforge.export import export_model
    from vlmforge.export.tiny_fuyu import make_tiny_fuyu
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_fuyu(tmp_path / "hf", patch_size=patch, target=target)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    assert "vision" not in pipe.manifest.graphs and pipe.manifest.prompt_suffix == "<0x04>"
    hf = FuyuForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    speaker, newline, answer = (tok.convert_tokens_to_ids(t) for t in ("|SPEAKER|", "|NEWLINE|", "<0x04>"))
    for prompt, image in zip(["What is in the picture?\n", "Describe it."], random_images(rng, [(41, 53), (12, 70)])):
        ours = pipe.generate(prompt, images=[image], max_new_tokens=24)
        pixels, layout = tile_and_patchify(image, pipe.manifest.image.preprocess)
        rows, cols = layout.grid
        # FuyuProcessor's layout: rows of |SPEAKER| × cols + |NEWLINE|, then BOS, the prompt, <0x04>
        ids = ([speaker] * cols + [newline]) * rows + [tok.bos_token_id]
        ids += tok(prompt, add_special_tokens=False).input_ids + [answer]
        ids = torch.tensor([ids])
        theirs = hf_generate_ids(hf, 24, input_ids=ids, attention_mask=torch.ones_like(ids),
                                 pixel_values=torch.as_tensor(pixels)[None])
        assert ours.stats.num_prompt_tokens == ids.shape[1]
        assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
