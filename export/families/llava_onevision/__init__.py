"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tower → 2-layer MLP projector →
Qwen2 decoder, with AnyRes-max tiling and video.

Graphs are LLaVA's (tower up to the feature layer, projector, decoder LM). Images (kernels/anyres.py):
the base view plus the best grid of up to 6×6 tiles, exactly LLaVA-NeXT's pixels; after the
connector the runtime unpads the grid, bilinearly downsamples it when it holds more than N tiles'
worth of patches ("anyres_max_N", ``anyres_max_tiles``) and ends every row with ``image_newline``,
as ``LlavaOnevisionModel.pack_image_features`` does. In a prompt with several pictures each is its
base view alone, padded to a square of the mean colour, then one newline (``multi_image_base_only``).
Videos (kernels/frames.py): every frame resized to the tower's square, through tower and projector,
its features pooled 2×2 bilinearly (``apply_pooling``), then one newline after the whole video.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from ....kernels.anyres_max import pooled_side
from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import ImageSpec
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, read_processor_config, read_video_processor_config
from ..base import FamilyExport, load_pretrained
from ..llava import IMAGE_TOKEN
from ..llava_next import NEWLINE_FILE, newline_export

ARCHITECTURES = ("LlavaOnevisionForConditionalGeneration",)
VIDEO_TOKEN = "<video>"
VIDEO_POOLING = 2  # apply_pooling: ceil(P / 2) features a side per frame


def load(model_dir: Path):
    from transformers import LlavaOnevisionForConditionalGeneration

    return load_pretrained(LlavaOnevisionForConditionalGeneration, model_dir)


def max_tiles(aspect_ratio: str) -> int:
    """"anyres_max_9" → 9; anything else is refused (transformers reads only this form)."""
    match = re.fullmatch(r"anyres_max_(\d+)", str(aspect_ratio))
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"vision_aspect_ratio {aspect_ratio!r} is not supported; vlmforge reads 'anyres_max_N' "
                         "(N ≥ 1 tiles' worth of patches, 'anyres_max_9' in the released checkpoints)")
    return int(match.group(1))


def _size(proc: dict, tile: int, what: str) -> None:
    size = proc.get("size") or {"height": tile, "width": tile}
    side = {size.get("height"), size.get("width")} if isinstance(size, dict) else {size}
    if side != {tile}:
        raise ValueError(f"the {what} resizes to {size}, not the vision tower's {tile}×{tile} tiles; "
                         "OneVision tiles are the tower's image_size — fix the processor config")


def _common(proc: dict, tile: int, patch: int) -> dict:
    mean = [float(v) for v in proc.get("image_mean", OPENAI_CLIP_MEAN)]
    return dict(tile_size=tile, patch_size=patch, resample=proc.get("resample", 3),
                rescale_factor=float(proc.get("rescale_factor", 1 / 255)), do_normalize=bool(proc.get("do_normalize", True)),
                mean=mean, std=[float(v) for v in proc.get("image_std", OPENAI_CLIP_STD)],
                tokens_per_tile=(tile // patch) ** 2, image_newline=True,
                background=[int(m * 255) for m in mean])  # pad_to_square's colour: tuple(int(x * 255) for x in mean)


def preprocess_spec(proc: dict, config, aspect_ratio: str) -> PreprocessSpec:
    vc = config.vision_config
    _size(proc, vc.image_size, "image processor")
    pinpoints = proc.get("image_grid_pinpoints") or config.image_grid_pinpoints
    return PreprocessSpec(scheme="anyres", resize="none", size=[vc.image_size],
                          grid_pinpoints=[list(map(int, p)) for p in pinpoints], anyres_max_tiles=max_tiles(aspect_ratio),
                          multi_image_base_only=True, **_common(proc, vc.image_size, vc.patch_size))


def video_spec(video: dict | None, image_proc: dict, config) -> PreprocessSpec:
    """Every frame resized to the tower's square (the video processor's, else the image processor's
    size and normalisation), pooled 2×2 after the projector, a newline after the video."""
    vc = config.vision_config
    proc = video if video is not None else image_proc
    _size(proc, vc.image_size, "video processor")
    if video is not None and video.get("do_sample_frames"):
        raise ValueError("the video processor config sets do_sample_frames, which vlmforge does not implement; "
                         "remove it (frames are taken as given, or sampled with sample_fps=)")
    spec = PreprocessSpec(scheme="fixed", resize="exact", size=[vc.image_size, vc.image_size], temporal_patch_size=1,
                          feature_pooling=VIDEO_POOLING, **_common(proc, vc.image_size, vc.patch_size))
    return replace(spec, tokens_per_tile=pooled_side(vc.image_size // vc.patch_size, VIDEO_POOLING) ** 2)


def check_config(config, features: torch.Tensor) -> None:
    per = config.vision_config.image_size // config.vision_config.patch_size
    if features.shape[1] != per * per:
        raise ValueError(
            f"the tower gives {features.shape[1]} features a tile with vision_feature_select_strategy="
            f"{config.vision_feature_select_strategy!r}, not the {per}×{per} grid OneVision packs; use 'full' "
            "for a SigLIP tower (no CLS), 'default' for a CLIP one")


def aspect_ratio(model_dir: Path, config) -> str:
    """The model's ``vision_aspect_ratio``; the processor's must agree (its token counts use its own)."""
    aspect = getattr(config, "vision_aspect_ratio", "anyres_max_9")
    path = Path(model_dir) / "processor_config.json"
    processor = json.loads(path.read_text()) if path.is_file() else {}
    theirs = processor.get("vision_aspect_ratio", aspect)
    if theirs != aspect:
        raise ValueError(f"processor_config.json has vision_aspect_ratio {theirs!r} but config.json {aspect!r}; the "
                         "processor would reserve a different number of image tokens than the model fills — make them equal")
    return aspect


def image_spec(model_dir: Path, config) -> ImageSpec:
    proc = read_processor_config(model_dir)
    aspect = aspect_ratio(model_dir, config)
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=int(config.image_token_id),
        preprocess=preprocess_spec(proc, config, aspect), newline_path=NEWLINE_FILE,
        video_token=VIDEO_TOKEN, video_token_id=int(config.video_token_id),
        video_preprocess=video_spec(read_video_processor_config(model_dir), proc, config),
    )


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    return newline_export(model, "llava_onevision", ARCHITECTURES[0], image_spec(model_dir, model.config), check_config)
