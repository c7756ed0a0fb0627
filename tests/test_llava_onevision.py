"""LLaVA-OneVision: AnyRes-max tiles, the bilinear downsampling of large grids, base-only multi-image
views and 2×2-pooled video frames give transformers' pixels, features and greedy tokens.

One export, of a configuration drawn with a fixed seed (tower patch grid, GQA heads, feature layer,
the anyres_max budget and the largest grid). The oracle is transformers 5.24's
``LlavaOnevisionForConditionalGeneration`` and ``LlavaOnevisionProcessor`` (PIL image processor); the
processor is built without its video processor, which needs torchvision (not installed), so video
prompts are expanded by the processor's own ``replace_video_token`` and the frames' pixels come from
our kernel (``test_video_frames_are_the_image_processor_resize`` compares them to the PIL resize).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_images
from parity import assert_cached_step_equals_forward, assert_same_tokens

NEW_TOKENS = 24
QUESTION = "What is in the picture?"
# (h, w): an extreme strip, landscape, portrait (a grid over any drawn budget: its features are downsampled)
SIZES = [(120, 1000), (45, 70), (200, 150)]
KERNEL_SIZES = [(1, 1), (17, 5), (30, 30), (120, 1000), (1000, 120), (61, 29), (200, 150), (333, 401)]


def draw_config(seed: int) -> dict:
    draw = np.random.default_rng(seed)
    # (30, 7): a tile that is no whole number of patches, like SigLIP-so400m's 384 px of 14 (27 kept; see
    # test_hub_geometry_packing_equals_transformers for that geometry whatever the draw)
    image_size, patch_size = [(30, 6), (30, 7), (24, 4)][int(draw.integers(3))]
    return dict(image_size=image_size, patch_size=patch_size, kv_heads=int(draw.choice([1, 2, 4])),
                feature_layer=int(draw.choice([-1, -2])), max_tiles=int(draw.choice([4, 9])),
                max_grid=int(draw.choice([5, 6])), seed=seed)


def oracle_processor(model_dir):
    """LlavaOnevisionProcessor from the checkpoint's files, without a video processor (the shim:
    transformers refuses a processor whose video processor class cannot be imported)."""
    from transformers import AutoTokenizer, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    class NoVideoProcessor(LlavaOnevisionProcessor):
        def check_argument_for_proper_class(self, name, arg):
            if name != "video_processor":
                return super().check_argument_for_proper_class(name, arg)

    kwargs = json.loads((model_dir / "processor_config.json").read_text())
    kwargs.pop("processor_class")
    return NoVideoProcessor(image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(model_dir),
                            tokenizer=AutoTokenizer.from_pretrained(model_dir), video_processor=None,
                            chat_template=(model_dir / "chat_template.jinja").read_text(), **kwargs)


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.export.tiny_llava_onevision import make_tiny_llava_onevision
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("llava_onevision")
    config = draw_config(2024)
    model_dir = make_tiny_llava_onevision(root / "hf", **config)
    export_model(model_dir, root / "out")  # checks every graph against its module (FamilyExport.atol 1e-4)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()
    return Pipeline.load(root / "out"), model, oracle_processor(model_dir), config


def user(n_images: int, text: str = QUESTION, n_videos: int = 0) -> list[dict]:
    content = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def check_tokens(ov, images, messages, **extra):
    """Prompt ids equal to the processor's, greedy tokens equal to transformers' generate on its inputs.
    The images go in nested per prompt, as apply_chat_template passes them: a prompt's count of
    pictures (batch_num_images) decides whether each is tiled or only its base view."""
    pipe, model, proc, _ = ov
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    ref = proc(images=[images] if images else None, text=[text], return_tensors="pt")
    ours = pipe.generate(messages=messages, images=images or None, max_new_tokens=NEW_TOKENS, **extra)
    assert ours.stats.num_prompt_tokens == ref["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**ref, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert_same_tokens(ours.token_ids, out[0, ref["input_ids"].shape[1]:].tolist(), NEW_TOKENS,
                       set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_kernel_pixels_equal_the_processor(ov, rng, backend):
    from vlmforge.kernels import tile_and_patchify

    pipe, _, proc, _ = ov
    spec = pipe.manifest.image.preprocess
    images = random_images(rng, KERNEL_SIZES)
    for image in images:
        ref = proc.image_processor(images=[image], return_tensors="np", input_data_format="channels_last")
        pixels, layout = tile_and_patchify(image, spec, backend=backend)
        np.testing.assert_array_equal(pixels, ref["pixel_values"][0])
        count = proc._get_number_of_features(*image.shape[:2], spec.tile_size, spec.tile_size)
        assert layout.num_image_tokens == count  # "full" strategy: nothing subtracted
    pair = images[3:5]  # a multi-image prompt: each picture its base view, padded to a square first
    ref = proc.image_processor(images=[pair], return_tensors="np", input_data_format="channels_last")
    for k, image in enumerate(pair):
        pixels, layout = tile_and_patchify(image, spec.for_images(2), backend=backend)
        np.testing.assert_array_equal(pixels[0], ref["pixel_values"][k][0])
        assert layout.num_image_tokens == proc.num_image_tokens + 1


def test_graphs_and_packing_match_transformers(ov, rng):
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.kernels.frames import frame_batch
    from vlmforge.runtime.features import pack_image_features, pack_video_features

    pipe, model, _, config = ov
    spec = pipe.manifest.image.preprocess
    image = random_images(rng, [SIZES[2]])[0]
    pixels, _ = tile_and_patchify(image, spec)
    features = pipe.vision.run({"pixel_values": pixels})["image_features"]
    embeds = pipe.connector.run({"image_features": features})["image_embeds"]
    packed = pack_image_features(embeds, image.shape[:2], spec, pipe.image_newline)
    frames = np.stack(random_images(rng, [(40, 52)] * 6))
    video_pixels, _ = frame_batch(frames, pipe.manifest.image.video_preprocess)
    video_embeds = pipe.connector.run({"image_features": pipe.vision.run({"pixel_values": video_pixels})["image_features"]})
    video = pack_video_features(video_embeds["image_embeds"], pipe.manifest.image.video_preprocess, pipe.image_newline)
    with torch.no_grad():
        tower = model.model.vision_tower(torch.as_tensor(pixels), output_hidden_states=True, return_dict=True)
        ref = tower.hidden_states[config["feature_layer"]]
        ref_embeds = model.model.multi_modal_projector(ref)
        ref_packed = model.model.get_image_features(torch.as_tensor(pixels)[None], torch.tensor([image.shape[:2]]),
                                                    batch_num_images=[1]).pooler_output[0]
        ref_video = model.model.get_video_features(torch.as_tensor(video_pixels)[None]).pooler_output[0]
    assert np.abs(features - ref.numpy()).max() < 1e-4
    assert np.abs(embeds - ref_embeds.numpy()).max() < 1e-4
    assert packed.shape == tuple(ref_packed.shape) and np.abs(packed - ref_packed.numpy()).max() < 1e-4
    assert video.shape == tuple(ref_video.shape) and np.abs(video - ref_video.numpy()).max() < 1e-4
    per = spec.tile_size // spec.patch_size
    assert packed.shape[0] < per * per * pixels.shape[0]  # this grid was over the budget: downsampled
    assert_cached_step_equals_forward(pipe, model.model.language_model, model.lm_head, model.config.text_config.hidden_size)


@pytest.mark.parametrize("size", SIZES, ids=["1000x120", "70x45", "150x200"])
def test_greedy_tokens_on_three_aspect_ratios(ov, rng, size):
    check_tokens(ov, random_images(rng, [size]), user(1))


def test_two_images_and_text_only(ov, rng):
    check_tokens(ov, random_images(rng, SIZES[:2]), user(2, "Which picture is brighter?"))
    check_tokens(ov, [], [{"role": "user", "content": "Describe a cat on a red chair."}])


def test_video_of_six_frames(ov, rng):
    """Six frames: the prompt the processor's replace_video_token expands, transformers fed our frames."""
    from vlmforge.kernels.frames import frame_batch

    pipe, model, proc, _ = ov
    frames = np.stack(random_images(rng, [(36, 48)] * 6))
    messages = user(0, "What happens in the video?", n_videos=1)
    pixels, layout = frame_batch(frames, pipe.manifest.image.video_preprocess)
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    text = text.replace(proc.video_token, proc.replace_video_token({"pixel_values_videos": [pixels]}, 0))
    ids = proc.tokenizer(text, return_tensors="pt")["input_ids"]
    ours = pipe.generate(messages=messages, videos=[frames], max_new_tokens=NEW_TOKENS)
    assert ours.stats.num_prompt_tokens == ids.shape[1]
    assert layout.num_image_tokens == int((ids == model.config.video_token_id).sum())
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             pixel_values_videos=torch.as_tensor(pixels)[None], do_sample=False)
    assert_same_tokens(ours.token_ids, out[0, ids.shape[1]:].tolist(), NEW_TOKENS,
                       set(pipe.manifest.tokenizer.eos_token_ids))


