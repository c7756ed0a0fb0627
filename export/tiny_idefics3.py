"""Tiny random Idefics3 / SmolVLM checkpoints (transformers' ``Idefics3ForConditionalGeneration`` /
``SmolVLMForConditionalGeneration`` with a Llama text model), for tests and smoke runs.

The tokenizer is the tiny byte-level BPE of ``tiny.py`` with the processors' tokens
(``<fake_token_around_image>``, ``<global-img>``, ``<row_r_col_c>`` for r, c ≤ 6,
``<end_of_utterance>``) and the Idefics3 chat template; SmolVLM's also names them as
SmolVLMProcessor reads them (``fake_image_token`` …). The image processor is the PIL one
(``Idefics3ImageProcessorPil`` / ``SmolVLMImageProcessorPil``, the same code). For Idefics3,
``Idefics3Processor.save_pretrained`` writes processor_config.json; SmolVLMProcessor cannot be
built here (it needs num2words and a torchvision video processor), so for SmolVLM that file is
written as the hub's checkpoints have it (``image_seq_len`` and the processor class).
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import train_tokenizer

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
IDEFICS3_SPECIAL = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *ROW_COL]
SMOLVLM_NAMED = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
# HuggingFaceM4/Idefics3-8B-Llama3's chat template (SmolVLM's is the same for images)
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
MODEL_TYPES = ("idefics3", "smolvlm")


def idefics3_tokenizer(model_type: str):
    named = SMOLVLM_NAMED if model_type == "smolvlm" else None
    tokenizer = train_tokenizer(extra_special=("<|begin_of_text|>", *IDEFICS3_SPECIAL),
                                chat_template=IDEFICS3_CHAT_TEMPLATE, named_tokens=named)
    tokenizer.eos_token = "<end_of_utterance>"  # the end of a turn ends generation
    return tokenizer


def make_tiny_idefics3(out_dir: str | Path, *, model_type: str = "idefics3", vision_hidden: int = 32,
                       vision_layers: int = 2, vision_heads: int = 4, image_size: int = 32, patch_size: int = 4,
                       scale_factor: int = 2, longest_edge: int = 96, split: bool = True, hidden: int = 64,
                       layers: int = 2, heads: int = 4, kv_heads: int = 2, max_positions: int = 2048,
                       init_range: float = 0.2, seed: int = 0) -> Path:
    """Write a random checkpoint (+ tokenizer, image processor, processor config) to ``out_dir``.

    Tiles are ``image_size`` pixels (max_image_size.longest_edge), ``(image_size / patch_size /
    scale_factor)²`` tokens each; pictures are first resized to ``longest_edge`` (size.longest_edge),
    so at most (longest_edge / image_size)² tiles plus the global view. ``split=False``: one
    image_size² view per picture. ``init_range``: the text model's weight scale (at transformers'
    0.02 a decoder this small repeats one token whatever the picture)."""
    import torch
    import transformers

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = idefics3_tokenizer(model_type)
    eou = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    vision = dict(hidden_size=vision_hidden, num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                  intermediate_size=vision_hidden * 2, image_size=image_size, patch_size=patch_size)
    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_positions, initializer_range=init_range,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=eou, pad_token_id=tokenizer.pad_token_id)
    prefix = "Idefics3" if model_type == "idefics3" else "SmolVLM"
    config = getattr(transformers, f"{prefix}Config")(vision_config=vision, text_config=text, scale_factor=scale_factor,
                                                      image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval()
    model.generation_config.eos_token_id = [eou, tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    image_processor = image_processor_class(model_type)(
        size={"longest_edge": longest_edge}, max_image_size={"longest_edge": image_size}, do_image_splitting=split)
    seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    tokenizer.save_pretrained(out)
    if model_type == "idefics3":
        transformers.Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len).save_pretrained(out)
    else:
        image_processor.save_pretrained(out)
        processor = {"image_seq_len": seq_len, "processor_class": "SmolVLMProcessor"}
        (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return out


def image_processor_class(model_type: str):
    if model_type == "idefics3":
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        return Idefics3ImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    return SmolVLMImageProcessorPil
