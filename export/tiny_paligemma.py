"""Tiny random PaliGemma checkpoints (transformers' ``PaliGemmaForConditionalGeneration``: SigLIP +
linear projector + Gemma, or Gemma 2 for PaliGemma 2), saved with transformers' own
``save_pretrained``, processor included (its ``<loc…>``/``<seg…>`` tokens added as the real one has)."""

from __future__ import annotations

from pathlib import Path

from .tiny import save_spread, train_tokenizer


def make_tiny_paligemma(out_dir: str | Path, *, version: int = 1, image_size: int = 56, patch_size: int = 14,
                        vision_hidden: int = 32, vision_layers: int = 2, hidden: int = 64, layers: int = 2,
                        heads: int = 4, kv_heads: int = 1, head_dim: int = 16, max_positions: int = 512,
                        seed: int = 0) -> Path:
    import torch
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, \
        SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(chat_template=None)
    tokens = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = tokens
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer = processor.tokenizer  # now with <image>, <loc0000> … <seg127>
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if version == 2:
        from transformers import Gemma2Config

        text_config = Gemma2Config(**text, sliding_window=max_positions, final_logit_softcapping=30.0,
                                   attn_logit_softcapping=50.0, query_pre_attn_scalar=head_dim)
    else:
        text_config = GemmaConfig(**text)
    vision = SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                                num_hidden_layers=vision_layers, num_attention_heads=4, image_size=image_size,
                                patch_size=patch_size, projection_dim=hidden)
    config = PaliGemmaConfig(vision_config=vision, text_config=text_config,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=hidden)
    config.vision_config.projection_dim = hidden
    torch.manual_seed(seed)
    save_spread(PaliGemmaForConditionalGeneration(config).eval(), tokenizer, out)
    processor.save_pretrained(out)
    return out
