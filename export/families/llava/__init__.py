"""LLaVA / LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP-style tower → MLP projector → decoder LM.

Graphs: vision = tower up to ``vision_feature_layer`` (CLS dropped for the "default" strategy),
connector = ``multi_modal_projector``, llm = ``language_model`` + ``lm_head`` with KV cache.
Images: CLIP preprocessing, or pad-to-square with the mean colour first when the checkpoint
says ``image_aspect_ratio="pad"`` (original LLaVA-1.5) or its processor has ``do_pad``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ....runtime.manifest import Capabilities, ImageSpec
from ...decoder import decoder_graph, text_llm_spec
from ...graphs import Connector, VisionFeatures
from ...onnx_export import GraphExport
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport, load_pretrained

ARCHITECTURES = ("LlavaForConditionalGeneration",)
IMAGE_TOKEN = "<image>"


def load(model_dir: Path):
    from transformers import LlavaForConditionalGeneration

    return load_pretrained(LlavaForConditionalGeneration, model_dir)


def feature_layers(config) -> list[int]:
    layer = config.vision_feature_layer
    return [layer] if isinstance(layer, int) else list(layer)


def num_patches(vision_config) -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2


def vision_graph(model, config) -> GraphExport:
    vc = config.vision_config
    drop_cls = config.vision_feature_select_strategy == "default"
    module = VisionFeatures(model.model.vision_tower, feature_layers(config), drop_cls).eval()
    pixels = torch.randn(2, 3, vc.image_size, vc.image_size)
    return GraphExport(
        name="vision",
        module=module,
        example_inputs=(pixels,),
        input_names=["pixel_values"],
        output_names=["image_features"],
        dims={"pixel_values": {0: "num_tiles"}},
    )


def connector_graph(model, config, vision_out: torch.Tensor) -> GraphExport:
    return GraphExport(
        name="connector",
        module=Connector(model.model.multi_modal_projector).eval(),
        example_inputs=(vision_out,),
        input_names=["image_features"],
        output_names=["image_embeds"],
        dims={"image_features": {0: "num_tiles", 1: "num_patches"}},
    )


def image_spec(model_dir: Path, config) -> ImageSpec:
    proc = read_processor_config(model_dir)
    pad = bool(proc.get("do_pad", False)) or getattr(config, "image_aspect_ratio", None) == "pad"
    tokens = num_patches(config.vision_config) + (0 if config.vision_feature_select_strategy == "default" else 1)
    return ImageSpec(
        image_token=IMAGE_TOKEN,
        image_token_id=int(config.image_token_id),
        preprocess=clip_style_spec(proc, tokens_per_tile=tokens, pad_to_square=pad),
    )


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    vision = vision_graph(model, config)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    text = config.text_config
    embed = model.get_input_embeddings().weight.detach()
    return FamilyExport(
        family="llava",
        architecture=ARCHITECTURES[0],
        graphs=[vision, connector_graph(model, config, features), decoder_graph(
            model.model.language_model, model.lm_head, text)],
        embed_tokens=embed,
        image=image_spec(model_dir, config),
        llm=text_llm_spec(text, embed.shape[0]),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
    )
