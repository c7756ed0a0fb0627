"""Tiny random Fuyu checkpoints (patch projection + Persimmon decoder)."""

from __future__ import annotations

from pathlib import Path

from .tiny import train_tokenizer

FUYU_TOKENS = ("|SPEAKER|", "|NEWLINE|", "<0x04>")


def make_tiny_fuyu(
    out_dir: str | Path, *, patch_size: int = 6, target: tuple[int, int] = (36, 48), hidden: int = 64,
    layers: int = 2, heads: int = 4, seed: int = 0,
) -> Path:
    """Write a random ``FuyuForCausalLM`` whose images are cut into ``patch_size`` patches, fit in ``target``."""
    import torch
    from transformers import FuyuConfig, FuyuForCausalLM, PersimmonConfig
    from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(extra_special=FUYU_TOKENS)
    text = PersimmonConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=512, partial_rotary_factor=0.5, qk_layernorm=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = FuyuConfig(text_config=text.to_dict(), patch_size=patch_size, image_size=max(target),
                        image_token_id=tokenizer.convert_tokens_to_ids("|SPEAKER|"))
    torch.manual_seed(seed)
    model = FuyuForCausalLM(config).eval()
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        setattr(model.generation_config, name, getattr(tokenizer, name))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    FuyuImageProcessorPil(size={"height": target[0], "width": target[1]},
                          patch_size={"height": patch_size, "width": patch_size}).save_pretrained(out)
    return out
