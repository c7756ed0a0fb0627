"""dynamic (InternVL) against transformers: the tile batch of GotOcr2ImageProcessorPil with
crop_to_patches=True (InternVLProcessor's setting) — tolerance 0.0 in float32, Pillow's uint8 resize
being reproduced exactly — and its tile count (get_number_of_image_patches), on square, portrait,
landscape, 1:8 / 8:1 and beyond, tiny and 4K pictures, under several tile budgets."""

import numpy as np
import pytest
from kernel_cases import SIZES, random_image
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from vlmforge.kernels import PreprocessSpec, tile_and_patchify
from vlmforge.kernels.dynamic import best_grid

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # InternVL's normalisation
ASPECTS = [(100, 800), (800, 100), (64, 448), (448, 64), (120, 119), (2, 3), (5, 1)]  # 1:8, 8:1, 1:7 …
BUDGETS = [(1, 12), (1, 6), (1, 1), (2, 4), (3, 9)]  # (min_patches, max_patches)


def spec(min_tiles: int, max_tiles: int, tile: int = 448) -> PreprocessSpec:
    return PreprocessSpec(scheme="dynamic", resize="none", tile_size=tile, patch_size=14, min_tiles=min_tiles,
                          max_tiles=max_tiles, mean=IMAGENET_MEAN, std=IMAGENET_STD, tokens_per_tile=256)


def processor(min_tiles: int, max_tiles: int, tile: int = 448) -> GotOcr2ImageProcessorPil:
    return GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=min_tiles,
                                    max_patches=max_tiles, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


@pytest.mark.parametrize("budget", BUDGETS, ids=[f"{a}-{b}" for a, b in BUDGETS])
def test_pixels_and_counts_match_transformers(budget):
    proc, s = processor(*budget), spec(*budget)
    grids = set()
    for h, w in SIZES + ASPECTS:
        img = random_image(h, w)
        ref = proc(img, return_tensors="np", input_data_format="channels_last")
        got, layout = tile_and_patchify(img, s)
        assert got.shape == ref["pixel_values"].shape, (h, w, budget)
        np.testing.assert_array_equal(got, ref["pixel_values"])
        assert layout.num_tiles == int(ref["num_patches"][0]) == proc.get_number_of_image_patches(h, w)
        assert layout.num_image_tokens == 256 * layout.num_tiles
        grids.add(layout.grid)
    assert len(grids) >= (1 if budget[1] == 1 else 4)  # the budgets really choose different grids


def test_small_tiles_and_numpy_reference():
    """A 28-pixel tile (the tests' tiny models) and the NumPy reference give the processor's pixels too."""
    proc, s = processor(1, 6, tile=28), spec(1, 6, tile=28)
    for h, w in [(30, 90), (90, 30), (1, 1), (7, 60), (300, 37)]:
        img = random_image(h, w, seed=3)
        ref = proc(img, return_tensors="np", input_data_format="channels_last")["pixel_values"]
        for backend in ("numpy", "c"):
            np.testing.assert_array_equal(tile_and_patchify(img, s, backend=backend)[0], ref)


def test_grid_choice_and_tie_breaks():
    # transformers' docstring example order, and its tie-break: equal aspect differences prefer the
    # later (larger) grid while the image covers more than half of it
    s = spec(1, 12)
    assert best_grid(448, 448, s) == (1, 1)  # 1×1, 2×2 and 3×3 tie; 448² is not over half of 2×2 tiles
    assert best_grid(898, 898, s) == (2, 2)  # over half of 2×2 tiles (2·448²), not of 3×3 (4.5·448²)
    assert best_grid(951, 951, s) == (3, 3)  # over half of 3×3 tiles too
    assert best_grid(100, 800, s) == (1, 8) and best_grid(800, 100, s) == (8, 1)  # (rows, cols)
    assert best_grid(100, 800, spec(1, 1)) == (1, 1)  # max_patches 1: plain resize
    assert best_grid(448, 448, spec(2, 4)) == (2, 2)  # min_patches 2 leaves out 1×1
    assert best_grid(10, 1000, spec(1, 6)) == (1, 6)  # beyond the budget's widest grid: the widest


def test_float16_is_the_rounded_float32():
    img = random_image(700, 1100)
    f32, _ = tile_and_patchify(img, spec(1, 12))
    f16, _ = tile_and_patchify(img, spec(1, 12), dtype=np.float16)
    np.testing.assert_array_equal(f16, f32.astype(np.float16))


def test_bad_budgets_are_refused():
    for low, high in [(0, 4), (5, 4), (1, 0)]:
        with pytest.raises(ValueError, match="min_tiles <= max_tiles"):
            spec(low, high)
