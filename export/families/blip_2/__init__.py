"""BLIP-2 (``Blip2ForConditionalGeneration``): ViT → Q-Former with learned queries + linear
projection → a decoder-only LM (OPT, Llama …) or an encoder-decoder LM (Flan-T5).

Graphs: vision = the ViT's last hidden state; connector = queries through the Q-Former +
``language_projection`` → (n, num_query_tokens, d_llm); llm = the LM with KV cache. The query
embeddings go in front of the prompt, before BOS (``ImageSpec.placement = "prefix"``), as
``Blip2Processor`` lays them out. Encoder-decoder LMs are exported by ``seq2seq.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec
from ...decoder import decoder_graph, text_llm_spec
from ...graphs import VisionLastHidden
from ...onnx_export import GraphExport
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport, load_pretrained
from .connector import QFormerConnector

ARCHITECTURES = ("Blip2ForConditionalGeneration",)
IMAGE_TOKEN = "<image>"


def load(model_dir: Path, model_cls=None):
    from transformers import Blip2ForConditionalGeneration

    return load_pretrained(model_cls or Blip2ForConditionalGeneration, model_dir)


def vision_graph(model) -> GraphExport:
    vc = model.config.vision_config
    return GraphExport(
        name="vision",
        module=VisionLastHidden(model.vision_model).eval(),
        example_inputs=(torch.randn(2, 3, vc.image_size, vc.image_size),),
        input_names=["pixel_values"],
        output_names=["image_features"],
        dims={"pixel_values": {0: "num_tiles"}},
    )


def connector_graph(model, features: torch.Tensor) -> GraphExport:
    module = QFormerConnector(model.query_tokens, model.qformer, model.language_projection).eval()
    return GraphExport(
        name="connector",
        module=module,
        example_inputs=(features,),
        input_names=["image_features"],
        output_names=["image_embeds"],
        dims={"image_features": {0: "num_tiles"}},
    )


def image_spec(model_dir: Path, config) -> ImageSpec:
    proc = read_processor_config(model_dir)
    return ImageSpec(
        image_token=IMAGE_TOKEN,
        image_token_id=int(config.image_token_index),
        preprocess=clip_style_spec(proc, tokens_per_tile=config.num_query_tokens),
        placement="prefix",
    )


def llm_spec(text, vocab_size: int) -> LLMSpec:
    return text_llm_spec(text, vocab_size, default_context=2048)


def prepare_query_model(model, model_dir: Path, family: str, architecture: str, connector_graph, image: ImageSpec,
                        **extra) -> FamilyExport:
    """BLIP-2-shaped models (BLIP-2, InstructBLIP, MiniGPT-4): ViT → Q-Former connector → a
    decoder-only LM, or an encoder-decoder one (``seq2seq.py``)."""
    config = model.config
    if config.text_config.is_encoder_decoder:
        from .seq2seq import prepare_seq2seq

        return prepare_seq2seq(model, family, architecture, vision_graph, connector_graph, image, **extra)
    vision = vision_graph(model)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    lm = model.language_model
    embed = lm.get_input_embeddings().weight.detach()
    return FamilyExport(
        family=family,
        architecture=architecture,
        graphs=[vision, connector_graph(model, features), decoder_graph(lm.model, lm.lm_head, config.text_config)],
        embed_tokens=embed,
        image=image,
        llm=llm_spec(config.text_config, embed.shape[0]),
        capabilities=Capabilities(connector_text_inputs=extra.pop("connector_text_inputs", False)),
        source_config=config.to_dict(),
        **extra,
    )


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    image = image_spec(model_dir, model.config)
    return prepare_query_model(model, model_dir, "blip_2", ARCHITECTURES[0], connector_graph, image)
