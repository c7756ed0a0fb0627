"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP → average pooling to ``mm_tokens_per_image``
tokens, RMSNorm, projection → Gemma 3 decoder with interleaved sliding-window and global layers.

What differs at run time, all declared in the manifest:
- each image's tokens attend to each other bidirectionally (``llm.attention.pattern = "image"``,
  transformers' ``token_type_ids == 1`` groups); the llm graph takes ``token_spans``;
- the sliding-window layers see only the last ``sliding_window`` positions, the global ones all:
  both masks are built in the graph from the same spans (export/attention.py);
- the processor writes ``\\n\\n<start_of_image>`` + soft tokens + ``<end_of_image>\\n\\n`` for each
  ``<start_of_image>`` the prompt holds: the placeholder, and the span around the slots;
- the embedding table is Gemma's scaled one (× √hidden), image features are not scaled;
- with the processor's ``do_pan_and_scan`` a very wide or tall picture is also cut into crops
  (kernels/pan_and_scan.py), each its own run of slots and its own bidirectional span, written
  "Here is the original image … and here are some crops …" (``image.tile_prompt``).
- the sliding layers' caches keep only their last window − 1 + min(64, window) tokens
  (``llm.attention.window_layers``): with Gemma 3 4B's 1,024-token window, 5 of every 6 layers'
  caches stop at 1,087 tokens whatever the context.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ....runtime.manifest import AttentionSpec, Capabilities, ImageSpec, TilePromptSpec
from ...attention import SpanDecoderWithCache
from ...decoder import EXAMPLE_SEQ, EXAMPLE_WINDOW_PAST, decoder_graph, embedding_table, text_llm_spec
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


# tokens a bounded sliding layer keeps beyond the window − 1 it needs (at most the window again): a
# chat's next turn re-renders the last answer and its end-of-turn marks, and may then reuse the cache
# from up to this many tokens back (runtime/serving/prefix_cache.py)
WINDOW_SLACK = 64


def window_layers(text) -> tuple[int, list[int], int]:
    """(window, the sliding layers whose cache is bounded, the tokens each keeps). A bound shorter
    than the graph's example step (EXAMPLE_WINDOW_PAST + EXAMPLE_SEQ tokens) would be traced as a
    fixed size: such tiny windows keep every layer's whole cache, masked — as exact, not smaller."""
    types = list(getattr(text, "layer_types", None) or [])
    window = int(text.sliding_window) if "sliding_attention" in types else 0
    keep = window - 1 + min(WINDOW_SLACK, window)
    if keep < EXAMPLE_WINDOW_PAST + EXAMPLE_SEQ:
        return window, [], 0
    return window, [i for i, t in enumerate(types) if t == "sliding_attention"], keep


def llm_graph(model, text) -> GraphExport:
    window, bounded, keep = window_layers(text)
    module = SpanDecoderWithCache(model.model.language_model, model.lm_head, text.num_hidden_layers,
                                  getattr(text, "final_logit_softcapping", None) or 0.0, window, window_cache=keep)
    spans = torch.tensor([[0, 0, -1], [-1, 1, 1]])  # (batch 2, seq 3): image spans and causal tokens
    return decoder_graph(model.model.language_model, model.lm_head, text, module=module, window_layers=bounded,
                         extra_inputs=[("token_spans", spans, {0: "batch", 1: "sequence"})])


# Gemma3Processor's defaults where the image processor's config leaves them null
PAN_AND_SCAN_DEFAULTS = {"pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
                         "pan_and_scan_min_ratio_to_activate": 1.2}
# Gemma3Processor.replace_image_token: a picture with crops is the original, then its crops
PAN_AND_SCAN_PROMPT = TilePromptSpec(
    global_view="Here is the original image {image} and here are some crops to help you see better ",
    tile="{image}", separator=" ", row_end="", single="{image}", global_first=True)


def preprocess_spec(proc: dict, tokens_per_tile: int):
    """One view per picture, or with ``do_pan_and_scan`` the picture and its crops (kernels/pan_and_scan.py)."""
    spec = clip_style_spec(proc, tokens_per_tile=tokens_per_tile)
    if not proc.get("do_pan_and_scan"):
        return spec
    value = {k: proc.get(k) if proc.get(k) is not None else v for k, v in PAN_AND_SCAN_DEFAULTS.items()}
    return replace(spec, scheme="pan_and_scan", pan_min_crop=int(value["pan_and_scan_min_crop_size"]),
                   pan_max_crops=int(value["pan_and_scan_max_num_crops"]),
                   pan_min_ratio=float(value["pan_and_scan_min_ratio_to_activate"]))


def image_spec(model_dir: Path, config) -> ImageSpec:
    from transformers import AutoTokenizer

    proc = read_processor_config(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    boi, eoi, soft = tok.boi_token, tok.eoi_token, tok.image_token
    spec = preprocess_spec(proc, int(config.mm_tokens_per_image))
    return ImageSpec(image_token=soft, image_token_id=int(config.image_token_id), placeholder=boi,
                     span=[f"\n\n{boi}", f"{eoi}\n\n"], preprocess=spec,
                     tile_prompt=PAN_AND_SCAN_PROMPT if spec.scheme == "pan_and_scan" else None)


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    text = config.text_config
    window, bounded, keep = window_layers(text)
    embed = embedding_table(model)
    return FamilyExport(
        family="gemma3",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(model, config), llm_graph(model, text)],
        embed_tokens=embed,
        image=image_spec(model_dir, config),
        llm=text_llm_spec(text, embed.shape[0], int(text.max_position_embeddings),
                          attention=AttentionSpec(pattern="image", window=window, window_layers=bounded,
                                                  window_cache=keep)),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
    )
