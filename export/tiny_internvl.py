"""Tiny random InternVL checkpoints (transformers' ``InternVLForConditionalGeneration`` with a Qwen2
text model, as InternVL3 and InternVL2.5-1B have), for tests and smoke runs.

The tokenizer is the tiny byte-level BPE of ``tiny.py`` with InternVL's special tokens — named as
InternVLProcessor reads them (``context_image_token`` … in ``extra_special_tokens``) — and the
chat template transformers' InternVL conversion writes. Everything is saved by transformers' own
``save_pretrained`` except ``processor_config.json``: ``InternVLProcessor`` cannot be built here (its
video processor needs torchvision), so that file is written as the hub's InternVL checkpoints have
it (``image_seq_length`` and the processor class), next to the image processor's
``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import train_tokenizer

INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
NAMED_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}
# transformers' convert_internvl_weights_to_hf.py chat template (the -hf checkpoints')
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # InternVL's normalisation


def internvl_tokenizer():
    tokenizer = train_tokenizer(extra_special=tuple(INTERNVL_SPECIAL), chat_template=INTERNVL_CHAT_TEMPLATE,
                                named_tokens=NAMED_TOKENS)
    tokenizer.eos_token = "<|im_end|>"  # as InternVL's Qwen2 tokenizers: the end of a turn ends generation
    return tokenizer


def make_tiny_internvl(out_dir: str | Path, *, vision_hidden: int = 32, vision_layers: int = 2, vision_heads: int = 4,
                       image_size: int = 32, patch_size: int = 4, feature_layer: int = -1,
                       use_mean_pooling: bool = True, norm_type: str = "layer_norm", use_qk_norm: bool = False,
                       hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, min_patches: int = 1,
                       max_patches: int = 6, max_positions: int = 2048, init_range: float = 0.2, seed: int = 0) -> Path:
    """Write a random InternVL checkpoint (+ tokenizer, image processor, processor config) to ``out_dir``.

    Tiles are ``image_size`` pixels, ``(image_size / patch_size / 2)²`` tokens each (2×2 pixel
    shuffle); ``min_patches`` / ``max_patches`` bound the tile grid. ``use_mean_pooling=False`` gives
    the tower a final LayerNorm (read for ``feature_layer=-1``); ``norm_type="rms_norm"`` and
    ``use_qk_norm`` are InternViT-6B's variants. The CLS token and position embeddings, which
    transformers initialises to zero, are drawn at random so that a graph dropping them differs.
    ``init_range``: the text model's weight scale — at transformers' 0.02 a decoder this small repeats
    one token whatever the picture, and greedy parity would compare little."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = internvl_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL}
    vision = dict(hidden_size=vision_hidden, num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                  intermediate_size=vision_hidden * 2, image_size=image_size, patch_size=patch_size,
                  use_mean_pooling=use_mean_pooling, norm_type=norm_type, use_qk_norm=use_qk_norm)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_positions, initializer_range=init_range,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=ids["<|im_end|>"],
                pad_token_id=tokenizer.pad_token_id)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=ids["<IMG_CONTEXT>"],
                            image_seq_length=(image_size // patch_size // 2) ** 2, vision_feature_layer=feature_layer)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.vision_tower.embeddings.cls_token.normal_()
        model.model.vision_tower.embeddings.position_embeddings.normal_()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, crop_to_patches=True,
                             min_patches=min_patches, max_patches=max_patches, image_mean=IMAGENET_MEAN,
                             image_std=IMAGENET_STD).save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor = {"image_seq_length": config.image_seq_length, "processor_class": "InternVLProcessor"}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return out
