"""Export works from the config alone: parity on LLaVA configurations the other tests don't use —
Qwen2 text models, MQA/MHA head counts, several feature layers, the "full" select strategy,
pad-to-square, and sizes drawn at random."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_images
from parity import assert_same_tokens, hf_generate

CONFIGS = {
    "qwen2-mqa-multilayer-full": dict(text="qwen2", kv_heads=1, feature_layer=[-3, -1], select_strategy="full"),
    "llama-mha-pad-layer1": dict(text="llama", kv_heads=4, heads=4, feature_layer=1, pad_to_square=True),
}


def _random_config(seed: int) -> dict:
    """Sizes transformers allows, drawn from a seed: heads divide the width, kv heads divide heads."""
    r = np.random.default_rng(seed)
    heads = int(r.choice([2, 4, 8]))
    kv_heads = int(r.choice([k for k in (1, 2, 4, 8) if heads % k == 0]))
    patch = int(r.choice([4, 5, 7]))
    return dict(
        text=str(r.choice(["llama", "qwen2"])),
        hidden=heads * int(r.choice([8, 12, 16])),
        heads=heads,
        kv_heads=kv_heads,
        layers=int(r.integers(1, 4)),
        vision_hidden=4 * int(r.choice([8, 12])),
        vision_layers=int(r.integers(1, 4)),
        patch_size=patch,
        image_size=patch * int(r.integers(3, 7)),
        feature_layer=int(r.choice([-2, -1, 1])),  # 0 breaks transformers itself (falsy output_hidden_states)
        select_strategy=str(r.choice(["default", "full"])),
        seed=seed,
    )


CONFIGS["random-seed-7"] = _random_config(7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_parity(name, tmp_path, rng):
    from transformers import LlavaForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny import make_tiny_llava
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = make_tiny_llava(tmp_path / "hf", **CONFIGS[name])
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    hf = LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    prompt = "USER: <image>\nWhat is in the picture? ASSISTANT:"
    for image in random_images(rng, [(48, 40), (20, 90)]):
        ours = pipe.generate(prompt, images=[image], max_new_tokens=32)
        # same pixels and ids into transformers: this test is about the graphs, not the resize
        pixels, layout = tile_and_patchify(image, pipe.manifest.image.preprocess)
        ids = pipe.prepare_prompt(prompt, None, 1, [layout.num_image_tokens]).input_ids
        assert_same_tokens(ours.token_ids, hf_generate(hf, ids, pixels, 32), 32, eos)
