"""MiniGPT-4: BLIP-2 + Llama with its own conversation format, from the transformers layout
and from the original checkpoint layout (llama_proj, visual_encoder … renamed on load)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from conftest import random_images
from parity import assert_same_tokens, hf_generate_ids

QUESTION = "###Human: <Img><ImageHere></Img> What is in the picture?###Assistant:"


def to_original_layout(state: dict) -> dict:
    """The inverse of the family's sanitize step: transformers BLIP-2 names → MiniGPT-4's."""
    out = {}
    for key, value in state.items():
        m = re.match(r"vision_model\.encoder\.layers\.(\d+)\.(.*)", key)
        if m:
            i, rest = m.groups()
            if rest == "self_attn.qkv.bias":
                q, _, v = value.chunk(3)
                out[f"visual_encoder.blocks.{i}.attn.q_bias"], out[f"visual_encoder.blocks.{i}.attn.v_bias"] = q, v
                continue
            rest = (rest.replace("layer_norm1.", "norm1.").replace("layer_norm2.", "norm2.")
                    .replace("self_attn.qkv.", "attn.qkv.").replace("self_attn.projection.", "attn.proj."))
            out[f"visual_encoder.blocks.{i}.{rest}"] = value
            continue
        for new, old in [("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
                         ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
                         ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
                         ("vision_model.post_layernorm.", "ln_vision."), ("qformer.layernorm.", "Qformer.bert.embeddings.LayerNorm."),
                         ("qformer.", "Qformer.bert."), ("language_projection.", "llama_proj."),
                         ("language_model.", "llama_model.")]:
            if key.startswith(new):
                key = old + key[len(new):]
                break
        out[key.replace("attention.attention.", "attention.self.")] = value
    return out


@pytest.fixture(scope="module")
def blip2_llama(tmp_path_factory):
    from vlmforge.export.tiny_blip import make_tiny_blip2

    root = tmp_path_factory.mktemp("minigpt4")
    return make_tiny_blip2(root / "hf", text="llama", num_query_tokens=6)


def _as_minigpt4(hf_dir, target, original: bool):
    from transformers import Blip2ForConditionalGeneration

    shutil.copytree(hf_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "minigpt4"
    (target / "config.json").write_text(json.dumps(config))
    if original:
        state = Blip2ForConditionalGeneration.from_pretrained(hf_dir).state_dict()
        (target / "model.safetensors").unlink()
        torch.save({"model": to_original_layout(state)}, target / "prerained_minigpt4.pth")
    return target


@pytest.mark.parametrize("original", [False, True])
def test_minigpt4_matches_transformers(blip2_llama, original, tmp_path, rng):
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    from vlmforge.export import export_model
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime import Pipeline

    model_dir = _as_minigpt4(blip2_llama, tmp_path / "minigpt4", original)
    export_model(model_dir, tmp_path / "out")
    pipe = Pipeline.load(tmp_path / "out")
    assert pipe.manifest.family == "minigpt4" and pipe.manifest.generation.stop_strings == ["###"]
    hf = Blip2ForConditionalGeneration.from_pretrained(blip2_llama, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(blip2_llama)
    image = random_images(rng, [(40, 52)])[0]
    ours = pipe.generate(QUESTION, images=[image], max_new_tokens=24, stop=[])
    # the image's query embeddings replace <ImageHere> inside the conversation
    text = QUESTION.replace("<ImageHere>", "<image>" * hf.config.num_query_tokens)
    ids = tok(text, return_tensors="pt").input_ids
    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    theirs = hf_generate_ids(hf, 24, input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values=torch.as_tensor(pixels))
    assert_same_tokens(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    assert pipe.prompt_text(None, chat, 1).endswith(QUESTION)  # the family's conversation format
