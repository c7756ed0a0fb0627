"""InternVL (InternViT → pixel shuffle + MLP → Qwen2): the dynamic-tile kernel against the checkpoint's
GotOcr2ImageProcessorPil as InternVLProcessor runs it, each graph against its torch module, the
prompt's ids against InternVLProcessor's, greedy tokens against transformers' generate on several
tile grids, two images and text alone, and a configuration drawn at random."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from parity import assert_cached_step_equals_forward, assert_same_tokens, hf_generate_ids
from vlmforge.kernels import tile_and_patchify
from vlmforge.runtime import Pipeline, PromptError

NEW_TOKENS = 24
# (h, w) → (rows, cols) under max_patches=6: 1×1 (no thumbnail), 1×3, 6×1 (1:8), 2×3 and 2×1, none
GRIDS = {"square": [(40, 40)], "3:1": [(30, 90)], "1:8": [(160, 20)], "two-images": [(50, 70), (90, 45)],
         "text-only": []}
KERNEL_SIZES = [(40, 40), (30, 90), (160, 20), (20, 160), (3, 5), (1, 1), (333, 500), (64, 96)]


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def pil(images):
    """The processor's input as PIL images: a tiny (3, w, 3) array would be read channels-first."""
    from PIL import Image

    return [Image.fromarray(i) for i in images] or None


def hf_processor(model_dir):
    """The checkpoint's InternVLProcessor. Its constructor insists on a video processor, which needs
    torchvision (not installed here), so the class check is skipped for this one construction; the
    image and text paths used below are the processor's own."""
    from transformers import AutoTokenizer, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    seq = json.loads((model_dir / "processor_config.json").read_text())["image_seq_length"]
    parts = dict(image_processor=GotOcr2ImageProcessorPil.from_pretrained(model_dir),
                 tokenizer=AutoTokenizer.from_pretrained(model_dir), video_processor=None, image_seq_length=seq)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
        return InternVLProcessor(**parts)


def hf_model(model_dir):
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager",
                                                            dtype=torch.float32).eval()


def export(root, **config):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_internvl import make_tiny_internvl

    model_dir = make_tiny_internvl(root / "hf", **config)
    export_model(model_dir, root / "out")  # checks every graph against its module (FamilyExport.atol 1e-4)
    return model_dir, Pipeline.load(root / "out")


@pytest.fixture(scope="module")
def internvl(tmp_path_factory):
    model_dir, pipe = export(tmp_path_factory.mktemp("internvl"))
    return model_dir, pipe, hf_model(model_dir), hf_processor(model_dir)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_kernel_matches_the_processor(internvl, backend):
    _, pipe, _, processor = internvl
    spec = pipe.manifest.image.preprocess
    for image in _images(KERNEL_SIZES):
        ref = processor(images=pil([image]), text="<IMG_CONTEXT>", return_tensors="np")
        pixels, layout = tile_and_patchify(image, spec, backend=backend)
        np.testing.assert_array_equal(pixels, ref["pixel_values"])
        assert layout.num_image_tokens == int((ref["input_ids"] == pipe.manifest.image.image_token_id).sum())


def test_graphs_match_the_torch_modules(internvl):
    _, pipe, model, _ = internvl
    pixels, _ = tile_and_patchify(_images([(30, 90)])[0], pipe.manifest.image.preprocess)  # 3 tiles + thumbnail
    features = pipe.vision.run({"pixel_values": pixels})["image_features"]
    embeds = pipe.connector.run({"image_features": features})["image_embeds"]
    layer = model.config.vision_feature_layer
    with torch.no_grad():
        tower = model.model.vision_tower(torch.as_tensor(pixels), output_hidden_states=True, return_dict=True)
        ref = (tower.last_hidden_state if layer == -1 else tower.hidden_states[layer])[:, 1:]
        ref_embeds = model.model.get_image_features(torch.as_tensor(pixels)).pooler_output
    assert np.abs(features - ref.numpy()).max() < 1e-4
    assert embeds.shape == tuple(ref_embeds.shape) and np.abs(embeds - ref_embeds.numpy()).max() < 1e-4
    assert_cached_step_equals_forward(pipe, model.model.language_model, model.lm_head, model.config.text_config.hidden_size)


