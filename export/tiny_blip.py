"""Tiny random BLIP-2 / InstructBLIP checkpoints (ViT + Q-Former + OPT / Llama / Flan-T5)."""

from __future__ import annotations

from pathlib import Path

from .tiny import IMAGE_TOKEN, train_tokenizer

QFORMER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _text_config(kind: str, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int):
    from transformers import LlamaConfig, OPTConfig, T5Config

    if kind == "opt":
        return OPTConfig(vocab_size=vocab, hidden_size=hidden, ffn_dim=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=256, word_embed_proj_dim=hidden,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                           max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if kind == "t5":
        return T5Config(vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=hidden * 2, num_layers=layers,
                        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                        decoder_start_token_id=3, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
                        initializer_factor=4.0)  # T5's default init makes a random decoder repeat one token
    raise ValueError(f"unknown tiny text model kind {kind!r}; choose 'opt', 'llama' or 't5'")


def qformer_tokenizer(out: Path):
    """A small BERT WordPiece tokenizer for InstructBLIP's Q-Former, trained here."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    from .tiny import _CORPUS

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=QFORMER_VOCAB))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]")


def make_tiny_blip2(
    out_dir: str | Path,
    *,
    text: str = "opt",
    instruct: bool = False,
    num_query_tokens: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    image_size: int = 30,
    patch_size: int = 6,
    qformer_hidden: int = 32,
    qformer_layers: int = 2,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random ``Blip2ForConditionalGeneration`` (or InstructBLIP with ``instruct``) to ``out_dir``."""
    import torch
    from transformers import (
        Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig, InstructBlipConfig,
        InstructBlipForConditionalGeneration, InstructBlipQFormerConfig, InstructBlipVisionConfig,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    vision_cls, qformer_cls, config_cls, model_cls = (
        (InstructBlipVisionConfig, InstructBlipQFormerConfig, InstructBlipConfig, InstructBlipForConditionalGeneration)
        if instruct else (Blip2VisionConfig, Blip2QFormerConfig, Blip2Config, Blip2ForConditionalGeneration)
    )
    vision = vision_cls(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=vision_layers,
                        num_attention_heads=4, image_size=image_size, patch_size=patch_size)
    qtok = qformer_tokenizer(out) if instruct else None
    qformer = qformer_cls(
        vocab_size=len(qtok) if qtok else 30522, hidden_size=qformer_hidden, num_hidden_layers=qformer_layers,
        num_attention_heads=4, intermediate_size=qformer_hidden * 2, encoder_hidden_size=vision_hidden,
        cross_attention_frequency=1, max_position_embeddings=128,
    )
    config = config_cls(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
        text_config=_text_config(text, len(tokenizer), hidden, layers, heads, kv_heads).to_dict(),
        num_query_tokens=num_query_tokens, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        setattr(model.generation_config, name, getattr(tokenizer, name))
    if text == "t5":
        model.generation_config.decoder_start_token_id = config.text_config.decoder_start_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if qtok is not None:
        qtok.save_pretrained(out / "qformer_tokenizer")
    BlipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def make_tiny_blip(out_dir: str | Path, *, vision_hidden: int = 32, image_size: int = 30, patch_size: int = 6,
                   hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a random ``BlipForConditionalGeneration`` (captioning) with a BERT WordPiece tokenizer + [DEC]."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = qformer_tokenizer(out)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=4, encoder_hidden_size=vision_hidden, max_position_embeddings=64,
                bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.sep_token_id)
    vision = dict(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=2,
                  num_attention_heads=4, image_size=image_size, patch_size=patch_size)
    config = BlipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.sep_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    BlipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
