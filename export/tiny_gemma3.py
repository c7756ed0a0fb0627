"""Tiny random Gemma 3 checkpoints (transformers' ``Gemma3ForConditionalGeneration``: SigLIP, 4×4
→ here 2×2 average pooling, Gemma 3 with interleaved sliding-window and global layers), saved with
transformers' own ``save_pretrained``. The window is small (8 tokens by default) so short prompts
already run past it. The tokenizer is the tiny BPE of ``tiny.py`` with Gemma 3's image tokens
and a chat template of Gemma 3's shape."""

from __future__ import annotations

from pathlib import Path

from .tiny import save_spread, train_tokenizer

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
GEMMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def make_tiny_gemma3(out_dir: str | Path, *, image_size: int = 56, patch_size: int = 14, tokens_per_image: int = 4,
                     vision_hidden: int = 32, vision_layers: int = 2, hidden: int = 64, layers: int = 4,
                     heads: int = 4, kv_heads: int = 2, head_dim: int = 16, sliding_window: int = 8,
                     sliding_pattern: int = 2, max_positions: int = 512, pan_and_scan_min_crop: int = 0,
                     seed: int = 0) -> Path:
    """``sliding_pattern`` k: every k-th layer is global, the others slide over ``sliding_window`` tokens.
    ``pan_and_scan_min_crop`` > 0: the processor config turns on pan-and-scan crops of that least size."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig, \
        SiglipVisionConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(extra_special=("<start_of_turn>", "<end_of_turn>", BOI, EOI, SOFT),
                                named_tokens={"image_token": SOFT, "boi_token": BOI, "eoi_token": EOI},
                                chat_template=GEMMA3_CHAT_TEMPLATE)
    layer_types = ["full_attention" if (i + 1) % sliding_pattern == 0 else "sliding_attention" for i in range(layers)]
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                            head_dim=head_dim, max_position_embeddings=max_positions, sliding_window=sliding_window,
                            layer_types=layer_types, query_pre_attn_scalar=head_dim,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    vision = SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                                num_hidden_layers=vision_layers, num_attention_heads=4, image_size=image_size,
                                patch_size=patch_size)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (("boi", BOI), ("eoi", EOI), ("soft", SOFT))}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image,
                          boi_token_index=ids["boi"], eoi_token_index=ids["eoi"], image_token_index=ids["soft"])
    torch.manual_seed(seed)
    save_spread(Gemma3ForConditionalGeneration(config).eval(), tokenizer, out)
    crops = {"do_pan_and_scan": True, "pan_and_scan_min_crop_size": pan_and_scan_min_crop} if pan_and_scan_min_crop else {}
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, **crops)
    Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=tokens_per_image,
                    chat_template=GEMMA3_CHAT_TEMPLATE).save_pretrained(out)
    return out
