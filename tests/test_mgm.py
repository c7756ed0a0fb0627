"""Mini-Gemini (MGM): our implementation against the original code (../shared/reference/mgm), run
as the oracle on a tiny random checkpoint in the original layout (export/tiny_mgm.py).

The original preprocessing (mgm/serve/cli.py: CLIP's processor at image_size_aux, then
F.interpolate of the normalised tensor to the CLIP size) is restated here on the oracle's own
processor; the model, towers and connector are the oracle's modules. A missing oracle fails."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user

QUESTION = "What is in the picture?"


def oracle():
    return load_harness("mgm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(our pipeline, the oracle model, the checkpoint folder, the marker a planted file would write)."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_mgm import make_tiny_mgm
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("mgm")
    model, config, _ = oracle().build_tiny(seed=0)
    model_dir = make_tiny_mgm(root / "hf", model.state_dict(), config)
    marker = root / "ran.txt"
    for name in ("modeling_mgm.py", "mgm_arch.py", "configuration_mgm.py"):
        (model_dir / name).write_text(f"open({str(marker)!r}, 'w').write('executed')\n")
    config_json = model_dir / "config.json"  # and the config points at it, as remote-code checkpoints do
    raw = json.loads(config_json.read_text())
    raw["auto_map"] = {"AutoConfig": "configuration_mgm.MGMConfig", "AutoModelForCausalLM": "modeling_mgm.MGMLlamaForCausalLM"}
    config_json.write_text(json.dumps(raw))
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model, model_dir, marker


@pytest.fixture(scope="module")
def tiny_hd(tmp_path_factory):
    """MGM-HD (image_grid 2, image_global): (our pipeline, the oracle model)."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_mgm import make_tiny_mgm
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("mgm_hd")
    model, config, _ = oracle().build_tiny(seed=1, **oracle().VARIANTS["mgm-hd"])
    export_model(make_tiny_mgm(root / "hf", model.state_dict(), config), root / "out")
    return Pipeline.load(root / "out"), model


