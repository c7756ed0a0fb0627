"""Tiny random Qwen2-VL checkpoints (transformers' ``Qwen2VLForConditionalGeneration``), saved
the way transformers saves them, for tests and smoke runs.

The tokenizer is the tiny byte-level BPE of ``tiny.py`` with Qwen2-VL's special tokens and a
chat template of Qwen2-VL's shape (``<|im_start|>`` turns, ``<|vision_start|><|image_pad|><|vision_end|>``
per image). ``Qwen2VLProcessor`` cannot be built here (its video processor needs torchvision), so
the PIL image processor and the tokenizer are saved by their own ``save_pretrained``: the
``preprocessor_config.json`` layout most hub checkpoints have.
"""

from __future__ import annotations

from pathlib import Path

from .tiny import train_tokenizer

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer():
    return train_tokenizer(extra_special=tuple(QWEN_SPECIAL), chat_template=QWEN2_VL_CHAT_TEMPLATE,
                           named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})


def make_tiny_qwen2_vl(out_dir: str | Path, *, embed_dim: int = 32, depth: int = 2, vision_heads: int = 4,
                       hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                       mrope_section: list[int] | None = None, patch_size: int | None = None, merge_size: int = 2,
                       min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 64, max_positions: int = 2048,
                       version: str = "2", window_size: int = 56, full_layers: tuple = (1,),
                       deepstack_layers: tuple = (0,), position_grid: int = 6, seed: int = 0) -> Path:
    """Write a random Qwen2-VL (``version="2"``), Qwen2.5-VL (``"2.5"``) or Qwen3-VL (``"3"``)
    checkpoint (+ tokenizer, processor) to ``out_dir``.

    ``mrope_section`` splits head_dim / 2 rotary frequencies into temporal / height / width
    (default: in Qwen2-VL's 16:24:24 proportion; Qwen3-VL interleaves them). Qwen2.5-VL:
    ``window_size`` pixels a window side, ``full_layers`` the vision layers that attend to the whole
    image. Qwen3-VL (16 px patches unless ``patch_size`` says otherwise): ``deepstack_layers`` the
    vision layers whose features are added to the first decoder layers' hidden states,
    ``position_grid`` the side of its learned position-embedding grid."""
    import torch
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    patch_size = patch_size or (16 if version == "3" else 14)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    half = hidden // heads // 2
    section = mrope_section or [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    common = dict(depth=depth, num_heads=vision_heads, patch_size=patch_size, spatial_merge_size=merge_size,
                  temporal_patch_size=2)
    if version == "2":
        config_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        vision = dict(common, embed_dim=embed_dim, hidden_size=hidden, mlp_ratio=2)
    elif version == "2.5":
        config_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        vision = dict(common, hidden_size=embed_dim, intermediate_size=embed_dim * 2, out_hidden_size=hidden,
                      window_size=window_size, fullatt_block_indexes=list(full_layers))
    elif version == "3":
        config_cls, model_cls = transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration
        vision = dict(common, hidden_size=embed_dim, intermediate_size=embed_dim * 2, out_hidden_size=hidden,
                      num_position_embeddings=position_grid**2, deepstack_visual_indexes=list(deepstack_layers))
    else:
        raise ValueError(f"version={version!r}: choose '2', '2.5' or '3'")
    config = config_cls(
        vision_config=vision,
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=max_positions, rope_parameters={
                             "rope_type": "default", "rope_theta": 10000.0, "mrope_section": section,
                             **({"mrope_interleaved": True} if version == "3" else {})},
                         **({"head_dim": hidden // heads} if version == "3" else {}),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=tokenizer.pad_token_id),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    norm = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3) if version == "3" else {}
    Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size,
                             merge_size=merge_size, **norm).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
