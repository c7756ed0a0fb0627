"""VILA / VILA1.5 (NVlabs, not in transformers): our export of the original checkpoint layout
against the original code (../shared/reference/vila: VILA's vendored SigLIP, MultimodalProjector,
BasicImageEncoder, LlavaMetaForCausalLM._embed / generate over a Qwen2 or Llama LLM).

The oracle must import: a missing one fails here (it is the only reference this family has).
Its harness stages neither tokenisation nor image preprocessing: tokens are compared on our prompt
ids (each image's slot run given to the original as one ``<image>`` id, which it expands itself),
and our pixels are compared with the original's recipe (PIL resize / pad + SiglipImageProcessor)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user

QUESTION = "What is in the picture?"


def oracle():
    return load_harness("vila")


def build(root: pathlib.Path, seed: int = 0, projector: str = "mlp_downsample", aspect: str | None = "resize"):
    """(our pipeline, the original model, the checkpoint folder): the original's weights written in
    VILA's layout, with planted checkpoint code, exported by us."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_vila import make_tiny_vila
    from vlmforge.runtime import Pipeline

    model, _, _ = oracle().build_tiny(seed=seed, projector=projector)
    tower = model.vision_tower
    model_dir = make_tiny_vila(root / "hf", model.state_dict(), model.llm.config, tower.vision_tower.config,
                               tower.image_processor, projector=projector, image_aspect_ratio=aspect)
    plant_code(model_dir, root / "ran.txt")
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model, model_dir


def plant_code(model_dir: pathlib.Path, marker: pathlib.Path) -> None:
    """Python files in every folder of the checkpoint, named by auto_map, that would leave ``marker`` if run."""
    planted = f"open({str(marker)!r}, 'w').write('executed')\n"
    for folder, name, auto in (("", "modeling_vila.py", "AutoModel"), ("llm", "modeling_llm.py", "AutoModelForCausalLM"),
                               ("vision_tower", "modeling_siglip.py", "AutoModel"),
                               ("mm_projector", "modeling_projector.py", "AutoModel")):
        (model_dir / folder / name).write_text(planted)
        path = model_dir / folder / "config.json"
        config = json.loads(path.read_text())
        config["auto_map"] = {"AutoConfig": f"{name[:-3]}.Config", auto: f"{name[:-3]}.Model"}
        path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("vila"))


def pixels_of(pipe, image) -> np.ndarray:
    from vlmforge.kernels import tile_and_patchify

    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    assert pixels.shape[0] == 1  # one tile per picture
    return pixels[0]


def oracle_ids(prepared) -> torch.Tensor:
    """Our prompt ids with each image's run of slots collapsed to one <image> id (the original
    expands it into the image's tokens and the end tokens itself)."""
    ids, keep = prepared.input_ids, np.ones(len(prepared.input_ids), bool)
    for start, count in prepared.image_slots:
        keep[start + 1 : start + count] = False
    return torch.as_tensor(ids[keep])[None]


def compare(pipe, model, images, prompt=None, messages=None, n=24):
    """Our greedy tokens equal the original's (cut at its first end-of-turn token, where ours stop)."""
    ours = pipe.generate(prompt=prompt, messages=messages, images=images, max_new_tokens=n)
    per_image = pipe.manifest.image.preprocess.tokens_per_tile
    prepared = pipe.prompter.prepare_prompt(prompt, messages, len(images), [per_image] * len(images))
    media = {"image": [torch.as_tensor(pixels_of(pipe, im)) for im in images]} if images else {}
    theirs = oracle().greedy(model, {"input_ids": oracle_ids(prepared), "media": media}, n)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    assert_same_until_eos(ours.token_ids, theirs, n, eos)
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes(tiny, rng):
    pipe, model, _ = tiny
    for image in random_images(rng, [(60, 80), (120, 40), (14, 210)]):  # the last 1:15
        ours = compare(pipe, model, [image], messages=user(None, QUESTION))
        assert ours.stats.num_image_tokens == 16 + 1  # 7×7 SigLIP grid padded to 8×8, 2×2-merged; "\n"


def test_two_pictures_and_text_only(tiny, rng):
    pipe, model, _ = tiny
    images = random_images(rng, [(50, 90), (90, 50)])
    ours = compare(pipe, model, images, messages=user(None, None, "Which is larger?"))
    assert ours.stats.image_tokens == [17, 17]
    compare(pipe, model, images, prompt="<image>left, <image>right: which is larger?")
    compare(pipe, model, [], messages=[{"role": "user", "content": "Tell me a story about a cat."}])


