"""Idefics3 and SmolVLM (SigLIP → pixel shuffle + linear → Llama): the split kernel against the
checkpoint's PIL image processor, each graph against its torch module, the prompt's ids against
the processor's (Idefics3Processor; for SmolVLM its image processor, ``get_image_prompt_string`` and
tokenizer, as SmolVLMProcessor joins them), greedy tokens against transformers' generate on
three aspect ratios (one extreme), two images and text alone, and a SmolVLM configuration drawn
at random."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from parity import assert_cached_step_equals_forward, assert_same_tokens, hf_generate_ids
from vlmforge.kernels import tile_and_patchify
from vlmforge.runtime import Pipeline

NEW_TOKENS = 24
# tiles of 32 px after a longest-edge resize to 96: (rows, cols) 3×3, 1×3, 3×1 (1:8), then 2×3 and 3×2
GRIDS = {"square": [(40, 40)], "3:1": [(30, 90)], "1:8": [(160, 20)], "two-images": [(60, 90), (90, 45)],
         "text-only": []}
KERNEL_SIZES = [(40, 40), (30, 90), (160, 20), (20, 160), (3, 5), (1, 1), (1, 300), (333, 500), (32, 32)]


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def pil(images):
    """The processor's input as PIL images: a tiny (3, w, 3) array would be read channels-first."""
    from PIL import Image

    return [Image.fromarray(i) for i in images]


