"""Input handling (grey, RGBA, 16-bit, zero-sized, absurd sizes) and the ``fixed`` scheme against
LlavaImageProcessorPil (tolerance 0.0), including pad-to-square and crops larger than the image."""

import numpy as np
import pytest
from kernel_cases import CLIP_MEAN, CLIP_STD, random_image
from transformers.image_transforms import convert_to_rgb
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from vlmforge.kernels import PreprocessSpec, prepare_image, tile_and_patchify

FIXED = PreprocessSpec(size=[336], crop=[336, 336], mean=CLIP_MEAN, std=CLIP_STD)


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 1), (40, 30, 4)])
def test_grey_and_rgba_convert_like_transformers(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ref = convert_to_rgb(img if len(shape) == 3 else img[:, :, None], return_numpy=True)
    np.testing.assert_array_equal(prepare_image(img, 10**6), ref)


@pytest.mark.parametrize(
    "img,match",
    [
        (np.zeros((0, 10, 3), np.uint8), "zero size"),
        (np.zeros((10, 10, 3), np.uint16), "8-bit"),
        (np.zeros((10, 10, 3), np.float32), "8-bit"),
        (np.zeros((10, 10, 2), np.uint8), "channels"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    ],
)
def test_bad_inputs_are_refused(img, match):
    with pytest.raises(ValueError, match=match):
        tile_and_patchify(img, FIXED)


def test_absurd_size_refused_before_allocating():
    # a 100000×100000 RGBA image that occupies 4 bytes: any conversion would allocate 30 GB
    huge = np.broadcast_to(np.zeros((1, 1, 4), np.uint8), (100_000, 100_000, 4))
    with pytest.raises(ValueError, match="exceeds the limit"):
        tile_and_patchify(huge, FIXED)


def test_bad_dtype_and_scheme():
    with pytest.raises(ValueError, match="float32 or float16"):
        tile_and_patchify(random_image(8, 8), FIXED, dtype=np.float64)
    with pytest.raises(ValueError, match="supported: fixed, anyres, hd, patches"):
        PreprocessSpec(scheme="tiles")


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("h,w", [(1, 1), (13, 400), (480, 640), (1600, 3840)])
def test_fixed_matches_llava(pad, h, w):
    img = random_image(h, w)
    proc = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=pad)
    ref = proc(img, return_tensors="np", input_data_format="channels_last")["pixel_values"]
    spec = PreprocessSpec(**{**FIXED.__dict__, "pad_to_square": pad, "background": [int(m * 255) for m in CLIP_MEAN]})
    got, layout = tile_and_patchify(img, spec)
    np.testing.assert_array_equal(got, ref)
    assert layout.num_tiles == 1


def test_crop_larger_than_resized_image_pads_with_zero():
    proc = LlavaImageProcessorPil(size={"height": 20, "width": 30}, crop_size={"height": 25, "width": 24}, do_pad=False)
    img = random_image(40, 50)
    ref = proc(img, return_tensors="np", input_data_format="channels_last")["pixel_values"]
    spec = PreprocessSpec(resize="exact", size=[20, 30], crop=[25, 24], mean=CLIP_MEAN, std=CLIP_STD)
    np.testing.assert_array_equal(tile_and_patchify(img, spec)[0], ref)
