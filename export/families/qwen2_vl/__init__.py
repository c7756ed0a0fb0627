"""The Qwen2-VL line — Qwen2-VL (``Qwen2VLForConditionalGeneration``), Qwen2.5-VL
(``Qwen2_5_VLForConditionalGeneration``) and Qwen3-VL (``Qwen3VLForConditionalGeneration``):
native-resolution ViT with 2-D rotary positions → patch merger (2×2 patches per token) → Qwen2 /
Qwen3 decoder with M-RoPE. Qwen2.5-VL's tower has RMSNorm, gated MLPs and windowed attention
outside its ``fullatt_block_indexes`` layers (vision.py). Qwen3-VL's adds a learned position grid
and DeepStack features that the decoder adds to its first layers' image tokens; its M-RoPE
interleaves the three rows' frequencies (inside the graph), and each temporal patch of a video is
its own timestamped run of slots in the prompt (qwen3.py).

Graphs: vision = the tower over one image's patches, taking the host-computed ``rotary_pos_ids``
(vision.py); connector = the patch merger; llm = the decoder with KV cache and (3, batch, seq)
position_ids. Images: the ``native`` kernel scheme (smart_resize inside [min_pixels, max_pixels],
patches in merge-window order). Positions: the manifest declares ``mrope``; the runtime builds
them from each image's token grid (runtime/positions/mrope.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ....kernels.native import native_geometry
from ....kernels.spec import PreprocessSpec, TileLayout
from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec, PositionSpec, TokenInput
from ...decoder import decoder_graph, text_llm_spec
from ...graphs import Connector
from ...onnx_export import GraphExport
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, read_processor_config, read_video_processor_config
from ..base import FamilyExport, load_pretrained
from . import qwen3
from .qwen3 import GridVision
from .vision import NativeVision, WindowedVision

ARCHITECTURES = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
                 "Qwen3VLForConditionalGeneration")
MODEL_CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                 "qwen3_vl": "Qwen3VLForConditionalGeneration"}
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
STOP_STRINGS = ["<|im_end|>"]
# Qwen3VLProcessor.replace_video_token: each temporal patch, its timestamp and its own vision span
QWEN3_VIDEO_FRAME = "<{seconds} seconds><|vision_start|>{video}<|vision_end|>"


def load(model_dir: Path):
    import json

    import transformers

    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    return load_pretrained(getattr(transformers, MODEL_CLASSES[model_type]), model_dir)


def _budget(proc: dict, default_min: int, default_max: int) -> tuple[int, int]:
    """``size`` {shortest_edge, longest_edge} (transformers 5) or ``min_pixels`` / ``max_pixels`` (hub checkpoints)."""
    size = proc.get("size") or {}
    return (int(proc.get("min_pixels") or size.get("shortest_edge") or default_min),
            int(proc.get("max_pixels") or size.get("longest_edge") or default_max))


def native_spec(proc: dict, vision_config, video: dict | None = None) -> PreprocessSpec:
    """The image processor's budget and patching, and the video processor's budget (its defaults
    when the checkpoint has no video processor config: 128·28² … 768·28² a frame; Qwen3-VL
    128·32² … 768·32² a clip, frames sampled by linspace)."""
    grid = int(getattr(vision_config, "num_position_embeddings", 0) or 0)  # Qwen3-VL's learned position grid
    video = video or {}
    if video.get("cap_pixels_per_frame"):
        raise ValueError("the video processor config sets cap_pixels_per_frame, which vlmforge does not implement yet; "
                         "remove it from video_preprocessor_config.json to export with the uncapped budget")
    min_pixels, max_pixels = _budget(proc, 56 * 56, 28 * 28 * 1280)
    video_min, video_max = _budget(video, 128 * 32 * 32, 32 * 32 * 768) if grid else _budget(video, 128 * 28 * 28,
                                                                                              28 * 28 * 768)
    mean = proc.get("image_mean", OPENAI_CLIP_MEAN)
    return PreprocessSpec(
        scheme="native",
        resize="none",
        resample=proc.get("resample", 3),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0,
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(m) for m in mean],
        std=[float(s) for s in proc.get("image_std", OPENAI_CLIP_STD)],
        patch_size=int(proc.get("patch_size", vision_config.patch_size)),
        merge_size=int(proc.get("merge_size", vision_config.spatial_merge_size)),
        temporal_patch_size=int(proc.get("temporal_patch_size", vision_config.temporal_patch_size)),
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        video_min_pixels=video_min,
        video_max_pixels=video_max,
        window_size=int(getattr(vision_config, "window_size", 0) or 0),
        image_newline=False,
        position_grid=math.isqrt(grid),
        video_budget="clip" if grid else "frame",
        frame_sampling="linspace" if grid else "qwen2",
    )


def vision_graph(model, spec: PreprocessSpec) -> GraphExport:
    # a 4×6 grid of patches (two merge windows down, three across): sizes torch.export won't specialise
    grid = (4, 6)
    pixels = torch.randn(grid[0] * grid[1], 3 * spec.temporal_patch_size * spec.patch_size**2)
    geometry = native_geometry(TileLayout(grid[0] * grid[1], (0, 0), 0, grid), spec)  # rotary_pos_ids [, window_ids]
    visual = model.model.visual
    outputs = ["image_features"]
    if spec.position_grid:
        module = GridVision(visual)
        outputs += ["deepstack_features"] if module.capture else []
    elif spec.window_size:
        module = WindowedVision(visual, visual.config.fullatt_block_indexes)
    else:
        module = NativeVision(visual)
    return GraphExport(
        name="vision",
        module=module.eval(),
        example_inputs=(pixels, *(torch.from_numpy(a) for a in geometry.values())),
        input_names=["pixel_values", *geometry],
        output_names=outputs,
        dims={name: {0: "num_patches"} for name in ["pixel_values", *geometry]},
    )


def connector_graph(model, features: torch.Tensor) -> GraphExport:
    return GraphExport(
        name="connector",
        module=Connector(model.model.visual.merger).eval(),  # the patch merger: 2×2 patches → one token
        example_inputs=(features,),
        input_names=["image_features"],
        output_names=["image_embeds"],
        dims={"image_features": {0: "num_patches"}},
    )


def llm_spec(config, vocab_size: int, merge_size: int) -> LLMSpec:
    """The decoder's KV layout, M-RoPE positions (Qwen2.5-VL: video time steps from
    tokens_per_second) and Qwen3-VL's DeepStack input."""
    text = config.text_config
    per_second = float(getattr(config.vision_config, "tokens_per_second", 0) or 0)
    deepstack = len(getattr(config.vision_config, "deepstack_visual_indexes", ()) or ())
    inputs = [TokenInput(qwen3.DEEPSTACK_INPUT, "deepstack", deepstack)] if deepstack else []
    return text_llm_spec(text, vocab_size, int(text.max_position_embeddings),
                         positions=PositionSpec("mrope", spatial_merge_size=merge_size, tokens_per_second=per_second),
                         token_inputs=inputs)


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    spec = native_spec(read_processor_config(model_dir), config.vision_config, read_video_processor_config(model_dir))
    vision = vision_graph(model, spec)
    with torch.no_grad():  # the connector's example input: the tower's output for the vision example
        features = vision.module(*vision.example_inputs)
    deepstack = isinstance(features, tuple)  # Qwen3-VL with DeepStack layers
    if deepstack:
        connector, llm = qwen3.connector_graph(model, features), qwen3.llm_graph(model)
    else:
        connector = connector_graph(model, features.contiguous())
        llm = decoder_graph(model.model.language_model, model.lm_head, config.text_config, position_rows=3)
    embed = model.get_input_embeddings().weight.detach()
    return FamilyExport(
        family=config.model_type,
        architecture=type(model).__name__,
        graphs=[vision, connector, llm],
        embed_tokens=embed,
        image=ImageSpec(image_token=IMAGE_TOKEN, image_token_id=int(config.image_token_id), preprocess=spec,
                        video_token=VIDEO_TOKEN, video_token_id=int(config.video_token_id),
                        video_frame_template=QWEN3_VIDEO_FRAME if spec.position_grid else None),
        llm=llm_spec(config, embed.shape[0], spec.merge_size),
        capabilities=Capabilities(uses_mrope=True),
        source_config=config.to_dict(),
        stop_strings=list(STOP_STRINGS),
    )

