"""hd (InternLM-XComposer2-4KHD) against a transcription of the original HD_transform +
vis_processor + the vision tower's global view (PIL + torch, see kernels/hd.py for our reading).

Tolerances: local tiles 1e-6 absolute — the original rescales with float32 x / 255, we use
transformers' float64 x·(1/255) rounded to float32, which can differ by one float32 ulp; the
resized pixels themselves are Pillow-exact. Global view 1e-5 absolute: torch's bicubic sums the
same float32 terms, possibly with FMA contraction."""


import numpy as np
import pytest
import torch
from kernel_cases import CLIP_MEAN, CLIP_STD, SIZES, random_image
from PIL import Image

from vlmforge.kernels import PreprocessSpec, tile_and_patchify
from vlmforge.kernels.hd import hd_num_image_tokens

SPEC = PreprocessSpec(
    scheme="hd", max_tiles=25, tile_size=336, patch_size=14, merge_size=2,
    resample="bilinear", background=[255, 255, 255], mean=CLIP_MEAN, std=CLIP_STD,
)


def original_hd(img: np.ndarray, hd_num: int) -> torch.Tensor:
    """HD_transform → ToTensor → Normalize → [global view, local tiles] as the 4KHD code does."""
    pil = Image.fromarray(img)
    width, height = pil.size
    trans = width < height
    if trans:
        pil = pil.transpose(Image.TRANSPOSE)
        width, height = pil.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * 336)
    new_h = int(new_w / ratio)
    pil = pil.resize((new_w, new_h), Image.BILINEAR)  # torchvision resize on PIL, default bilinear
    tar = int(np.ceil(new_h / 336) * 336)
    top = int((tar - new_h) / 2)
    canvas = Image.new("RGB", (new_w, tar), (255, 255, 255))
    canvas.paste(pil, (0, top))
    if trans:
        canvas = canvas.transpose(Image.TRANSPOSE)
    x = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    _, H, W = x.shape
    sub = x.reshape(3, H // 336, 336, W // 336, 336).permute(1, 3, 0, 2, 4).reshape(-1, 3, 336, 336)
    glb = torch.nn.functional.interpolate(x[None], size=(336, 336), mode="bicubic")
    return torch.cat([glb, sub]), (H // 336, W // 336)


@pytest.mark.parametrize("h,w", SIZES)
def test_matches_original_hd_transform(h, w):
    img = random_image(h, w)
    ref, (rows, cols) = original_hd(img, SPEC.max_tiles)
    got, layout = tile_and_patchify(img, SPEC)
    assert got.shape == tuple(ref.shape) and layout.grid == (rows, cols) and rows * cols <= SPEC.max_tiles
    ref = ref.numpy()
    np.testing.assert_allclose(got[1:], ref[1:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)
    # the original asserts this length after packing: (h·w + 1)·144 + 1 + (h + 1)·12
    assert layout.num_image_tokens == (rows * cols + 1) * 144 + 1 + (rows + 1) * 12


def test_token_count_without_newline():
    spec = PreprocessSpec(**{**SPEC.__dict__, "image_newline": False})
    assert hd_num_image_tokens(2, 3, spec) == 7 * 144 + 1


def test_too_elongated_is_refused():
    img = np.zeros((1, 20000, 3), np.uint8)
    with pytest.raises(ValueError, match="too elongated"):
        tile_and_patchify(img, SPEC)


@pytest.mark.parametrize("h,w", [(300, 900), (1600, 500), (336, 336), (2000, 2000)])
def test_feature_packing_follows_the_original(h, w):
    """pack_hd_features == the 4KHD vision tower's torch sequence (reshape/permute/cat with sub_GN
    per row and glb_GN between the views), token count == the layout's."""
    from vlmforge.kernels.hd import hd_grid, pack_hd_features

    spec = SPEC
    rows, cols = hd_grid((h, w), spec)
    _, layout = tile_and_patchify(random_image(h, w, 0), spec)
    assert (rows, cols) == layout.grid and layout.num_tiles == 1 + rows * cols
    c = 8
    rng = np.random.default_rng(h * w)
    feats = rng.standard_normal((1 + rows * cols, 144, c)).astype(np.float32)
    sub_gn, glb_gn = rng.standard_normal((2, c)).astype(np.float32)
    ours = pack_hd_features(feats, (rows, cols), spec, sub_gn, glb_gn)

    f, sub, glb = torch.from_numpy(feats), torch.from_numpy(sub_gn).reshape(1, 1, 1, c), torch.from_numpy(glb_gn).reshape(1, 1, c)
    sub_img = f[1:].reshape(1, rows, cols, 12, 12, c).permute(0, 1, 3, 2, 4, 5).reshape(1, rows * 12, cols * 12, c)
    sub_img = torch.cat([sub_img, sub.repeat(1, rows * 12, 1, 1)], dim=2).reshape(1, -1, c)
    glb_img = torch.cat([f[:1].reshape(1, 12, 12, c), sub.repeat(1, 12, 1, 1)], dim=2).reshape(1, -1, c)
    reference = torch.cat([glb_img, glb, sub_img], dim=1)[0].numpy()
    np.testing.assert_array_equal(ours, reference)
    assert ours.shape[0] == layout.num_image_tokens


def test_feature_packing_refuses_a_wrong_batch():
    from vlmforge.kernels.hd import pack_hd_features

    with pytest.raises(ValueError, match="2×3 grid"):
        pack_hd_features(np.zeros((6, 144, 4), np.float32), (2, 3), SPEC, np.zeros(4), np.zeros(4))