def test_prompt_ids_are_the_originals(tiny):
    """The chat template gives what VILA's tokenize_conversation gives: each message stripped, a
    picture as a bare <image>; our tokenizer's ids are the oracle's tokenizer's on plain text."""
    pipe, _, _ = tiny
    text = pipe.prompter.prompt_text(None, user("\n", None, "  What is it?  "), 1)  # stripped as one string
    assert text.endswith("<|im_start|>user\n<image>  What is it?<|im_end|>\n<|im_start|>assistant\n")
    plain = "<image>Describe it, café 😀."
    prepared = pipe.prompter.prepare_prompt(plain, None, 1, [17])
    assert oracle_ids(prepared)[0].tolist() == oracle().ByteTokenizer().encode(plain)
    assert pipe.manifest.tokenizer.eos_token_ids == [258]  # <|im_end|>: EOS and the template's end of turn


def test_graphs_equal_the_original_modules(tiny, rng):
    """Each graph within 1e-4 of the original's module on the same inputs."""
    import onnxruntime as ort

    pipe, model, _ = tiny
    run = {name: ort.InferenceSession(str(pipe.root / g.path), providers=["CPUExecutionProvider"])
           for name, g in pipe.manifest.graphs.items()}
    pixels = np.stack([pixels_of(pipe, im) for im in random_images(rng, [(70, 45), (45, 70)])])
    features = run["vision"].run(None, {"pixel_values": pixels})[0]
    embeds = run["connector"].run(None, {"image_features": features})[0]
    with torch.no_grad():
        their_features = model.vision_tower(torch.as_tensor(pixels))
        their_embeds = model.encoders["image"](list(torch.as_tensor(pixels)), {})
    np.testing.assert_allclose(features, their_features.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(embeds, torch.stack(their_embeds).numpy(), atol=1e-4, rtol=0)
    inputs = {"input_ids": torch.tensor([[5, 6, oracle().IMAGE_ID, 7, 8, 9]]),
              "media": {"image": [torch.as_tensor(pixels[0])]}}
    fused, _ = oracle().encode(model, inputs)
    llm = pipe.manifest.llm
    past = {i.name: np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32)
            for i in run["llm"].get_inputs() if i.name.startswith("past")}
    s = fused.shape[1]
    logits = run["llm"].run(None, {"inputs_embeds": fused.numpy(), "attention_mask": np.ones((1, s), np.int64),
                                   "position_ids": np.arange(s, dtype=np.int64)[None], **past})[0]
    with torch.no_grad():
        theirs = model.llm(inputs_embeds=fused).logits[:, -1]
    np.testing.assert_allclose(logits.reshape(theirs.shape), theirs.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("aspect", ["resize", "pad", None])
def test_preprocessing_equals_the_originals(tiny, rng, aspect):
    """process_image: 'resize' — PIL resize (its default, bicubic), then SiglipImageProcessor;
    'pad' — expand2square with the mean colour, then the processor; unset — the processor."""
    import dataclasses

    from PIL import Image

    from vlmforge.export.families.vila import image_spec
    from vlmforge.export.families.vila.config import parse_config
    from vlmforge.kernels import tile_and_patchify

    pipe, model, model_dir = tiny
    processor = model.vision_tower.image_processor
    c = dataclasses.replace(parse_config(model_dir), image_aspect_ratio=aspect)
    spec = image_spec(c, model.vision_tower.vision_tower.config, 500, 17).preprocess
    for image in random_images(rng, [(60, 80), (120, 40), (14, 210)]):
        pil = Image.fromarray(image)
        if aspect == "resize":
            pil = pil.resize((processor.size["width"], processor.size["height"]))
        elif aspect == "pad":
            w, h = pil.size
            side = max(w, h)
            square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in processor.image_mean))
            square.paste(pil, ((side - w) // 2, (side - h) // 2))
            pil = square
        ref = processor.preprocess(pil, return_tensors="np")["pixel_values"][0]
        ours, _ = tile_and_patchify(image, spec)
        np.testing.assert_allclose(ours[0], ref, atol=2e-6, rtol=0)


def test_a_random_configuration(tmp_path, rng, monkeypatch):
    """A seeded draw of what the fixture fixes: projector, decoder (Qwen2 or Llama), tower depth and
    grid, widths, heads, image aspect handling."""
    from transformers import LlamaConfig, LlamaForCausalLM

    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    h = oracle()
    side = int(draw.choice([4, 5, 6, 7]))
    heads = int(draw.choice([2, 4]))
    monkeypatch.setattr(h, "IMAGE", 14 * side)
    monkeypatch.setattr(h, "_TMP", [])
    monkeypatch.setattr(h, "TINY_SIGLIP", dict(h.TINY_SIGLIP, image_size=14 * side,
                                               num_hidden_layers=int(draw.choice([2, 3])),
                                               hidden_size=int(draw.choice([16, 32]))))
    monkeypatch.setattr(h, "TINY_LLM", dict(h.TINY_LLM, hidden_size=16 * heads * int(draw.choice([1, 2])),
                                            num_hidden_layers=int(draw.choice([1, 2])), num_attention_heads=heads,
                                            num_key_value_heads=int(draw.choice([1, heads]))))
    llama = bool(draw.integers(2))
    if llama:  # the original's _embed reads llm.model.embed_tokens: any transformers causal LM
        monkeypatch.setattr(h, "Qwen2ForCausalLM", LlamaForCausalLM)
        monkeypatch.setattr(h, "Qwen2Config", LlamaConfig)
    projector = str(draw.choice(["mlp_downsample", "mlp_downsample_3x3_fix"]))
    aspect = [None, "resize", "pad"][int(draw.integers(3))]
    pipe, model, _ = build(tmp_path, seed=seed, projector=projector, aspect=aspect)
    assert type(model.llm).__name__ == ("LlamaForCausalLM" if llama else "Qwen2ForCausalLM")
    image = random_images(rng, [(int(draw.integers(20, 120)), int(draw.integers(20, 120)))])[0]
    ours = compare(pipe, model, [image], messages=user(None, QUESTION))
    k = 2 if projector == "mlp_downsample" else 3
    assert ours.stats.num_image_tokens == (-(-side // k)) ** 2 + 1, (seed, side, projector)


def test_the_checkpoints_python_never_runs(tiny, rng):
    """``build`` planted modeling files (named in every config's auto_map) that write a marker: export ran, now run too."""
    pipe, _, model_dir = tiny
    pipe.generate(messages=user(None, "hi"), images=random_images(rng, [(30, 30)]), max_new_tokens=2)
    assert (model_dir / "llm" / "modeling_llm.py").read_text().startswith("open(")
    assert not (model_dir.parent / "ran.txt").exists()


@pytest.mark.parametrize("change, message", [
    ({"s2": True}, "s2=true"),
    ({"image_aspect_ratio": "dynamic"}, "image_aspect_ratio 'dynamic' is not supported"),
    ({"mm_vision_select_feature": "patch"}, "SigLIP has no CLS token"),
    ({"hidden_size": 7}, "do not belong together"),
    ({"chat_template": "qwen2"}, "a file of VILA's package"),
    ({"llm_cfg": "Efficient-Large-Model/some-llm"}, "a model elsewhere"),
])
def test_unsupported_checkpoints_are_refused(tiny, tmp_path, change, message):
    import shutil

    from vlmforge.export import export_model

    _, _, model_dir = tiny
    copy = pathlib.Path(shutil.copytree(model_dir, tmp_path / "hf"))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        export_model(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_projector_is_refused(tiny, tmp_path):
    import shutil

    from vlmforge.export import export_model

    _, _, model_dir = tiny
    copy = pathlib.Path(shutil.copytree(model_dir, tmp_path / "hf"))
    (copy / "mm_projector" / "config.json").write_text(json.dumps({"model_type": "v2l_projector",
                                                                   "mm_projector_type": "linear"}))
    with pytest.raises(ValueError, match="mm_projector_type 'linear'"):
        export_model(copy, tmp_path / "out")


def test_missing_weights_are_refused(tiny, tmp_path):
    """transformers would initialise a missing tensor at random and only warn; the export refuses."""
    import shutil

    from safetensors.torch import load_file, save_file

    from vlmforge.export import export_model

    _, _, model_dir = tiny
    copy = pathlib.Path(shutil.copytree(model_dir, tmp_path / "hf"))
    state = load_file(str(copy / "llm" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "layers.0.mlp" not in k}, str(copy / "llm" / "model.safetensors"))
    with pytest.raises(ValueError, match="llm/ lacks weights"):
        export_model(copy, tmp_path / "out")
