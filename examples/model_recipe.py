"""The default model's recipe: sizes, optimiser settings and the checkpoint skeleton it starts from.

A ``LlavaNextForConditionalGeneration``: CLIP-style vision tower (48 px tiles, 16 px patches, so
9 tokens per tile), a two-layer MLP projector and a Llama-style decoder, with AnyRes pinpoints
[[48, 96], [96, 48], [96, 96]] so pictures are cut into 1×2, 2×1 or 2×2 grids plus a base view.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..export.tiny import IMAGE_TOKEN, train_tokenizer
from .shapes_data import all_texts


@dataclass(frozen=True)
class Recipe:
    seed: int = 4  # by validation (MODEL_CARD.md): seed 4 0.976; seeds 2 / 0 0.904 / 0.860 (shape binding late / not learned)
    vision_steps: int = 2000  # stage 1: the vision tower alone, dense patch labels (vision_pretrain.py)
    vision_warmup_steps: int = 50
    # stage 1 option, off: each patch also names its column and row band of the picture (of this many). Meant for
    # left/right/above/below; measured, it did not help them (validation relation 0.54 at weight 0.2, as without)
    # and at weight 1.0 it slowed the kind labels (shape-patch accuracy 0.65 vs 0.91 after 1500 steps)
    position_bins: int = 0
    position_weight: float = 0.2
    # stage 1: base-view patches of the shape beyond all others on a side also learn that flag
    # (vision_pretrain.extreme_targets), what "What color is the leftmost shape?" looks up; 0 turns it off
    extreme_weight: float = 1.0
    # stage 1 option, off: every base-view patch also learns the colour of each side's extreme shape
    # (vision_pretrain.layout_targets), through the tower's last layout_layers layers only. Learned on 0.85 of
    # slots (0.99 through the whole tower, which slowed the kind labels to 0.48), but after stage 2 relation was
    # 0.72 and "What color is the star?" 0.58: all 0.848 against 0.916 without it (MODEL_CARD.md)
    layout_weight: float = 0.0
    layout_layers: int = 1
    vision_batch_size: int = 32
    steps: int = 3000  # stage 2: the whole model, LLaVA loss (binding "which shape is <colour>" emerges at 2000-3000)
    batch_size: int = 16  # small batches: more updates for the same pictures (what limits learning here)
    turns: int = 8  # questions per picture, as a multi-turn conversation (the first is the eval format)
    describe: int = 1  # 1: end each conversation with a caption turn (every shape, left to right)
    # 1: odd seeds' captions read "the star is orange, the circle is red" (shapes_data.describe(kind_first)):
    # colour read off a named shape, as "What color is the star?" asks; even seeds keep "orange star, red circle"
    kind_first: int = 1
    # 1: after its questions, each conversation also asks the colour of the extreme shape on every other side
    # that has one (shapes_data.other_sides): 2-4 spatial look-ups per picture instead of at most one
    all_sides: int = 1
    # 1: training pictures are drawn as the evaluation draws them, each with a question type first, the types in
    # turn (relation and largest scenes then have 2+ shapes); 0: every picture 1-4 shapes, questions in seeded order
    first_types: int = 1
    # option, off: grounding turns ("Which column is the star in?", shapes_data.locate) after the questions.
    # Measured at 2 (vocab 400): the LM answered them at 0.41 (4 bands, chance 0.25) after 3000 steps, relation
    # stayed at chance (0.56) and overall validation ended at 0.824 against 0.896 without them
    locate: int = 0
    lr: float = 5e-4  # 2e-3 collapses the vision tower (its gradients vanish); 1e-3 spikes
    vision_lr: float = 1e-3  # stage 1 (dense patch labels: a plain classification loss, stable at 1e-3)
    vision_lr_scale: float = 0.2  # stage 2: the pretrained tower learns at lr × this
    min_lr_ratio: float = 0.05  # cosine decay ends at lr × this
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    threads: int = 1  # fixed: results depend on it; and on a shared 2-core machine 2 threads spin-wait (5× slower)
    eval_every: int = 500
    num_val: int = 250  # validation questions (teacher-forced exact match) at each eval
    vocab_size: int = 384
    tile: int = 48
    patch: int = 16  # 3×3 tokens per tile: a patch holds much of a shape; 4× fewer tokens than 8 (and faster to learn)
    grid_pinpoints: list = field(default_factory=lambda: [[48, 96], [96, 48], [96, 96]])
    sincos_positions: int = 1  # 1: vision position embeddings start from 2-D sin-cos (init_sincos_positions)
    vision_hidden: int = 128
    vision_layers: int = 6
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    max_positions: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(recipe: Recipe):
    """Byte-level BPE trained on every question and answer of the task; ``<image>`` is special."""
    texts = all_texts(grounding=recipe.locate > 0, kind_first=recipe.kind_first > 0)
    tokenizer = train_tokenizer(recipe.vocab_size, corpus=texts)
    for text in texts:  # the vocabulary must hold every answer word whole: one token + EOS
        if text.startswith(" ") and "," not in text and len(tokenizer(text, add_special_tokens=False)["input_ids"]) != 1:
            raise ValueError(f"answer {text!r} is not a single token; raise vocab_size ({recipe.vocab_size})")
    return tokenizer


def build_model(recipe: Recipe, tokenizer):
    """A randomly initialised model (seeded by the caller) with the recipe's sizes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=recipe.vision_hidden, intermediate_size=4 * recipe.vision_hidden,
        num_hidden_layers=recipe.vision_layers, num_attention_heads=recipe.vision_heads,
        image_size=recipe.tile, patch_size=recipe.patch, projection_dim=recipe.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.text_hidden, intermediate_size=3 * recipe.text_hidden,
        num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.text_heads,
        num_key_value_heads=recipe.text_kv_heads, max_position_embeddings=recipe.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaNextConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(recipe.tile // recipe.patch) ** 2,
        vision_feature_layer=-1,  # a small tower: every layer earns its place
        vision_feature_select_strategy="default",
        image_grid_pinpoints=recipe.grid_pinpoints,
    )
    model = LlavaNextForConditionalGeneration(config)
    if recipe.sincos_positions:
        init_sincos_positions(model.model.vision_tower.embeddings.position_embedding.weight, recipe.tile // recipe.patch)
    gen = model.generation_config
    gen.eos_token_id, gen.bos_token_id, gen.pad_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id
    gen.max_new_tokens, gen.do_sample = 8, False  # answers are one word + EOS
    return model


def init_sincos_positions(weight, per_side: int, scale: float = 0.5) -> None:
    """Start the tower's learned position embeddings (1 + per_side², hidden) from 2-D sin-cos
    values (as MAE does), CLS row zero: a from-scratch ViT then knows from step one which patches
    are neighbours, which shapes and relations need. They stay trainable."""
    import torch

    dim = weight.shape[1]
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (dim/4,)
    pos = torch.arange(per_side, dtype=torch.float32)
    gy, gx = torch.meshgrid(pos, pos, indexing="ij")  # (P, P) row / column of each patch
    parts = [f(g.reshape(-1, 1) * freq) for g in (gy, gx) for f in (torch.sin, torch.cos)]  # 4 × (P², dim/4)
    with torch.no_grad():
        weight.zero_()
        weight[1:, : 4 * quarter] = scale * torch.cat(parts, dim=1)


def save_processor(recipe: Recipe, out: Path) -> None:
    """LlavaNextImageProcessor with shortest_edge = crop = tile: transformers' PIL processor and
    vlmforge's anyres kernel then produce the same tiles."""
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    size, crop = {"shortest_edge": recipe.tile}, {"height": recipe.tile, "width": recipe.tile}
    LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=recipe.grid_pinpoints).save_pretrained(out)
    path = out / "preprocessor_config.json"
    data = json.loads(path.read_text())
    data["image_processor_type"] = "LlavaNextImageProcessor"
    path.write_text(json.dumps(data, indent=2))


def max_tiles(recipe: Recipe) -> int:
    """The most tiles one picture can produce: the base view + the largest grid."""
    return 1 + max((h // recipe.tile) * (w // recipe.tile) for h, w in recipe.grid_pinpoints)
