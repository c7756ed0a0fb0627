"""MiniGPT-4: BLIP-2's ViT + Q-Former, a linear projection and a Vicuna (Llama) decoder, with
the ``###Human: <Img><ImageHere></Img> …###Assistant:`` conversation format.

A checkpoint folder has a BLIP-2-shaped ``config.json`` with ``"model_type": "minigpt4"`` (a
Llama text config) and its weights either in transformers' BLIP-2 layout (safetensors) or in
the original layout (a ``.pth``/``.bin`` state dict with ``llama_proj``, ``visual_encoder`` …),
renamed by ``sanitize``. Graphs are BLIP-2's; the image goes where the prompt says
``<ImageHere>`` (``ImageSpec.placeholder``), not in front.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..base import FamilyExport, load_pretrained
from ..blip_2 import image_spec, prepare_query_model
from ..blip_2 import connector_graph as blip2_connector
from .sanitize import is_original_layout, sanitize

ARCHITECTURES = ("MiniGPT4", "Blip2ForConditionalGeneration")
# the original checkpoints exist only as .pth state dicts: loaded with torch.load(weights_only=True),
# whose restricted unpickler builds tensors and containers and refuses anything that could run code
WEIGHTS_ONLY_PICKLE = True
PLACEHOLDER = "<ImageHere>"
SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it "
          "to you. Please answer my questions.")
CHAT_TEMPLATE = (
    "{{ '" + SYSTEM + "' }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '###Human: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<Img><ImageHere></Img> ' }}{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% else %}{{ '###Assistant: ' + message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '###Assistant:' }}{% endif %}"
)


def _original_weights(model_dir: Path) -> Path | None:
    files = sorted(model_dir.glob("*.pth")) + sorted(model_dir.glob("pytorch_model*.bin"))
    return files[0] if files else None


def load(model_dir: Path):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    data = json.loads((model_dir / "config.json").read_text())
    data["model_type"] = "blip-2"
    config = Blip2Config.from_dict(data)
    config._attn_implementation = "eager"
    original = _original_weights(model_dir)
    if original is None:
        return load_pretrained(Blip2ForConditionalGeneration, model_dir, config=config)
    state = torch.load(original, map_location="cpu", weights_only=True)
    state = state.get("model", state)  # MiniGPT-4 saves {"model": state_dict}
    if not is_original_layout(state):
        raise ValueError(f"{original} is neither a transformers BLIP-2 nor an original MiniGPT-4 state dict")
    model = Blip2ForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(sanitize(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"{original} does not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.float().eval()


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    if model.config.text_config.model_type != "llama":
        raise ValueError(f"MiniGPT-4 uses a Vicuna/Llama decoder; this config has {model.config.text_config.model_type!r}")
    image = image_spec(model_dir, model.config)
    image.placement, image.placeholder = "inline", PLACEHOLDER
    return prepare_query_model(model, model_dir, "minigpt4", "MiniGPT4", blip2_connector, image,
                               tokenizer_overrides={"chat_template": CHAT_TEMPLATE}, stop_strings=["###"])
