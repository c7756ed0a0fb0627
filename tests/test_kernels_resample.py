"""Pillow-exact resampling: ``resize_hcw`` must equal ``PIL.Image.resize`` bit for bit (tolerance
0), including Pillow 13's pass order, output windows, and the transposed (HD portrait) path."""

import numpy as np
import pytest
from PIL import Image

from vlmforge.kernels.resample import filter_name, pillow_vertical_first, resize_hcw

PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX}


def pil_resize(img, h, w, name):
    return np.asarray(Image.fromarray(img).resize((w, h), PIL_FILTERS[name]))


@pytest.mark.parametrize("name", sorted(PIL_FILTERS))
def test_resize_matches_pillow_exactly(name):
    rng = np.random.default_rng(hash(name) % 2**32)
    for _ in range(25):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 260, 4))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = resize_hcw(img, oh, ow, name).transpose(0, 2, 1)
        np.testing.assert_array_equal(got, pil_resize(img, oh, ow, name), err_msg=f"{h}x{w}->{oh}x{ow}")


def test_pass_order_is_pillows():
    """Cases on both sides of Pillow 13's rule; the wrong order changes some pixels by 1."""
    rng = np.random.default_rng(1)
    for h, w, oh, ow in [(200, 200, 100, 150), (200, 200, 100, 151), (226, 22, 127, 397), (300, 100, 200, 50)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_hcw(img, oh, ow, "bilinear").transpose(0, 2, 1), pil_resize(img, oh, ow, "bilinear"))
    assert pillow_vertical_first(200, 200, 100, 151) and not pillow_vertical_first(200, 200, 100, 150)


def test_window_and_transposed():
    img = np.random.default_rng(2).integers(0, 256, (123, 301, 3), dtype=np.uint8)
    full = pil_resize(img, 211, 97, "bicubic")
    win = resize_hcw(img, 211, 97, "bicubic", rows=slice(50, 120), cols=np.arange(3, 97, 4)).transpose(0, 2, 1)
    np.testing.assert_array_equal(win, full[50:120][:, 3:97:4])
    # Pillow on the transposed image, transposed back
    ref = pil_resize(np.ascontiguousarray(img.transpose(1, 0, 2)), 97, 211, "bilinear").transpose(1, 0, 2)
    np.testing.assert_array_equal(resize_hcw(img, 211, 97, "bilinear", transposed=True).transpose(0, 2, 1), ref)


def test_large_downscale_exact():
    img = np.random.default_rng(3).integers(0, 256, (1600, 3840, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_hcw(img, 336, 336, "bicubic").transpose(0, 2, 1), pil_resize(img, 336, 336, "bicubic"))


@pytest.mark.parametrize("h, w, oh, ow", [(900, 700, 211, 97), (300, 1000, 40, 333), (1000, 300, 333, 40)])
def test_small_budget_bands_stay_exact(h, w, oh, ow):
    """A small working-memory budget cuts the passes into bands of output rows with narrow strips:
    pixels unchanged, for both pass orders, windows and the transposed path."""
    img = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    full = pil_resize(img, oh, ow, "bicubic")
    for budget in (1, 5000, None):
        got = resize_hcw(img, oh, ow, "bicubic", budget=budget).transpose(0, 2, 1)
        np.testing.assert_array_equal(got, full, err_msg=f"budget {budget}")
    win = resize_hcw(img, oh, ow, "bicubic", rows=slice(3, oh - 1), cols=np.arange(1, ow, 3), budget=1)
    np.testing.assert_array_equal(win.transpose(0, 2, 1), full[3 : oh - 1][:, 1:ow:3])
    ref = pil_resize(np.ascontiguousarray(img.transpose(1, 0, 2)), ow, oh, "bilinear").transpose(1, 0, 2)
    got = resize_hcw(img, oh, ow, "bilinear", transposed=True, budget=1).transpose(0, 2, 1)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("name", sorted(PIL_FILTERS))
def test_exact_scales_take_the_tie_free_float32_path_and_stay_exact(name):
    """At 2×, 4× and ½× nearly every sum is a rounding tie; interior blocks then skip the float64
    fix-up (resample._exact_in_float32) — their pixels must still be Pillow's."""
    from vlmforge.kernels.resample import _exact_in_float32, precompute_coeffs

    rng = np.random.default_rng(7)
    for h, w, oh, ow in [(256, 384, 128, 192), (400, 200, 100, 50), (60, 90, 120, 180)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = resize_hcw(img, oh, ow, name).transpose(0, 2, 1)
        np.testing.assert_array_equal(got, pil_resize(img, oh, ow, name), err_msg=f"{h}x{w}->{oh}x{ow}")
    interior = precompute_coeffs(384, 192, name).window(slice(8, 184))
    assert _exact_in_float32(interior.weight) == (name != "lanczos")  # lanczos weights are not dyadic


def test_unknown_filter_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        filter_name("nearest-ish")
