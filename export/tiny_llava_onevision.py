"""Tiny random LLaVA-OneVision checkpoints (transformers' ``LlavaOnevisionForConditionalGeneration``:
SigLIP tower, 2-layer MLP projector, Qwen2 decoder), for tests and smoke runs.

The grid pinpoints are OneVision's own pattern scaled to the tiny tile (1…``max_grid`` tiles a
side, 6 in the hub checkpoints), so "anyres_max_9" downsamples the larger grids as it does at
384 px. The tokenizer is the tiny byte-level BPE of ``tiny.py`` with ``<video>`` and the ChatML
marks, and the chat template is the one transformers' OneVision conversion writes.
``LlavaOnevisionProcessor`` cannot be built here (its video processor needs torchvision), so its
``processor_config.json`` is written as the hub
checkpoints have it (num_image_tokens, vision_aspect_ratio, the feature select strategy) beside the
image processor's ``preprocessor_config.json``; with no video processor config the export takes
the image processor's size and normalisation for frames, which is what the hub's video processors hold.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import train_tokenizer

SPECIAL = ("<video>", "<|im_start|>", "<|im_end|>")
# transformers' convert_llava_onevision_weights_to_hf.py template (images, then videos, then the text
# of each turn), taught to take plain-string content too
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # SigLIP's normalisation, as the hub checkpoints have it


def onevision_pinpoints(tile: int, max_grid: int) -> list[list[int]]:
    """[h, w] for 1…max_grid tiles a side, rows first (the hub's 384·i × 384·j list)."""
    return [[tile * i, tile * j] for i in range(1, max_grid + 1) for j in range(1, max_grid + 1)]


def spread_weights(model, text_gain: float) -> None:
    """Every matrix redrawn ~ N(0, 1/fan_in) (transformers' init leaves SigLIP's so small that every
    picture looks alike), the decoder's and LM head's then × ``text_gain``: at gain 1 this tiny decoder
    repeats one token after most pictures, and greedy parity would compare little."""
    import torch

    text = {id(p) for p in [*model.model.language_model.parameters(), *model.lm_head.parameters()]}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, p.shape[-1] ** -0.5 * (text_gain if id(p) in text else 1.0))


def make_tiny_llava_onevision(out_dir: str | Path, *, vision_hidden: int = 32, vision_layers: int = 2,
                              image_size: int = 30, patch_size: int = 6, hidden: int = 64, layers: int = 2,
                              heads: int = 4, kv_heads: int = 2, max_grid: int = 6, max_tiles: int = 9,
                              feature_layer: int = -1, max_positions: int = 4096, text_gain: float = 2.0,
                              seed: int = 0) -> Path:
    """Write a random OneVision checkpoint (+ tokenizer, processor) to ``out_dir``.

    Tiles are ``image_size`` pixels, ``(image_size / patch_size)²`` tokens each; ``max_tiles`` is
    the N of ``vision_aspect_ratio="anyres_max_N"``; ``text_gain`` scales the decoder's weights (see
    ``spread_weights``)."""
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(extra_special=SPECIAL, chat_template=ONEVISION_CHAT_TEMPLATE,
                                named_tokens={"image_token": "<image>", "video_token": "<video>"})
    tokenizer.eos_token = "<|im_end|>"  # the end of a turn ends generation, as Qwen2's ChatML tokenizers
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<image>", *SPECIAL)}
    pinpoints = onevision_pinpoints(image_size, max_grid)
    vision = dict(model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                  num_hidden_layers=vision_layers, num_attention_heads=4, image_size=image_size, patch_size=patch_size)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=ids["<|im_end|>"], pad_token_id=tokenizer.pad_token_id)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                                  video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
                                  vision_feature_layer=feature_layer, vision_feature_select_strategy="full",
                                  vision_aspect_ratio=f"anyres_max_{max_tiles}")
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    spread_weights(model, text_gain)
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    model.save_pretrained(out)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size},
                                                      image_grid_pinpoints=pinpoints, image_mean=MEAN, image_std=STD)
    image_processor.save_pretrained(out)  # preprocessor_config.json, as the hub checkpoints hold it
    tokenizer.save_pretrained(out)
    processor = {"num_image_tokens": (image_size // patch_size) ** 2, "vision_aspect_ratio": f"anyres_max_{max_tiles}",
                 "vision_feature_select_strategy": "full", "processor_class": "LlavaOnevisionProcessor"}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(ONEVISION_CHAT_TEMPLATE)
    return out
