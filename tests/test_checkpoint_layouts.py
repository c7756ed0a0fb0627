"""Checkpoints as transformers saves them today and as the hub holds them (issue #19 part 3): the
image processor from processor_config.json (nested, transformers 5) or preprocessor_config.json,
the chat template from chat_template.jinja, chat_template.json or tokenizer_config.json — all
give the same export."""

from __future__ import annotations

import json
import shutil

import pytest

from vlmforge.export import export_model
from vlmforge.export.tiny import make_tiny_llava
from vlmforge.runtime.manifest import load_manifest


def test_the_tiny_checkpoints_are_saved_by_transformers_itself(tiny_llava):
    model_dir = tiny_llava[0]
    nested = json.loads((model_dir / "processor_config.json").read_text())
    assert nested["processor_class"] == "LlavaProcessor" and "image_processor" in nested
    assert not (model_dir / "preprocessor_config.json").exists()
    assert (model_dir / "chat_template.jinja").is_file()


def _chat_template_json(src, dst):
    """The older processor layout: the template in chat_template.json."""
    shutil.copytree(src, dst)
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.jinja").unlink()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return dst


@pytest.mark.parametrize("layout", ["legacy", "chat_template.json"])
def test_every_layout_gives_the_same_export(tiny_llava, tmp_path, layout):
    reference = load_manifest(tiny_llava[1])
    if layout == "legacy":
        model_dir = make_tiny_llava(tmp_path / "hf", text="llama", kv_heads=2, layout="legacy")
        assert (model_dir / "preprocessor_config.json").is_file() and not (model_dir / "processor_config.json").exists()
        assert "chat_template" in json.loads((model_dir / "tokenizer_config.json").read_text())
    else:
        model_dir = _chat_template_json(tiny_llava[0], tmp_path / "hf")
    manifest = export_model(model_dir, tmp_path / "out", check=False)
    assert manifest.image == reference.image
    assert manifest.tokenizer.chat_template == reference.tokenizer.chat_template is not None
    assert manifest.artifacts["embed_tokens.npy"] == reference.artifacts["embed_tokens.npy"]  # same weights
