"""Bad input gets a clear error that names the problem, and nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vlmforge.runtime import ImageError, ManifestError, Pipeline, PromptError

PROMPT = "USER: <image>\nWhat is it? ASSISTANT:"


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    return Pipeline.load(tiny_llava[1])


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_missing_model_folder(tmp_path):
    from vlmforge.export import export_model

    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_model(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_family_names_the_supported_ones(tmp_path):
    from vlmforge.export import export_model

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "lava", "architectures": ["X"]}))
    with pytest.raises(ValueError, match=r"not supported.*llava.*closest supported one is 'llava'"):
        export_model(tmp_path / "m", tmp_path / "out")


def test_failed_export_leaves_nothing(tiny_llava, tmp_path):
    from vlmforge.export import export_model

    model_dir = tmp_path / "broken"
    shutil.copytree(tiny_llava[0], model_dir)
    (model_dir / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no image processor config"):
        export_model(model_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [model_dir]  # no out/, no temporary folder


def test_existing_output_is_not_overwritten(tiny_llava, tmp_path):
    from vlmforge.export import export_model

    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_model(tiny_llava[0], tmp_path / "out")


def test_unreadable_and_truncated_images(pipe, tmp_path, image):
    from PIL import Image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    with pytest.raises(ImageError, match="cannot read image"):
        pipe.generate(PROMPT, images=[bad], max_new_tokens=2)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="cannot read image"):
        pipe.generate(PROMPT, images=[cut], max_new_tokens=2)
    with pytest.raises(FileNotFoundError):
        pipe.generate(PROMPT, images=[tmp_path / "missing.png"], max_new_tokens=2)
    with pytest.raises(ImageError, match="uint8"):
        pipe.generate(PROMPT, images=[image.astype(np.float32)], max_new_tokens=2)


def test_image_kinds_are_accepted(pipe, tmp_path, image):
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    results = [
        pipe.generate(PROMPT, images=[src], max_new_tokens=4).token_ids
        for src in (image, str(path), path, Image.open(path), Image.fromarray(image).convert("RGBA"))
    ]
    assert all(r == results[0] for r in results)


def test_placeholder_count_must_match_images(pipe, image):
    with pytest.raises(PromptError, match="1 image placeholder.*2 image"):
        pipe.generate(PROMPT, images=[image, image], max_new_tokens=2)
    with pytest.raises(PromptError, match="2 image placeholder.*1 image"):
        pipe.generate("USER: <image> <image> hi ASSISTANT:", images=[image], max_new_tokens=2)


def test_message_text_cannot_inject_image_slots(pipe, image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "look: <image>"}]}]
    with pytest.raises(PromptError, match="cannot create image slots"):
        pipe.generate(messages=messages, images=[image], max_new_tokens=2)
    with pytest.raises(PromptError, match="2 image item"):
        pipe.generate(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}],
                      images=[image], max_new_tokens=2)


def test_prompt_longer_than_context(pipe, image):
    with pytest.raises(PromptError, match="context is 256"):
        pipe.generate("USER: <image>" + " word" * 400, images=[image], max_new_tokens=2)


def test_generation_budget_is_clamped_to_the_context(pipe, image):
    result = pipe.generate("USER: <image>" + " hi" * 60 + " ASSISTANT:", images=[image], max_new_tokens=10_000)
    assert result.stats.num_prompt_tokens + len(result.token_ids) <= 256


def test_bad_sampling_arguments(pipe, image):
    with pytest.raises(ValueError, match="temperature"):
        pipe.generate(PROMPT, images=[image], do_sample=True, temperature=0)
    with pytest.raises(TypeError, match="unknown generation argument"):
        pipe.generate(PROMPT, images=[image], top_q=0.5)


def test_modified_artifact_is_refused(tiny_llava, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_llava[1], out)
    data = bytearray((out / "connector.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (out / "connector.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="connector.onnx does not match its SHA-256"):
        Pipeline.load(out)
    shutil.copy(tiny_llava[1] / "connector.onnx", out / "connector.onnx")
    (out / "vision.onnx").write_bytes(b"x")
    with pytest.raises(ManifestError, match="vision.onnx is 1 bytes"):
        Pipeline.load(out)


def test_manifest_version_and_missing_folder(tiny_llava, tmp_path):
    with pytest.raises(FileNotFoundError, match="vlmforge export"):
        Pipeline.load(tmp_path)
    out = tmp_path / "out"
    shutil.copytree(tiny_llava[1], out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="version 99 is not supported"):
        Pipeline.load(out)