def test_video_frames_are_the_image_processor_resize(ov, rng):
    """Each frame: the tower's square, resized as the PIL image processor resizes (the video
    processor's own torchvision resize cannot run here)."""
    from PIL import Image

    from vlmforge.kernels.frames import frame_batch

    pipe, _, proc, _ = ov
    spec = pipe.manifest.image.video_preprocess
    frames = np.stack(random_images(rng, [(36, 48)] * 2))
    pixels, _ = frame_batch(frames, spec, backend="numpy")
    for frame, ours in zip(frames, pixels):
        resized = np.asarray(Image.fromarray(frame).resize((spec.tile_size,) * 2, Image.BICUBIC), dtype=np.float32)
        ref = proc.image_processor.normalize(proc.image_processor.rescale(resized.transpose(2, 0, 1), 1 / 255),
                                             spec.mean, spec.std)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("ratio, match", [("anyres", "anyres_max_N"), ("anyres_max_0", "anyres_max_N")])
def test_unsupported_aspect_ratio_is_refused(ratio, match):
    from vlmforge.export.families.llava_onevision import max_tiles

    with pytest.raises(ValueError, match=match):
        max_tiles(ratio)


@pytest.mark.parametrize("size", [(120, 1000), (1000, 120), (480, 640), (2000, 1500)])
def test_hub_geometry_packing_equals_transformers(size):
    """The released checkpoints' geometry without their weights: 384 px tiles of 14 px patches (27
    kept a side, the tile is no whole number of patches), the hub's 6×6 pinpoints, anyres_max_9 —
    our token count and packed features against LlavaOnevisionModel.pack_image_features run on the
    same random per-tile features (the model method on a stand-in holding only the config it reads)."""
    from types import SimpleNamespace

    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    from vlmforge.export.families.llava_onevision import preprocess_spec
    from vlmforge.kernels.anyres import anyres_tiles_layout, pack_anyres_features

    pinpoints = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
    config = LlavaOnevisionConfig(vision_config={"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14},
                                  image_grid_pinpoints=pinpoints)
    spec = preprocess_spec({"size": {"height": 384, "width": 384}, "image_grid_pinpoints": pinpoints}, config,
                           "anyres_max_9")
    layout = anyres_tiles_layout(size, spec)
    features = np.random.default_rng(0).standard_normal((layout.num_tiles, 27 * 27, 8)).astype(np.float32)
    newline = np.arange(8, dtype=np.float32)
    ours = pack_anyres_features(features, size, spec, newline)
    stand_in = SimpleNamespace(config=config)
    with torch.no_grad():
        ref = LlavaOnevisionModel.pack_image_features(stand_in, [torch.as_tensor(features)], torch.tensor([size]),
                                                      torch.as_tensor(newline))[0][0]
    assert ours.shape == tuple(ref.shape) == (layout.num_image_tokens, 8)
    assert np.abs(ours - ref.numpy()).max() < 1e-5
    from transformers import LlavaOnevisionProcessor

    proc = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=pinpoints), num_image_tokens=729,
                           vision_aspect_ratio="anyres_max_9")
    proc._get_unpadded_features = lambda *a: LlavaOnevisionProcessor._get_unpadded_features(proc, *a)
    assert layout.num_image_tokens == LlavaOnevisionProcessor._get_number_of_features(proc, *size, 384, 384)