def original_pixels(model, rgb: np.ndarray, pad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cli.py's preprocessing on the oracle's CLIP processor: (images (1, 3, t, t), images_aux (1, 3, A, A));
    ``pad``: image_aspect_ratio "pad" (mm_utils.expand2square with the mean colour first)."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    tower = model.get_vision_tower()
    proc = CLIPImageProcessor.from_pretrained(tower.vision_tower_name)
    raw = dict(proc.crop_size)
    aux = model.config.image_size_aux
    proc.crop_size = {"height": aux, "width": aux}
    proc.size = {"shortest_edge": aux}
    picture = Image.fromarray(rgb)
    if pad:
        side = max(picture.size)
        square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in proc.image_mean))
        square.paste(picture, ((side - picture.size[0]) // 2, (side - picture.size[1]) // 2))
        picture = square
    images_aux = torch.as_tensor(np.asarray(proc(picture, return_tensors="np")["pixel_values"]))
    images = torch.nn.functional.interpolate(images_aux, size=[raw["height"], raw["width"]], mode="bilinear",
                                             align_corners=False)
    return images, images_aux


def test_kernel_pixels_equal_the_original_preprocessing(tiny, rng):
    from vlmforge.kernels import pixel_views, tile_and_patchify

    pipe, model, _, _ = tiny
    spec = pipe.manifest.image.preprocess
    padded = dataclasses.replace(spec, pad_to_square=True)
    for rgb in random_images(rng, [(60, 80), (120, 40), (17, 230)]):
        for pad, spec_ in ((False, spec), (True, padded)):
            images, images_aux = original_pixels(model, rgb, pad)
            out = {b: tile_and_patchify(rgb, spec_, backend=b)[0] for b in ("numpy", "c")}
            assert np.array_equal(out["numpy"], out["c"])  # the C kernel's aux placement: the same bytes
            views = pixel_views(out["c"], spec_)
            np.testing.assert_allclose(views["pixel_values_aux"], images_aux.numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(views["pixel_values"], images.numpy(), rtol=0, atol=2e-6)
        half = tile_and_patchify(rgb, spec, dtype=np.float16)[0]  # the float32 views, rounded once
        assert np.array_equal(half, tile_and_patchify(rgb, spec)[0].astype(np.float16))


def test_hd_kernel_pixels_equal_the_original_preprocessing(tiny, rng):
    """MGM-HD (cli.py, image_grid 2, image_global): the aux view at 2·A, the t·2 interpolation cut into
    2×2 crops (row-major), then that interpolated again to t×t as the global view, last."""
    from vlmforge.kernels import pixel_views, tile_and_patchify

    pipe, model, _, _ = tiny
    base = pipe.manifest.image.preprocess
    aux = 2 * base.crop[0]
    spec = dataclasses.replace(base, size=[aux], crop=[aux, aux], image_grid=2, image_global=True)
    t = base.tile_size
    for rgb in random_images(rng, [(70, 50), (33, 200)]):
        model.config.image_size_aux = aux
        try:
            _, images_aux = original_pixels(model, rgb)
        finally:
            model.config.image_size_aux = base.crop[0]
        wide = torch.nn.functional.interpolate(images_aux, size=[2 * t, 2 * t], mode="bilinear", align_corners=False)
        crops = wide.reshape(3, 2, t, 2, t).permute(1, 3, 0, 2, 4).reshape(-1, 3, t, t)
        whole = torch.nn.functional.interpolate(wide, size=[t, t], mode="bilinear", align_corners=False)
        views = pixel_views(tile_and_patchify(rgb, spec)[0], spec)
        np.testing.assert_allclose(views["pixel_values_aux"], images_aux.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(views["pixel_values"], torch.cat([crops, whole]).numpy(), rtol=0, atol=2e-6)


def test_each_graph_within_1e4_of_the_original_modules(tiny, rng):
    from vlmforge.kernels import pixel_views, tile_and_patchify

    pipe, model, _, _ = tiny
    spec = pipe.manifest.image.preprocess
    views = pixel_views(tile_and_patchify(random_images(rng, [(50, 70)])[0], spec)[0], spec)
    with torch.no_grad():
        images, images_aux = (torch.as_tensor(np.array(views[k])) for k in ("pixel_values", "pixel_values_aux"))
        want_low = model.get_vision_tower()(images).numpy()
        want_aux = model.get_vision_tower_aux()(images_aux).numpy()
        want = model.encode_images(images, images_aux).numpy()
    low = pipe.towers.sessions["vision"].run({"pixel_values": views["pixel_values"]})["image_features"]
    aux = pipe.towers.sessions["vision_aux"].run({"pixel_values_aux": views["pixel_values_aux"]})["image_features_aux"]
    got = pipe.connector.run({"image_features": want_low, "image_features_aux": want_aux})["image_embeds"]
    for ours, theirs in ((low, want_low), (aux, want_aux), (got, want)):
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-4


def compare(pipe, model, images, messages, n=24):
    """Our greedy tokens equal the original's on the original's pixels, each image's slots one -200."""
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n)
    per = pipe.manifest.image.preprocess.tokens_per_tile
    prepared = pipe.prompter.prepare_prompt(None, messages, len(images), [per] * len(images))
    ids = list(prepared.input_ids)
    for start, count in reversed(prepared.image_slots):
        ids[start : start + count] = [-200]
    pixels = [original_pixels(model, rgb) for rgb in images]
    inputs = {"input_ids": torch.tensor([ids]),
              "images": torch.cat([p[0] for p in pixels]) if pixels else None,
              "images_aux": torch.cat([p[1] for p in pixels]) if pixels else None}
    theirs = oracle().greedy(model, inputs, n)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    assert_same_until_eos(ours.token_ids, theirs, n, eos)
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes(tiny, rng):
    pipe, model, _, _ = tiny
    for image in random_images(rng, [(60, 80), (120, 40), (12, 240)]):  # the last 1:20
        ours = compare(pipe, model, [image], user(None, QUESTION))
        assert ours.stats.num_image_tokens == 4


def test_two_pictures_and_text_only(tiny, rng):
    pipe, model, _, _ = tiny
    images = random_images(rng, [(50, 90), (90, 50)])
    text = pipe.prompt_text(None, user(None, None, "Which is larger?"), 2)
    assert "Image 1:<image>\nImage 2:<image>\nWhich is larger?" in text  # cli.py's image split string
    compare(pipe, model, images, user(None, None, "Which is larger?"))
    compare(pipe, model, [], [{"role": "user", "content": "Tell me a story about a cat."}])


def test_hd_graphs_and_greedy_tokens_equal_the_original(tiny_hd, rng):
    """2×2 crops + the global view (5 views of 4 tokens: 20 slots); the oracle reads our kernel's
    views (equal to cli.py's, test_hd_kernel_pixels_equal_the_original_preprocessing)."""
    from vlmforge.kernels import pixel_views, tile_and_patchify

    pipe, model = tiny_hd
    spec = pipe.manifest.image.preprocess
    messages = user(None, QUESTION)
    for rgb in random_images(rng, [(60, 80), (120, 40), (12, 240)]):
        views = pixel_views(tile_and_patchify(rgb, spec)[0], spec)
        images = torch.as_tensor(np.array(views["pixel_values"]))[None]  # (1, 5, 3, t, t): crops, then global
        images_aux = torch.as_tensor(np.array(views["pixel_values_aux"]))
        with torch.no_grad():
            low, aux = model.get_vision_tower()(images[0]).numpy(), model.get_vision_tower_aux()(images_aux).numpy()
            want = model.encode_images(images, images_aux).numpy()
        sessions = pipe.towers.sessions
        assert np.abs(sessions["vision"].run({"pixel_values": views["pixel_values"]})["image_features"] - low).max() < 1e-4
        got_aux = sessions["vision_aux"].run({"pixel_values_aux": views["pixel_values_aux"]})["image_features_aux"]
        assert np.abs(got_aux - aux).max() < 1e-4
        got = pipe.connector.run({"image_features": low, "image_features_aux": aux})["image_embeds"]
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
        ours = pipe.generate(messages=messages, images=[rgb], max_new_tokens=24)
        assert ours.stats.num_image_tokens == 20
        prepared = pipe.prompter.prepare_prompt(None, messages, 1, [20])
        ids = list(prepared.input_ids)
        start, count = prepared.image_slots[0]
        ids[start : start + count] = [-200]
        theirs = oracle().greedy(model, {"input_ids": torch.tensor([ids]), "images": images, "images_aux": images_aux}, 24)
        eos = set(pipe.manifest.tokenizer.eos_token_ids)
        assert_same_until_eos(ours.token_ids, theirs, 24, eos)


def test_prompt_is_vicuna_v1(tiny):
    pipe, _, _, _ = tiny
    text = pipe.prompt_text(None, user(None, QUESTION), 1)
    assert text == ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the user's questions. USER: <image>\n"
                    f"{QUESTION} ASSISTANT:")


def test_planted_code_is_never_executed(tiny):
    _, _, model_dir, marker = tiny
    assert (model_dir / "modeling_mgm.py").is_file()
    assert not marker.exists()


def draw_trunk(draw):
    """A timm ConvNeXt trunk (open_clip's) of drawn widths, depths and MLP kind, random weights."""
    from timm.models.convnext import ConvNeXt

    dims = tuple(int(d) for d in np.cumsum(draw.integers(2, 5, 4)) * 4)
    trunk = ConvNeXt(depths=tuple(int(d) for d in draw.integers(1, 3, 4)), dims=dims, conv_mlp=bool(draw.integers(2)),
                     ls_init_value=1e-6 if draw.integers(2) else None, num_classes=0)
    with torch.no_grad():
        for param in trunk.parameters():
            param.copy_(torch.randn(param.shape) / max(1, param[0].numel()) ** 0.5)
    return trunk.eval(), dims


def test_random_aux_towers_match_the_original_backbone():
    """Drawn ConvNeXt trunks (both MLP kinds: 1×1 convs as in the tiny atto, Linears as in
    convnext_large_d_320; with and without layer scale) through the original's backbone."""
    from types import SimpleNamespace

    from vlmforge.export.families.mgm.convnext import ConvNeXtTower

    oracle()  # the upstream mgm package and timm import once the harness is loaded
    from mgm.model.multimodal_encoder.openclip_encoder import OpenCLIPVisionTower

    draw = np.random.default_rng(7)
    for _ in range(3):
        trunk, dims = draw_trunk(draw)
        state = {k: v for k, v in trunk.state_dict().items() if k.startswith(("stem.", "stages."))}
        ours = ConvNeXtTower(state).eval()
        ours.load_state_dict(state)
        fake = SimpleNamespace(vision_stem=trunk.stem, vision_stages=trunk.stages, is_optimize=False)
        fake.basic_forward = lambda x, f=fake: OpenCLIPVisionTower.basic_forward(f, x)
        x = torch.randn(1, 3, 32 * int(draw.integers(1, 4)), 32 * int(draw.integers(1, 4)))
        with torch.no_grad():
            want, got = OpenCLIPVisionTower.backbone(fake, x), ours(x)
        assert got.shape == want.shape and got.shape[1] == sum(dims)
        assert (got - want).abs().max() < 1e-5


def test_random_connectors_match_the_original_encode_images():
    """Drawn widths, token grids, patch cells, image_grid 1-3 (with or without the global view)
    and projectors: our connector against the original's encode_images (towers as identities, so
    its inputs are the features)."""
    from types import SimpleNamespace

    from torch import nn

    from vlmforge.export.families.mgm.connector import MGMConnector

    oracle()
    from mgm.model.mgm_arch import MGMMetaForCausalLM

    class Original(MGMMetaForCausalLM):
        def __init__(self, config, parts):
            self.config, self.parts = config, parts

        def get_model(self):
            return self.parts

    draw = np.random.default_rng(11)
    for _ in range(6):
        c, aux, side, cell = (int(v) for v in (draw.integers(2, 9) * 2, draw.integers(3, 12), draw.integers(1, 4),
                                                draw.integers(1, 4)))
        grid = int(draw.integers(1, 4))
        has_global = grid > 1 and bool(draw.integers(2))
        kind = str(draw.choice(["linear", "mlp2x_gelu", "mlp3x_gelu", "identity"]))
        hidden = c if kind == "identity" else int(draw.integers(4, 20))
        ours = MGMConnector(c, aux, hidden, kind, grid, has_global).eval()
        with torch.no_grad():
            for param in ours.parameters():
                param.copy_(torch.randn(param.shape))
        parts = SimpleNamespace(get_vision_tower=lambda: nn.Identity(), get_vision_tower_aux=lambda: nn.Identity(),
                                **{k: getattr(ours, k) for k in ("vlm_uni_query_projector", "vlm_uni_aux_projector",
                                                                 "vlm_uni_val_projector", "mm_projector")})
        original = Original(SimpleNamespace(image_grid=grid, image_global=has_global), parts)
        views = 1 if grid == 1 else grid * grid + int(has_global)
        feats = torch.randn(views, side * side, c)
        maps = torch.randn(1, aux, grid * side * cell * (2 if has_global else 1), grid * side * cell * (2 if has_global else 1))
        with torch.no_grad():
            want = original.encode_images(feats[None] if grid > 1 else feats, maps)
            got = ours(feats, maps)
        assert got.shape == want.shape, (grid, has_global, kind)
        assert (got - want).abs().max() < 1e-5, (grid, has_global, kind)


@pytest.mark.parametrize("change, message", [({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
                                             ({"mm_vision_tower": "eva-vit-g"}, "EVA"),
                                             ({"image_grid": 1, "image_global": True}, "image_grid"),
                                             ({"mm_vision_tower_aux": "missing-folder"}, "not a folder")])
def test_unsupported_configs_are_refused_naming_the_problem(tiny, tmp_path, change, message):
    from vlmforge.export.families.mgm.config import parse_config

    _, _, model_dir, _ = tiny
    raw = json.loads((model_dir / "config.json").read_text())
    for name in (raw["mm_vision_tower"], raw["mm_vision_tower_aux"], "eva-vit-g"):
        (tmp_path / name).symlink_to(model_dir / raw["mm_vision_tower"], target_is_directory=True)
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse_config(tmp_path)