def check_generation(pipe, model, processor, images, question="What is in the picture?"):
    """Prompt ids equal to InternVLProcessor's (<img> + tiles × image_seq_length slots + </img> per
    image), and greedy tokens equal to transformers' generate on the processor's inputs."""
    text = pipe.turn_prompt(question, len(images))
    ref = processor(images=pil(images), text=text, return_tensors="pt")
    counts = [tile_and_patchify(i, pipe.manifest.image.preprocess)[1].num_image_tokens for i in images]
    prepared = pipe.prepare_prompt(text, None, len(images), counts)
    np.testing.assert_array_equal(prepared.input_ids, ref["input_ids"][0].numpy())
    ours = pipe.generate(text, images=images, max_new_tokens=NEW_TOKENS)
    assert ours.stats.num_prompt_tokens == ref["input_ids"].shape[1]
    theirs = hf_generate_ids(model, NEW_TOKENS, **ref)
    assert_same_tokens(ours.token_ids, theirs, NEW_TOKENS, set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


@pytest.mark.parametrize("name", list(GRIDS))
def test_greedy_tokens_match_transformers(internvl, name):
    _, pipe, model, processor = internvl
    images = _images(GRIDS[name], seed=len(name))
    ours = check_generation(pipe, model, processor, images)
    grids = [tile_and_patchify(i, pipe.manifest.image.preprocess)[1].grid for i in images]
    # (rows, cols): the sizes were chosen to exercise different grids, with and without a thumbnail
    assert grids == {"square": [(1, 1)], "3:1": [(1, 3)], "1:8": [(6, 1)], "two-images": [(2, 3), (2, 1)],
                     "text-only": []}[name]
    per_tile = pipe.manifest.image.preprocess.tokens_per_tile
    assert ours.stats.image_tokens == [(r * c + (r * c > 1)) * per_tile for r, c in grids]


def test_the_prompt_speaks_internvl(internvl):
    _, pipe, _, _ = internvl
    assert pipe.turn_prompt("Hi?", 1) == "<|im_start|>user\n<IMG_CONTEXT>\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert pipe.manifest.image.span == ["<img>", "</img>"] and pipe.manifest.image.preprocess.scheme == "dynamic"
    with pytest.raises(PromptError, match="image placeholder"):
        pipe.generate(messages=[{"role": "user", "content": "look: <IMG_CONTEXT>"}], images=[], max_new_tokens=1)


def _random_config(seed: int) -> dict:
    """Tower and decoder sizes, feature layer, final norm, RMSNorm / QK-norm and the tile budget, from a seed."""
    r = np.random.default_rng(seed)
    vision_heads, heads = int(r.choice([2, 4])), int(r.choice([2, 4]))
    patch = int(r.choice([2, 4]))
    max_patches = int(r.choice([1, 2, 4, 9]))
    return dict(vision_hidden=vision_heads * int(r.choice([8, 16])), vision_layers=int(r.integers(1, 4)),
                vision_heads=vision_heads, patch_size=patch, image_size=patch * int(r.choice([4, 6, 8])),
                feature_layer=int(r.choice([-1, -2, 1])), use_mean_pooling=bool(r.random() < 0.5),
                norm_type=str(r.choice(["layer_norm", "rms_norm"])), use_qk_norm=bool(r.random() < 0.5),
                hidden=heads * int(r.choice([8, 16])), layers=int(r.integers(1, 3)), heads=heads,
                kv_heads=int(r.choice([k for k in (1, 2, 4) if heads % k == 0])),
                min_patches=int(r.integers(1, min(max_patches, 2) + 1)), max_patches=max_patches, seed=seed)


DRAWN = _random_config(2)  # another seed draws another configuration


def test_a_configuration_drawn_at_random(tmp_path):
    model_dir, pipe = export(tmp_path, **DRAWN)
    model, processor = hf_model(model_dir), hf_processor(model_dir)
    images = _images([(50, 120)], seed=3)
    ref = processor(images=pil(images), text="<IMG_CONTEXT>", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(tile_and_patchify(images[0], pipe.manifest.image.preprocess)[0], ref)
    check_generation(pipe, model, processor, images, "Describe it.")


@pytest.mark.parametrize("edit,match", [
    (("config.json", {"vision_feature_select_strategy": "full"}), "vision_feature_select_strategy"),
    (("preprocessor_config.json", {"size": {"height": 64, "width": 64}}), "differs from the vision tower"),
    (("processor_config.json", {"image_seq_length": 5}), "image_seq_length=5"),
    (("preprocessor_config.json", {"min_patches": 4, "max_patches": 2}), "min_tiles <= max_tiles"),
], ids=["full-strategy", "tile-size", "seq-length", "budget"])
def test_bad_checkpoints_are_refused(internvl, tmp_path, edit, match):
    from vlmforge.export.families.internvl import prepare

    model_dir = shutil.copytree(internvl[0], tmp_path / "hf")
    name, updates = edit
    data = json.loads((model_dir / name).read_text())
    (model_dir / name).write_text(json.dumps({**data, **updates}))
    with pytest.raises(ValueError, match=match):
        prepare(model_dir)
