"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP → average pooling to ``mm_tokens_per_image``
tokens, RMSNorm, projection → Gemma 3 decoder with interleaved sliding-window and global layers.

What differs at run time, all declared in the manifest:
- each image's tokens attend to each other bidirectionally (``llm.attention.pattern = "image"``,
  transformers' ``token_type_ids == 1`` groups); the llm graph takes ``token_spans``;
- the sliding-window layers see only the last ``sliding_window`` positions, the global ones all:
  both masks are built in the graph from the same spans (export/attention.py);
- the processor writes ``\\n\\n<start_of_image>`` + soft tokens + ``<end_of_image>\\n\\n`` for each
  ``<start_of_image>`` the prompt holds: the placeholder, and the span around the slots;
- the embedding table is Gemma's scaled one (× √hidden), image features are not scaled.
Not done: pan-and-scan crops (the processor's ``do_pan_and_scan``; refused at export), and the
sliding layers' caches are not bounded to the window (masked instead: exact, not smaller).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ....runtime.manifest import AttentionSpec, Capabilities, ImageSpec, LLMSpec
from ...attention import SpanDecoderWithCache
from ...decoder import decoder_graph, embedding_table, kv_layout
from ...graphs import Connector, VisionLastHidden
from ...onnx_export import GraphExport
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport, load_pretrained

ARCHITECTURES = ("Gemma3ForConditionalGeneration",)


def load(model_dir: Path):
    from transformers import Gemma3ForConditionalGeneration

    return load_pretrained(Gemma3ForConditionalGeneration, model_dir)


def vision_graphs(model, config) -> list[GraphExport]:
    vc = config.vision_config
    pixels = torch.randn(2, 3, vc.image_size, vc.image_size)
    tower = VisionLastHidden(model.model.vision_tower).eval()
    with torch.no_grad():
        features = tower(pixels).contiguous()
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=Connector(model.model.multi_modal_projector).eval(),
                    example_inputs=(features,), input_names=["image_features"], output_names=["image_embeds"],
                    dims={"image_features": {0: "num_tiles"}}),
    ]


def llm_graph(model, text) -> GraphExport:
    types = set(getattr(text, "layer_types", None) or ["full_attention"])
    window = int(text.sliding_window) if "sliding_attention" in types else 0
    module = SpanDecoderWithCache(model.model.language_model, model.lm_head, text.num_hidden_layers,
                                  getattr(text, "final_logit_softcapping", None) or 0.0, window)
    spans = torch.tensor([[0, 0, -1], [-1, 1, 1]])  # (batch 2, seq 3): image spans and causal tokens
    return decoder_graph(model.model.language_model, model.lm_head, text,
                         extra_inputs=[("token_spans", spans, {0: "batch", 1: "sequence"})], module=module)


def image_spec(model_dir: Path, config) -> ImageSpec:
    proc = read_processor_config(model_dir)
    if proc.get("do_pan_and_scan"):
        raise ValueError("this checkpoint's processor turns on pan-and-scan crops, which vlmforge does not do yet; "
                         "set do_pan_and_scan to false in its processor config to export it with one view per image")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    boi, eoi, soft = tok.boi_token, tok.eoi_token, tok.image_token
    return ImageSpec(image_token=soft, image_token_id=int(config.image_token_id), placeholder=boi,
                     span=[f"\n\n{boi}", f"{eoi}\n\n"],
                     preprocess=clip_style_spec(proc, tokens_per_tile=int(config.mm_tokens_per_image)))


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    text = config.text_config
    num_layers, kv_heads, head_dim = kv_layout(text)
    embed = embedding_table(model)
    return FamilyExport(
        family="gemma3",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(model, config), llm_graph(model, text)],
        embed_tokens=embed,
        image=image_spec(model_dir, config),
        llm=LLMSpec(num_layers=num_layers, num_kv_heads=kv_heads, head_dim=head_dim, hidden_size=text.hidden_size,
                    vocab_size=embed.shape[0], max_context=int(text.max_position_embeddings),
                    attention=AttentionSpec(pattern="image")),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
    )
