"""InternVL 2.5 / 3 (``InternVLForConditionalGeneration``): InternViT → pixel shuffle + MLP projector → decoder LM.

Graphs (graphs.py): vision = the tower up to ``vision_feature_layer``, CLS dropped; connector =
pixel shuffle by ``downsample_ratio`` (2×2 patches → one token) + ``multi_modal_projector``;
llm = ``language_model`` + ``lm_head`` with KV cache (Qwen2 for InternVL3 / 2.5-1B, Llama …).

Images: the ``dynamic`` kernel scheme — ``InternVLProcessor`` runs the GotOcr2 image processor with
``crop_to_patches=True`` whatever its own config says: a grid of [min_patches, max_patches] tiles
at the closest aspect ratio plus a thumbnail. Every tile is ``image_seq_length`` tokens, in tile
order, no newlines.

Prompt: the placeholder is the tokenizer's ``context_image_token`` (``<IMG_CONTEXT>``, which the
checkpoint's chat template writes for an image item); the processor turns each into
``<img>`` + ``<IMG_CONTEXT>`` × (tiles · image_seq_length) + ``</img>``, which the manifest
declares as the image span [start_image_token, end_image_token] around the slots.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec
from ...decoder import decoder_graph, text_llm_spec
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, read_processor_config
from ..base import FamilyExport, load_pretrained
from .graphs import connector_graph, square_size, vision_graph

ARCHITECTURES = ("InternVLForConditionalGeneration",)
# the tokenizer's named tokens InternVLProcessor reads (tokenizer.start_image_token …)
TOKEN_NAMES = ("context_image_token", "start_image_token", "end_image_token")


def load(model_dir: Path):
    from transformers import InternVLForConditionalGeneration

    return load_pretrained(InternVLForConditionalGeneration, model_dir)


def tokens_per_tile(config, tile: int) -> int:
    """(tile / patch)² patches, pixel-shuffled by downsample_ratio: the processor's image_seq_length."""
    side = tile // square_size(config.vision_config.patch_size, "patch_size")
    return int(side * config.downsample_ratio) ** 2


def check_config(config) -> None:
    if config.vision_feature_select_strategy != "default":
        raise ValueError("InternVL lays the tower's patches on a square grid without the CLS token, which needs "
                         f"vision_feature_select_strategy='default'; this config has "
                         f"{config.vision_feature_select_strategy!r}")
    if not isinstance(config.vision_feature_layer, int):
        raise ValueError(f"vision_feature_layer must be one layer index for InternVL, got "
                         f"{config.vision_feature_layer!r}")


def preprocess_spec(model_dir: Path, config) -> PreprocessSpec:
    proc = read_processor_config(model_dir)
    tile = square_size(config.vision_config.image_size, "image_size")
    size = proc.get("size") or {"height": 384, "width": 384}  # GotOcr2ImageProcessor's default
    if not isinstance(size, dict) or {size.get("height"), size.get("width")} != {tile}:
        raise ValueError(f"the image processor's size {size} differs from the vision tower's {tile}×{tile} tiles; "
                         f"set size to {{'height': {tile}, 'width': {tile}}} in the processor config")
    if not proc.get("do_resize", True):
        raise ValueError("the image processor config sets do_resize=false, but InternVL's tower reads "
                         f"{tile}×{tile} tiles; set do_resize to true")
    return PreprocessSpec(
        scheme="dynamic",
        resize="none",
        size=[tile],
        tile_size=tile,
        patch_size=square_size(config.vision_config.patch_size, "patch_size"),
        min_tiles=int(proc.get("min_patches", 1)),
        max_tiles=int(proc.get("max_patches", 12)),
        resample=proc.get("resample", 3),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0,
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(v) for v in proc.get("image_mean", OPENAI_CLIP_MEAN)],
        std=[float(v) for v in proc.get("image_std", OPENAI_CLIP_STD)],
        tokens_per_tile=tokens_per_tile(config, tile),
        image_newline=False,
    )


def processor_seq_length(model_dir: Path) -> int | None:
    """InternVLProcessor's image_seq_length (processor_config.json), None where the file has none."""
    path = Path(model_dir) / "processor_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("image_seq_length")
    return None if value is None else int(value)


def image_tokens(model_dir: Path) -> dict[str, str]:
    """The tokenizer's context / start / end image tokens, as InternVLProcessor reads them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    missing = [name for name in TOKEN_NAMES if not getattr(tokenizer, name, None)]
    if missing:
        raise ValueError(f"the tokenizer in {model_dir} does not name InternVL's image tokens {missing}; its "
                         "tokenizer_config.json needs extra_special_tokens {'context_image_token': '<IMG_CONTEXT>', "
                         "'start_image_token': '<img>', 'end_image_token': '</img>'} as InternVL checkpoints have")
    return {name: getattr(tokenizer, name) for name in TOKEN_NAMES}


def image_spec(model_dir: Path, config) -> ImageSpec:
    check_config(config)
    spec = preprocess_spec(model_dir, config)
    declared = processor_seq_length(model_dir)
    if declared is not None and declared != spec.tokens_per_tile:
        raise ValueError(f"processor_config.json says image_seq_length={declared} but the tower gives "
                         f"{spec.tokens_per_tile} tokens per tile ((tile / patch)² · downsample_ratio²); "
                         "the processor and the model do not belong together")
    tokens = image_tokens(model_dir)
    return ImageSpec(image_token=tokens["context_image_token"], image_token_id=int(config.image_token_id),
                     preprocess=spec, span=[tokens["start_image_token"], tokens["end_image_token"]])


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    image = image_spec(model_dir, config)
    tile = image.preprocess.tile_size
    vision = vision_graph(model, config, tile)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    text = config.text_config
    embed = model.get_input_embeddings().weight.detach()
    return FamilyExport(
        family="internvl",
        architecture=ARCHITECTURES[0],
        graphs=[vision, connector_graph(model, config, tile, features),
                decoder_graph(model.model.language_model, model.lm_head, text)],
        embed_tokens=embed,
        image=image,
        llm=text_llm_spec(text, embed.shape[0]),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
    )
