"""Tiny random Llama-3.2-Vision checkpoints (transformers' ``MllamaForConditionalGeneration``: the
tiled vision encoder with gated tile / position embeddings, local + global layers and concatenated
intermediate layers, the projector, and a Llama whose ``cross_layers`` read the image tiles),
saved with transformers' own ``save_pretrained`` with the PIL image processor.

transformers initialises every tanh gate at 0 — cross layers and gated embeddings would then add
nothing and a test could not see them — so the gates are redrawn here, away from 0. The tokenizer
is the tiny BPE of ``tiny.py`` with Llama 3's header tokens and a chat template of Llama 3.2
Vision's shape (the BOS comes from the tokenizer's post-processor, not the template)."""

from __future__ import annotations

from pathlib import Path

from .tiny import save_spread, train_tokenizer

IMAGE = "<|image|>"
HEADER = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>")
MLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def make_tiny_mllama(out_dir: str | Path, *, image_size: int = 28, patch_size: int = 14, max_tiles: int = 4,
                     vision_hidden: int = 32, vision_layers: int = 3, global_layers: int = 1,
                     intermediate_layers: tuple[int, ...] = (0, 2), hidden: int = 64, layers: int = 4,
                     cross_layers: tuple[int, ...] = (1, 3), heads: int = 4, kv_heads: int = 2,
                     max_positions: int = 512, seed: int = 0) -> Path:
    """``cross_layers``: the text layers that are cross-attention layers (layer 0 must be a
    self-attention one: transformers reads the cache length from it)."""
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import (MllamaImageProcessorPil,
                                                                       get_all_supported_aspect_ratios)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(extra_special=(IMAGE, *HEADER), named_tokens={"image_token": IMAGE},
                                chat_template=MLLAMA_CHAT_TEMPLATE)
    vision = dict(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=vision_layers,
                  num_global_layers=global_layers, attention_heads=4, image_size=image_size, patch_size=patch_size,
                  max_num_tiles=max_tiles, intermediate_layers_indices=list(intermediate_layers),
                  vision_output_dim=vision_hidden * (1 + len(intermediate_layers)),
                  supported_aspect_ratios=[list(r) for r in get_all_supported_aspect_ratios(max_tiles)])
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, cross_attention_layers=list(cross_layers),
                max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = MllamaConfig(vision_config=vision, text_config=text,
                          image_token_index=tokenizer.convert_tokens_to_ids(IMAGE))
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    with torch.no_grad():  # every tanh gate away from 0 (both signs), so what it gates shows in the output
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ("gate", "gate_attn", "gate_ffn", "cross_attn_attn_gate", "cross_attn_mlp_gate"):
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) * torch.sign(torch.randn_like(p)))
    save_spread(model, tokenizer, out)
    image_processor = MllamaImageProcessorPil(size={"height": image_size, "width": image_size},
                                              max_image_tiles=max_tiles)
    MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                    chat_template=MLLAMA_CHAT_TEMPLATE).save_pretrained(out)
    return out
