"""LLaVA-NeXT: AnyRes tiles, unpadding and image_newline rows give transformers' exact tokens."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens

PINPOINTS = [[30, 60], [60, 30], [60, 60], [30, 90], [90, 30]]
PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
# shapes that select different grids (1×2, 2×2, 1×3, 3×1)
SIZES = [(30, 60), (61, 29), (45, 45), (20, 90), (95, 31)]


@pytest.fixture(scope="module")
def tiny_next(tmp_path_factory):
    from vlmforge.export import export_model
    from vlmforge.export.tiny import make_tiny_llava

    root = tmp_path_factory.mktemp("tiny_llava_next")
    model_dir = make_tiny_llava(root / "hf", text="qwen2", kv_heads=2, grid_pinpoints=PINPOINTS)
    export_model(model_dir, root / "out")
    return model_dir, root / "out"


def _hf(model_dir):
    from vlmforge.examples.hf_eval import load_hf

    return load_hf(model_dir, attn_implementation="eager")


def test_generation_matches_transformers_on_every_grid(tiny_next, rng):
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir, out = tiny_next
    pipe = Pipeline.load(out)
    model, proc = _hf(model_dir)
    grids = set()
    for image in random_images(rng, SIZES):
        ours = pipe.generate(PROMPT, images=[image], max_new_tokens=24)
        ref = proc(images=[image], text=PROMPT, return_tensors="pt")
        assert ref["input_ids"].shape[1] == ours.stats.num_prompt_tokens  # same token count as the processor
        pixels, layout = tile_and_patchify(image, pipe.manifest.image.preprocess)
        grids.add(layout.grid)
        with torch.no_grad():  # our tiles into transformers: this compares the models, not the resize
            gen = model.generate(
                input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                pixel_values=torch.as_tensor(pixels)[None], image_sizes=ref["image_sizes"],
                max_new_tokens=24, do_sample=False,
            )
        theirs = gen[0, ref["input_ids"].shape[1] :].tolist()
        assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
    assert len(grids) >= 4  # several different grids were exercised


def test_manifest_declares_the_newline_capability(tiny_next):
    from vlmforge.runtime import load_manifest

    m = load_manifest(tiny_next[1])
    assert m.capabilities.image_newline and m.image.newline_path == "image_newline.npy"
    assert m.image.preprocess.scheme == "anyres" and m.image.preprocess.grid_pinpoints == PINPOINTS
