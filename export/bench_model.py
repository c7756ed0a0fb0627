"""A LLaVA with realistic shapes and random weights, for benchmarks: random weights cost the
same compute as trained ones. CLIP ViT-L/14-336 (24 layers, width 1024) → MLP projector →
a Qwen2-0.5B-like decoder (24 layers, width 896, 14 heads, 2 KV heads, 151,936-token vocabulary,
tied embeddings). The tokenizer is the small one trained here; its ids are a subset of the vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tiny import IMAGE_TOKEN, _image_processor, train_tokenizer

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True,
                 rope_theta=1_000_000.0)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)


def make_bench_llava(out_dir: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    text = Qwen2Config(**QWEN2_05B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**CLIP_L_336), text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=576,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _image_processor(336, False, None).save_pretrained(out)
    path = out / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "image_processor_type": "CLIPImageProcessor"}))
    return out
