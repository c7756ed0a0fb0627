"""Tiny random checkpoints in Hugging Face format, for tests, smoke runs and the fallback demo.

They go through exactly the loading code a real checkpoint does (``save_pretrained`` →
``from_pretrained``); only the sizes are small and the weights random. The tokenizer is a
byte-level BPE trained here with ``tokenizers`` on a small built-in corpus, so multi-byte
characters (é, 猫, emoji) occur and streaming detokenisation is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]

# LLaVA-1.5's conversation format, as a chat template (what llava-hf checkpoints ship).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_CORPUS = [
    "USER: What is in the picture? ASSISTANT: A cat sitting on a red chair.",
    "USER: Describe the image. ASSISTANT: Two dogs play in the snow near a blue house.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "A small green triangle is left of a large yellow circle on a striped background.",
    "How many shapes are there? Three. Which shape is red? The square.",
    "Un café crème, s'il vous plaît. Déjà vu à la française.",
    "小猫在椅子上。图片里有什么？ 你好，世界！",
    "Emoji: 🐱 🐶 🚗 ✨ — dashes, “quotes” and ellipses…",
    "###Human: <Img><ImageHere></Img> What is this? ###Assistant: A picture.",
]


def train_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None, extra_special: tuple = (),
                    named_tokens: dict | None = None, chat_template: str = LLAVA_CHAT_TEMPLATE):
    """A byte-level BPE whose post-processor prepends ``<s>`` like Llama's; returns a transformers tokenizer.

    ``corpus`` is the training text (default: the small built-in multilingual one); ``named_tokens``
    the tokenizer's named special tokens (default: ``image_token`` = ``<image>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS if corpus is None else corpus) * 4, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=named_tokens or {"image_token": IMAGE_TOKEN},
        chat_template=chat_template,
    )


def _text_config(kind: str, vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int, max_positions: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    if kind == "llama":
        return LlamaConfig(**common)
    if kind == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown tiny text model kind {kind!r}; choose 'llama' or 'qwen2'")


def make_tiny_llava(
    out_dir: str | Path,
    *,
    text: str = "llama",
    vision_hidden: int = 32,
    vision_layers: int = 3,
    image_size: int = 30,
    patch_size: int = 6,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    feature_layer: int | list[int] = -2,
    select_strategy: str = "default",
    pad_to_square: bool = False,
    max_positions: int = 256,
    grid_pinpoints: list[list[int]] | None = None,
    seed: int = 0,
    layout: str = "processor",
) -> Path:
    """Write a random LLaVA checkpoint (+ tokenizer, processor) to ``out_dir``.

    With ``grid_pinpoints`` it is a ``LlavaNextForConditionalGeneration`` (AnyRes tiling, tiles of
    ``image_size``), otherwise a ``LlavaForConditionalGeneration``.

    ``layout="processor"``: the processor saved by the installed transformers' own ``save_pretrained``
    (5.x: ``processor_config.json`` with the image processor nested, ``chat_template.jinja``);
    ``"legacy"``: what most hub checkpoints hold (``preprocessor_config.json``, the chat template in
    ``tokenizer_config.json``).
    """
    if layout not in ("processor", "legacy"):
        raise ValueError(f"layout={layout!r}: choose 'processor' or 'legacy'")
    import torch
    from transformers import CLIPVisionConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    vocab_size = len(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    num_patches = (image_size // patch_size) ** 2
    config_cls, model_cls, extra = _classes(grid_pinpoints)
    config = config_cls(
        vision_config=vision,
        text_config=_text_config(text, vocab_size, hidden, layers, heads, kv_heads, max_positions),
        image_token_index=image_token_id,
        image_seq_length=num_patches + (0 if select_strategy == "default" else 1),
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy=select_strategy,
        **extra,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    image_processor = _image_processor(image_size, pad_to_square, grid_pinpoints)
    if layout == "processor":
        _processor(grid_pinpoints, image_processor, tokenizer, patch_size, select_strategy).save_pretrained(out)
    else:
        save_legacy_processor(out, image_processor, tokenizer, "LlavaNextImageProcessor" if grid_pinpoints else "CLIPImageProcessor")
    if pad_to_square:
        _patch_json(out / "config.json", {"image_aspect_ratio": "pad"})
    return out


def _classes(grid_pinpoints):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration

    if grid_pinpoints:
        return LlavaNextConfig, LlavaNextForConditionalGeneration, {"image_grid_pinpoints": grid_pinpoints}
    return LlavaConfig, LlavaForConditionalGeneration, {}


def _processor(grid_pinpoints, image_processor, tokenizer, patch_size: int, select_strategy: str):
    from transformers import LlavaNextProcessor, LlavaProcessor

    cls = LlavaNextProcessor if grid_pinpoints else LlavaProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
               vision_feature_select_strategy=select_strategy, chat_template=tokenizer.chat_template)


def save_legacy_processor(out: Path, image_processor, tokenizer, kind: str) -> None:
    """The hub's older layout: ``preprocessor_config.json`` beside a tokenizer whose config holds the template."""
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    _patch_json(out / "preprocessor_config.json", {"image_processor_type": kind})
    template = out / "chat_template.jinja"
    if template.is_file():
        _patch_json(out / "tokenizer_config.json", {"chat_template": template.read_text()})
        template.unlink()


def _image_processor(image_size: int, pad_to_square: bool, grid_pinpoints):
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    if grid_pinpoints:
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        return LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=grid_pinpoints)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size=size, crop_size=crop, do_pad=pad_to_square)


def _patch_json(path: Path, updates: dict) -> None:
    data = json.loads(path.read_text())
    data.update(updates)
    path.write_text(json.dumps(data, indent=2))


def save_spread(model, tokenizer, out: Path) -> None:
    """Save a random model whose matrices are redrawn ~ N(0, 1/fan_in) (transformers' init leaves
    some SigLIP / Gemma weights so small that greedy tokens would never vary), with the
    tokenizer's BOS / EOS / pad ids in its generation config."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    model.save_pretrained(out)
