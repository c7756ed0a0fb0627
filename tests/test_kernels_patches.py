"""patches (Fuyu) against FuyuImageProcessorPil + FuyuProcessor: same patch grid, same token count
as FuyuProcessor._get_num_multimodal_tokens, and patch vectors equal to FuyuProcessor's
``patchify_image`` output (tolerance 0.0: Pillow-exact bilinear resize, same float32 normalise)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from kernel_cases import SIZES, random_image
from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil
from transformers.models.fuyu.processing_fuyu import FuyuProcessor

from vlmforge.kernels import PreprocessSpec, tile_and_patchify

SPEC = PreprocessSpec(
    scheme="patches", size=[1080, 1920], patch_size=30, resample="bilinear",
    background=[1, 1, 1], mean=[0.5] * 3, std=[0.5] * 3,
)


@pytest.fixture(scope="module")
def processor():
    return FuyuImageProcessorPil()


def fuyu_reference(proc, img):
    """FuyuProcessor._process_images: crop the padded image to whole patches, patchify."""
    out = proc(img, input_data_format="channels_last")
    image = np.asarray(out["images"][0][0])
    new_h = min(image.shape[-2], math.ceil(out["image_unpadded_heights"][0][0] / 30) * 30)
    new_w = min(image.shape[-1], math.ceil(out["image_unpadded_widths"][0][0] / 30) * 30)
    return np.asarray(proc.patchify_image(image[..., :new_h, :new_w])), new_h // 30, new_w // 30


@pytest.mark.parametrize("h,w", SIZES)
def test_patches_match_fuyu(processor, h, w):
    img = random_image(h, w)
    ref, rows, cols = fuyu_reference(processor, img)
    got, layout = tile_and_patchify(img, SPEC)
    assert got.shape == ref.shape == (rows * cols, 2700) and layout.grid == (rows, cols)
    np.testing.assert_array_equal(got, ref)
    fake = SimpleNamespace(image_processor=processor)
    hf_tokens = FuyuProcessor._get_num_multimodal_tokens(fake, image_sizes=[(h, w)])["num_image_tokens"][0]
    assert layout.num_image_tokens == hf_tokens == rows * (cols + 1)


def test_patch_size_must_divide_the_target():
    with pytest.raises(ValueError, match="multiples of patch_size"):
        PreprocessSpec(scheme="patches", size=[1080, 1900], patch_size=30)
