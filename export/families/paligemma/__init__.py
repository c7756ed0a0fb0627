"""PaliGemma 1 and 2 (``PaliGemmaForConditionalGeneration``): SigLIP → linear projector → Gemma
(PaliGemma 2: Gemma 2, with its attention and final logit soft-capping).

What differs at run time, all declared in the manifest:
- prefix-LM attention (``llm.attention.pattern = "prefix"``): the images, BOS and the prompt see
  each other bidirectionally, generated tokens causally — the llm graph takes ``token_spans``;
- images go first, before BOS (``image.placement = "prefix"``), the prompt ends with "\\n"
  (``prompt_suffix``), BOS is put by the runtime (the processor does, not the tokenizer);
- positions count from 1 (``llm.positions.offset``);
- the embedding table is Gemma's scaled one (× √hidden), image features are not scaled.
PaliGemma 2's sliding-window layers see everything up to the window: the context is capped at
the window, where every layer is exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ....runtime.manifest import AttentionSpec, Capabilities, ImageSpec, PositionSpec
from ...attention import SpanDecoderWithCache
from ...decoder import EXAMPLE_BATCH, EXAMPLE_SEQ, decoder_graph, embedding_table, text_llm_spec
from ...graphs import Connector, VisionLastHidden
from ...onnx_export import GraphExport
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport, load_pretrained

ARCHITECTURES = ("PaliGemmaForConditionalGeneration",)
IMAGE_TOKEN = "<image>"


def load(model_dir: Path):
    from transformers import PaliGemmaForConditionalGeneration

    return load_pretrained(PaliGemmaForConditionalGeneration, model_dir)


def vision_graph(model, config) -> GraphExport:
    vc = config.vision_config
    pixels = torch.randn(2, 3, vc.image_size, vc.image_size)
    return GraphExport(name="vision", module=VisionLastHidden(model.model.vision_tower).eval(),
                       example_inputs=(pixels,), input_names=["pixel_values"], output_names=["image_features"],
                       dims={"pixel_values": {0: "num_tiles"}})


def connector_graph(model, features: torch.Tensor) -> GraphExport:
    return GraphExport(name="connector", module=Connector(model.model.multi_modal_projector).eval(),
                       example_inputs=(features,), input_names=["image_features"], output_names=["image_embeds"],
                       dims={"image_features": {0: "num_tiles"}})


def llm_graph(model, text) -> GraphExport:
    spans = torch.tensor([[0, 0, -1], [0, -1, -1]])  # (EXAMPLE_BATCH, EXAMPLE_SEQ): a span and causal tokens
    assert spans.shape == (EXAMPLE_BATCH, EXAMPLE_SEQ)
    module = SpanDecoderWithCache(model.model.language_model, model.lm_head, text.num_hidden_layers,
                                  getattr(text, "final_logit_softcapping", None) or 0.0)
    return decoder_graph(model.model.language_model, model.lm_head, text,
                         extra_inputs=[("token_spans", spans, {0: "batch", 1: "sequence"})], module=module)


def context(text) -> int:
    """The model's context, capped at Gemma 2's sliding window (below it every layer attends fully)."""
    longest = int(getattr(text, "max_position_embeddings", 8192))
    window = getattr(text, "sliding_window", None)
    return min(longest, int(window)) if window else longest


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    text = config.text_config
    vision = vision_graph(model, config)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    embed = embedding_table(model)
    proc = read_processor_config(model_dir)
    tokens = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return FamilyExport(
        family="paligemma",
        architecture=ARCHITECTURES[0],
        graphs=[vision, connector_graph(model, features), llm_graph(model, text)],
        embed_tokens=embed,
        image=ImageSpec(image_token=IMAGE_TOKEN, image_token_id=int(config.image_token_id), placement="prefix",
                        preprocess=clip_style_spec(proc, tokens_per_tile=tokens)),
        llm=text_llm_spec(text, embed.shape[0], context(text), positions=PositionSpec(offset=1),
                          attention=AttentionSpec(pattern="prefix")),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
        tokenizer_overrides={"add_special_tokens": False, "prefix_ids": [int(text.bos_token_id)]},
        prompt_suffix="\n",
    )
