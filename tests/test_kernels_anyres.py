"""anyres (LLaVA-NeXT) against transformers: same tile count, same image-token count as
LlavaNextProcessor, pixels equal to LlavaNextImageProcessorPil (tolerance 0.0 in float32: Pillow's
uint8 resize is reproduced exactly and normalisation uses the processor's float32 rounding), and
features packed exactly like LlavaNextModel.pack_image_features."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from kernel_cases import CLIP_MEAN, CLIP_STD, SIZES, random_image
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_next.modeling_llava_next import LlavaNextModel
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

from vlmforge.kernels import PreprocessSpec, anyres_num_image_tokens, pack_anyres_features, tile_and_patchify

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SPEC = PreprocessSpec(scheme="anyres", grid_pinpoints=PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD, patch_size=14)


@pytest.fixture(scope="module")
def processor():
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )


def hf_token_count(h, w):
    """LlavaNextProcessor's count for llava-hf checkpoints (CLS added, then dropped by "default")."""
    fake = SimpleNamespace(
        image_processor=SimpleNamespace(image_grid_pinpoints=PINPOINTS),
        patch_size=14,
        num_additional_image_tokens=1,
        _get_unpadded_features=lambda *a: LlavaNextProcessor._get_unpadded_features(None, *a),
    )
    return LlavaNextProcessor._get_number_of_features(fake, h, w, 336, 336) - 1


@pytest.mark.parametrize("h,w", SIZES)
def test_pixels_and_counts_match_transformers(processor, h, w):
    img = random_image(h, w)
    ref = processor(img, return_tensors="np", input_data_format="channels_last")["pixel_values"][0]
    got, layout = tile_and_patchify(img, SPEC)
    assert got.shape == ref.shape and layout.num_tiles == ref.shape[0]
    np.testing.assert_array_equal(got, ref)
    assert layout.num_image_tokens == hf_token_count(h, w) == anyres_num_image_tokens(h, w, SPEC)


def test_float16_is_the_rounded_float32():
    img = random_image(700, 1100)
    f32, _ = tile_and_patchify(img, SPEC)
    f16, _ = tile_and_patchify(img, SPEC, dtype=np.float16)
    np.testing.assert_array_equal(f16, f32.astype(np.float16))


@pytest.mark.parametrize("h,w", [(1, 1), (480, 640), (50, 2000), (2000, 50), (1600, 3840), (337, 1000)])
def test_packing_matches_pack_image_features(h, w):
    from transformers import CLIPVisionConfig, LlavaNextConfig

    _, layout = tile_and_patchify(random_image(h, w), SPEC)
    dim = 4
    feats = np.random.default_rng(h * w).standard_normal((layout.num_tiles, 24 * 24, dim)).astype(np.float32)
    newline = np.arange(dim, dtype=np.float32) + 100
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=336, patch_size=14).to_dict(), image_grid_pinpoints=PINPOINTS
    )
    ref, lens = LlavaNextModel.pack_image_features(
        SimpleNamespace(config=config), [torch.from_numpy(feats)], torch.tensor([[h, w]]), "default", torch.from_numpy(newline)
    )
    got = pack_anyres_features(feats, (h, w), SPEC, newline)
    np.testing.assert_array_equal(got, ref[0].numpy())
    assert got.shape[0] == int(lens[0]) == layout.num_image_tokens


def test_bad_spec_and_feature_shapes():
    with pytest.raises(ValueError, match="grid_pinpoints"):
        PreprocessSpec(scheme="anyres", grid_pinpoints=[[300, 672]])
    with pytest.raises(ValueError, match="expected features of shape"):
        pack_anyres_features(np.zeros((2, 576, 4), np.float32), (480, 640), SPEC)