class Reference:
    """The checkpoint's processing as transformers does it: Idefics3Processor, or (SmolVLM, whose
    processor needs num2words and torchvision) its image processor, the module's
    ``get_image_prompt_string`` and the tokenizer — what SmolVLMProcessor.__call__ joins."""

    def __init__(self, model_dir):
        from transformers import AutoTokenizer
        from vlmforge.export.tiny_idefics3 import image_processor_class

        config = json.loads((model_dir / "config.json").read_text())
        self.model_type = config["model_type"]
        self.seq_len = json.loads((model_dir / "processor_config.json").read_text())["image_seq_len"]
        self.image_processor = image_processor_class(self.model_type).from_pretrained(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.model_type == "idefics3":
            from transformers import Idefics3Processor

            self.processor = Idefics3Processor(self.image_processor, self.tokenizer, image_seq_len=self.seq_len)

    def pixels(self, images) -> dict:
        return self.image_processor(images=[pil(images)], return_tensors="pt", return_row_col_info=True)

    def __call__(self, images, text: str) -> dict:
        if self.model_type == "idefics3":
            return dict(self.processor(images=pil(images) or None, text=text, return_tensors="pt"))
        from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

        inputs = self.pixels(images) if images else {}
        pieces = text.split("<image>")
        for i, rest in enumerate(pieces[1:]):
            rows, cols = inputs["rows"][0][i], inputs["cols"][0][i]
            pieces[i + 1] = get_image_prompt_string(rows, cols, self.seq_len, "<fake_token_around_image>", "<image>",
                                                    "<global-img>") + rest
        ids = self.tokenizer("".join(pieces), return_tensors="pt")
        pixels = {k: inputs[k] for k in ("pixel_values", "pixel_attention_mask") if k in inputs}
        return {**ids, **pixels}


def hf_model(model_dir):
    import transformers

    arch = json.loads((model_dir / "config.json").read_text())["architectures"][0]
    return getattr(transformers, arch).from_pretrained(model_dir, attn_implementation="eager",
                                                       dtype=torch.float32).eval()


def export(root, **config):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_idefics3 import make_tiny_idefics3

    model_dir = make_tiny_idefics3(root / "hf", **config)
    export_model(model_dir, root / "out")  # checks every graph against its module (FamilyExport.atol 1e-4)
    return model_dir, Pipeline.load(root / "out")


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    model_dir, pipe = export(tmp_path_factory.mktemp("idefics3"))
    return model_dir, pipe, hf_model(model_dir), Reference(model_dir)


def check_kernel(pipe, ref: Reference, sizes, backends=("numpy", "c")):
    spec = pipe.manifest.image.preprocess
    for image in _images(sizes):
        want = ref.pixels([image])
        for backend in backends:
            pixels, layout = tile_and_patchify(image, spec, backend=backend)
            np.testing.assert_array_equal(pixels, want["pixel_values"][0].numpy())
        assert layout.grid == (want["rows"][0][0], want["cols"][0][0])


def test_kernel_matches_the_processor(idefics3):
    _, pipe, _, ref = idefics3
    check_kernel(pipe, ref, KERNEL_SIZES)


def test_the_cuda_geometry_on_the_host(idefics3):
    """What the CUDA tiler runs — placements read off the host-made source picture — written by the
    NumPy executor equals the kernel's output (the GPU itself is tested in test_kernels_cuda.py)."""
    from vlmforge.kernels.plan import normalise_lut, run_placement
    from vlmforge.kernels.split import split_source, split_source_plan

    spec = idefics3[1].manifest.image.preprocess
    for image in _images(KERNEL_SIZES):
        want, want_layout = tile_and_patchify(image, spec, backend="numpy")
        source = split_source(image, spec)
        placements, shape, layout = split_source_plan(source.shape[:2], spec)
        got = np.empty(shape, dtype=np.float32)
        for pl in placements:
            run_placement(source, pl, spec, got, normalise_lut(spec))
        assert layout == want_layout
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("side", [19, 25, 26, 27, 32])
def test_position_ids_follow_the_towers_buckets(side):
    """The constant position ids equal what Idefics3VisionEmbeddings buckets for a full patch mask —
    not always 0 … n−1 (at 19 and 25 patches a side float boundaries shift some down)."""
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.modeling_idefics3 import Idefics3VisionEmbeddings
    from vlmforge.export.families.idefics3.graphs import bucket_position_ids

    torch.manual_seed(side)
    emb = Idefics3VisionEmbeddings(Idefics3VisionConfig(hidden_size=8, image_size=side * 2, patch_size=2)).eval()
    pixels = torch.randn(2, 3, side * 2, side * 2)
    with torch.no_grad():
        want = emb(pixels, torch.ones(2, side, side, dtype=torch.bool))
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        got = patches + emb.position_embedding(bucket_position_ids(side, side))[None]
    assert torch.equal(got, want)
    assert (side in (19, 25)) == (not torch.equal(bucket_position_ids(side, side), torch.arange(side * side)))


def test_graphs_match_the_torch_modules(idefics3):
    _, pipe, model, _ = idefics3
    pixels, _ = tile_and_patchify(_images([(30, 90)])[0], pipe.manifest.image.preprocess)  # 3 tiles + global
    features = pipe.vision.run({"pixel_values": pixels})["image_features"]
    embeds = pipe.connector.run({"image_features": features})["image_embeds"]
    with torch.no_grad():
        ref = model.model.vision_model(torch.as_tensor(pixels)).last_hidden_state
        ref_embeds = model.model.get_image_features(torch.as_tensor(pixels)[None]).pooler_output[0]
    assert np.abs(features - ref.numpy()).max() < 1e-4
    assert embeds.reshape(-1, embeds.shape[-1]).shape == tuple(ref_embeds.shape)
    assert np.abs(embeds.reshape(ref_embeds.shape) - ref_embeds.numpy()).max() < 1e-4
    assert_cached_step_equals_forward(pipe, model.model.text_model, model.lm_head, model.config.text_config.hidden_size)


def check_generation(pipe, model, ref: Reference, images, question="What is in the picture?"):
    """Prompt ids equal to the processor's (row / column marks and the global view around each
    tile's slots), and greedy tokens equal to transformers' generate on the processor's inputs."""
    text = pipe.turn_prompt(question, len(images))
    inputs = ref(images, text)
    ours = pipe.generate(text, images=images, max_new_tokens=NEW_TOKENS)
    assert ours.stats.num_prompt_tokens == inputs["input_ids"].shape[1]
    theirs = hf_generate_ids(model, NEW_TOKENS, **inputs)
    assert_same_tokens(ours.token_ids, theirs, NEW_TOKENS, set(pipe.manifest.tokenizer.eos_token_ids))
    return ours, inputs


def prompt_ids(pipe, images, text):
    """Our prompt's ids, prepared as generate prepares them."""
    from vlmforge.runtime.serving.request import make_request
    from vlmforge.runtime.stats import StageTimer

    return pipe.prepare(make_request(text, images, {}), StageTimer()).input_ids


@pytest.mark.parametrize("name", list(GRIDS))
def test_greedy_tokens_match_transformers(idefics3, name):
    _, pipe, model, ref = idefics3
    images = _images(GRIDS[name], seed=len(name))
    ours, inputs = check_generation(pipe, model, ref, images)
    np.testing.assert_array_equal(prompt_ids(pipe, images, pipe.turn_prompt("What is in the picture?", len(images))),
                                  inputs["input_ids"][0].numpy())
    grids = [tile_and_patchify(i, pipe.manifest.image.preprocess)[1].grid for i in images]
    assert grids == {"square": [(3, 3)], "3:1": [(1, 3)], "1:8": [(3, 1)], "two-images": [(2, 3), (3, 2)],
                     "text-only": []}[name]
    per_tile = pipe.manifest.image.preprocess.tokens_per_tile
    assert ours.stats.image_tokens == [per_tile] * sum(r * c + 1 for r, c in grids)


def test_the_prompt_speaks_idefics3(idefics3):
    _, pipe, _, _ = idefics3
    assert pipe.turn_prompt("Hi?", 1) == "<|begin_of_text|>User:<image>Hi?<end_of_utterance>\nAssistant:"
    image = pipe.manifest.image
    assert image.preprocess.scheme == "split"
    assert image.tile_prompt.tile == "<fake_token_around_image><row_{row}_col_{col}>{image}"


@pytest.mark.parametrize("grid", [(0, 0), (1, 1), (2, 3), (4, 1)])
def test_the_tile_prompt_renders_the_processors_text(idefics3, grid):
    """runtime/tile_prompt.py's text, each tile's placeholder widened to its slots, equals SmolVLM's
    ``get_image_prompt_string`` (Idefics3Processor.replace_image_token writes the same)."""
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string
    from vlmforge.runtime.tile_prompt import render_tiles

    n = idefics3[1].manifest.image.preprocess.tokens_per_tile
    ours = render_tiles(idefics3[1].manifest.image.tile_prompt, grid, "<image>").replace("<image>", "<image>" * n)
    assert ours == get_image_prompt_string(*grid, n, "<fake_token_around_image>", "<image>", "<global-img>")


def _random_config(seed: int) -> dict:
    """Tower and decoder sizes, patch, tile (whole patches or not), pixel-shuffle factor, resize edge (a
    multiple of the tile or not) and splitting on or off, from a seed."""
    r = np.random.default_rng(seed)
    vision_heads, heads = int(r.choice([2, 4])), int(r.choice([2, 4]))
    patch, scale = int(r.choice([2, 4])), int(r.choice([1, 2, 3]))
    # tiles of whole patches or not (the conv drops the rest, as SmolVLM2-2.2B's 384 px / 14)
    image_size = patch * scale * int(r.choice([2, 3])) + int(r.integers(0, patch))
    return dict(model_type="smolvlm", vision_hidden=vision_heads * int(r.choice([8, 16])),
                vision_layers=int(r.integers(1, 3)), vision_heads=vision_heads, patch_size=patch, scale_factor=scale,
                image_size=image_size, longest_edge=int(image_size * r.choice([1.5, 2, 2.5])),
                split=bool(r.random() < 0.8), hidden=heads * int(r.choice([8, 16])), layers=int(r.integers(1, 3)),
                heads=heads, kv_heads=int(r.choice([k for k in (1, 2, 4) if heads % k == 0])), seed=seed)


DRAWN = _random_config(5)  # another seed draws another configuration


def test_smolvlm_configuration_drawn_at_random(tmp_path):
    model_dir, pipe = export(tmp_path, **DRAWN)
    model, ref = hf_model(model_dir), Reference(model_dir)
    assert pipe.manifest.architecture == "SmolVLMForConditionalGeneration"
    check_kernel(pipe, ref, [(50, 120), (7, 300), (64, 64)], backends=("c",))
    for sizes in ([(50, 120)], [(80, 30), (40, 40)]):
        images = _images(sizes, seed=3)
        _, inputs = check_generation(pipe, model, ref, images, "Describe it.")
        np.testing.assert_array_equal(prompt_ids(pipe, images, pipe.turn_prompt("Describe it.", len(images))),
                                      inputs["input_ids"][0].numpy())


@pytest.mark.parametrize("edit,match", [
    (("processor_config.json", {"image_seq_len": 5}), "image_seq_len=5"),
    (("processor_config.json", {"image_processor": {"size": {"height": 64, "width": 64}}}), "longest_edge"),
    (("processor_config.json", {"image_processor": {"max_image_size": {"longest_edge": 30}}}), "7 patches of 4"),
    (("processor_config.json", {"image_processor": {"do_resize": False}}), "do_resize"),
    (("config.json", {"model_type": "idefics2"}), "idefics3"),
], ids=["seq-length", "size-form", "tile-patches", "no-resize", "model-type"])
def test_bad_checkpoints_are_refused(idefics3, tmp_path, edit, match):
    from vlmforge.export.families.idefics3 import prepare

    model_dir = shutil.copytree(idefics3[0], tmp_path / "hf")
    name, updates = edit
    data = json.loads((model_dir / name).read_text())
    for key, value in updates.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    (model_dir / name).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        prepare(model_dir)
