"""Hostile and odd inputs at the runtime's door (issue #19 parts 5-7): manifests that name paths
outside their folder or hold wrong types, transparent and oversized pictures, and generation
arguments that are NaN, of the wrong type or not valid Unicode. Each ends in a clean error that
names the field or argument, or in the answer transformers gives."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from vlmforge.runtime import ImageError, ManifestError, Pipeline, PromptError
from vlmforge.runtime.images import load_image
from vlmforge.runtime.manifest import load_manifest

PROMPT = "USER: <image>\nWhat is it? ASSISTANT:"


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    return Pipeline.load(tiny_llava[1])


@pytest.fixture(scope="module")
def export_copy(tiny_llava, tmp_path_factory):
    """A private copy of the export whose manifest each case rewrites (the shared one stays intact)."""
    dst = tmp_path_factory.mktemp("manifest_cases") / "out"
    shutil.copytree(tiny_llava[1], dst)
    return dst


# -- part 5: manifests stay inside their folder, every field type-checked -------------------------------

def _set(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[int(last) if isinstance(data, list) else last] = value


PATH_CASES = [  # (field, value, what the error must say)
    ("graphs.llm.path", "/etc/passwd", "absolute path"),
    ("graphs.vision.path", "../../outside.onnx", "climbs out"),
    ("embeddings.name", "..\\embed_tokens.npy", "climbs out"),
    ("tokenizer.path", "C:\\tokenizer.json", "absolute path"),
    ("graphs.connector.path", "not_hashed.onnx", "not one of the hashed artifacts"),
    ("tokenizer.path", "", "must be a"),
]
TYPE_CASES = [  # (field, wrong value, the field name the error must carry)
    ("llm.num_layers", "2", "manifest.llm.num_layers must be an integer"),
    ("llm.max_context", 2.5, "manifest.llm.max_context must be an integer"),
    ("llm.num_kv_heads", True, "manifest.llm.num_kv_heads must be an integer"),
    ("graphs", [], "manifest.graphs must be an object"),
    ("graphs.llm.inputs", {"a": 1}, "manifest.graphs.llm.inputs must be a list"),
    ("graphs.llm.inputs.0.shape", "batch", "manifest.graphs.llm.inputs[0].shape must be a list"),
    ("image.preprocess.size", ["336"], "manifest.image.preprocess.size[0] must be an integer"),
    ("image.preprocess.mean", [0.5, None, 0.5], "manifest.image.preprocess.mean[1] must be a finite number"),
    ("image.preprocess.grid_pinpoints", [[60, "x"]], "manifest.image.preprocess.grid_pinpoints[0][1]"),
    ("image.image_token_id", None, "manifest.image.image_token_id must be an integer"),
    ("image", None, "manifest.image must be an object"),
    ("tokenizer.eos_token_ids", 2, "manifest.tokenizer.eos_token_ids must be a list"),
    ("tokenizer.chat_template", 7, "manifest.tokenizer.chat_template must be a string"),
    ("capabilities.uses_mrope", "yes", "manifest.capabilities.uses_mrope must be true or false"),
    ("generation.temperature", float("nan"), "manifest.generation.temperature must be a finite number"),
    ("generation.stop_strings", "###", "manifest.generation.stop_strings must be a list"),
    ("embeddings.shape", {"rows": 1}, "manifest.embeddings.shape must be a list"),
    ("version", "1", "manifest.version must be an integer"),
    ("image.placement", "sideways", "unknown image placement"),
    ("image.preprocess.scheme", "mystery", "unknown preprocessing scheme"),
]
TYPE_CASES.append(("artifacts", {"llm.onnx": {"sha256": 5, "bytes": 1}}, "manifest.artifacts.llm.onnx.sha256 must be a string"))


def _with_manifest(folder, field: str, value):
    original = (folder / "manifest.json").read_text()
    data = json.loads(original)
    _set(data, field, value)
    (folder / "manifest.json").write_text(json.dumps(data))
    return original


@pytest.mark.parametrize("field,value,match", PATH_CASES + TYPE_CASES)
def test_manifest_fields_are_checked_by_name(export_copy, field, value, match):
    original = _with_manifest(export_copy, field, value)
    try:
        with pytest.raises(ManifestError, match=match.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
            load_manifest(export_copy, verify=False)
    finally:
        (export_copy / "manifest.json").write_text(original)


def test_symlink_out_of_the_folder_is_refused(export_copy, tmp_path):
    outside = tmp_path / "secret.onnx"
    shutil.copy(export_copy / "connector.onnx", outside)
    link = export_copy / "connector_link.onnx"
    os.symlink(outside, link)
    data = json.loads((export_copy / "manifest.json").read_text())
    data["artifacts"]["connector_link.onnx"] = dict(data["artifacts"]["connector.onnx"])
    original = _with_manifest(export_copy, "graphs.connector.path", "connector_link.onnx")
    try:
        patched = json.loads((export_copy / "manifest.json").read_text())
        patched["artifacts"] = data["artifacts"]
        (export_copy / "manifest.json").write_text(json.dumps(patched))
        with pytest.raises(ManifestError, match="leads outside the export folder"):
            load_manifest(export_copy, verify=False)
    finally:
        link.unlink()
        (export_copy / "manifest.json").write_text(original)
    load_manifest(export_copy)  # restored: loads and verifies


# -- part 6: images as transformers sees them ------------------------------------------------------------

def _transparent_pictures(tmp_path) -> dict:
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (36, 44, 4), dtype=np.uint8)
    files = {}
    Image.fromarray(rgba).save(files.setdefault("rgba", tmp_path / "rgba.png"))
    Image.fromarray(np.ascontiguousarray(rgba[:, :, [0, 3]])).save(files.setdefault("la", tmp_path / "la.png"))
    pal = Image.fromarray(rgba[:, :, :3]).quantize(16)
    pal.info["transparency"] = 3
    pal.save(files.setdefault("p", tmp_path / "p.png"), transparency=3)
    return files


def test_transparency_composited_like_transformers(tmp_path):
    from transformers.image_transforms import convert_to_rgb

    for kind, path in _transparent_pictures(tmp_path).items():
        with Image.open(path) as img:
            theirs = convert_to_rgb(img, return_numpy=True)
        ours = load_image(path)
        np.testing.assert_array_equal(ours, theirs, err_msg=kind)
        assert (ours != np.asarray(Image.open(path).convert("RGB"))).any(), f"{kind}: alpha was not composited"
    arr = np.random.default_rng(3).integers(0, 256, (20, 24, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(arr), convert_to_rgb(arr, return_numpy=True))


def test_transparent_png_gives_transformers_tokens(tiny_llava, pipe, tmp_path):
    from parity import hf_generate
    from test_llava import _hf, _processor

    model_dir, _ = tiny_llava
    for kind, path in _transparent_pictures(tmp_path).items():
        inputs = _processor(model_dir, pipe)(images=Image.open(path), text=PROMPT, return_tensors="np")
        theirs = hf_generate(_hf(model_dir), inputs["input_ids"][0], inputs["pixel_values"], 6)
        ours = pipe.generate(PROMPT, images=[str(path)], max_new_tokens=6).token_ids
        assert ours == theirs[: len(ours)] and len(ours) >= 1, kind


def _bomb(path, side: int = 13000):
    """A PNG that declares side×side pixels in ~100 KB (1-bit, all zero)."""
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_pixel_limit_is_read_from_the_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000

    def no_decode(self, *a, **k):
        raise AssertionError("the picture was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError, match=r"13000×13000 = 169,000,000 pixels, over the limit of 50,000,000"):
        load_image(bomb)


def test_pixel_limit_is_configurable(tiny_llava, tmp_path):
    picture = tmp_path / "small.png"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(picture)
    strict = Pipeline.load(tiny_llava[1], max_image_pixels=4000)
    with pytest.raises(ImageError, match="80×60 = 4,800 pixels, over the limit of 4,000"):
        strict.generate(PROMPT, images=[picture], max_new_tokens=1)
    with pytest.raises(ValueError, match="max_image_pixels must be a positive integer"):
        Pipeline.load(tiny_llava[1], max_image_pixels=-1)


def test_a_folder_is_not_an_image(pipe, tmp_path):
    with pytest.raises(ImageError, match="is a folder, not an image file"):
        pipe.generate(PROMPT, images=[tmp_path], max_new_tokens=1)


# -- part 7: arguments checked at the door --------------------------------------------------------------

BAD_ARGUMENTS = [  # (keyword arguments, the name the error must carry)
    (dict(temperature=math.nan, do_sample=True), "temperature"),
    (dict(temperature=math.inf, do_sample=True), "temperature"),
    (dict(temperature=-1.0, do_sample=True), "temperature"),
    (dict(temperature="hot", do_sample=True), "temperature"),
    (dict(top_p=math.nan, do_sample=True), "top_p"),
    (dict(top_p=0.0, do_sample=True), "top_p"),
    (dict(top_p=1.5, do_sample=True), "top_p"),
    (dict(repetition_penalty=math.nan), "repetition_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(repetition_penalty=math.inf), "repetition_penalty"),
    (dict(top_k=2.5, do_sample=True), "top_k"),
    (dict(top_k="3", do_sample=True), "top_k"),
    (dict(top_k=True, do_sample=True), "top_k"),
    (dict(top_k=-1, do_sample=True), "top_k"),
    (dict(seed=-1, do_sample=True), "seed"),
    (dict(seed="x", do_sample=True), "seed"),
    (dict(do_sample="yes"), "do_sample"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(max_new_tokens="3"), "max_new_tokens"),
    (dict(stop=[""]), "stop"),
    (dict(stop=[1]), "stop"),
    (dict(stop=5), "stop"),
]


@pytest.mark.parametrize("kwargs,name", BAD_ARGUMENTS)
def test_bad_generation_arguments(pipe, kwargs, name):
    with pytest.raises(ValueError, match=name):
        pipe.generate(PROMPT, images=[np.zeros((30, 30, 3), np.uint8)], **kwargs)


BAD_MESSAGES = [  # (messages, what the error must say)
    ([{"role": "user", "content": None}], r"messages\[0\]\['content'\] must be a string or a list"),
    ([{"content": "hi"}], r"messages\[0\] needs a 'role'"),
    ([{"role": "", "content": "hi"}], r"messages\[0\] needs a 'role'"),
    (["hello"], r"messages\[0\] must be a dict"),
    ([{"role": "user", "content": ["hello"]}], r"messages\[0\]\['content'\]\[0\] must be"),
    ([{"role": "user", "content": [{"type": "video"}]}], r"messages\[0\]\['content'\]\[0\] must be"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], r"messages\[0\]\['content'\]\[0\] must be"),
    ([{"role": "user", "content": [{"type": "text", "text": "a\ud800b"}]}], r"\['text'\] holds an unpaired surrogate"),
    ([], "non-empty list"),
    ({"role": "user", "content": "hi"}, "non-empty list"),
]


@pytest.mark.parametrize("messages,match", BAD_MESSAGES)
def test_bad_messages(pipe, messages, match):
    with pytest.raises(PromptError, match=match):
        pipe.generate(messages=messages, images=[], max_new_tokens=1)


@pytest.mark.parametrize("prompt,match", [("What\udcff is it?", "prompt holds an unpaired surrogate"),
                                          (b"USER: <image>", "prompt must be a string")])
def test_bad_prompt_text(pipe, prompt, match):
    with pytest.raises(PromptError, match=match):
        pipe.generate(prompt, images=[np.zeros((30, 30, 3), np.uint8)], max_new_tokens=1)


def test_a_single_stop_string_is_one_stop(pipe):
    image = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    free = pipe.generate(PROMPT, images=[image], max_new_tokens=12)
    assert len(free.text) >= 3
    stop = free.text[1:3]  # a string that occurs: as a list it stops there; as characters it would stop sooner
    as_list = pipe.generate(PROMPT, images=[image], max_new_tokens=12, stop=[stop])
    as_string = pipe.generate(PROMPT, images=[image], max_new_tokens=12, stop=stop)
    assert as_string.text == as_list.text and as_string.finish_reason == "stop"
