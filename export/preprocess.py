"""Read a Hugging Face image processor config (CLIP-style image processors) into the kernel's
``PreprocessSpec``. Family folders call this and add what their processor adds.

Checkpoints hold it in one of two places: transformers 5 saves a processor's into
``processor_config.json`` under ``"image_processor"``; hub checkpoints mostly ship the older
``preprocessor_config.json``. Read in transformers' own priority: the nested one, then the file."""

from __future__ import annotations

import json
from pathlib import Path

from ..kernels.spec import PreprocessSpec

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def read_processor_config(model_dir: Path) -> dict:
    root = Path(model_dir)
    nested = _read_json(root / "processor_config.json")
    if isinstance(nested, dict) and isinstance(nested.get("image_processor"), dict):
        return nested["image_processor"]
    legacy = _read_json(root / "preprocessor_config.json")
    if isinstance(legacy, dict):
        return legacy
    raise FileNotFoundError(
        f"{root} has no image processor config (neither processor_config.json with an 'image_processor' entry "
        "nor preprocessor_config.json); save it with processor.save_pretrained(model_dir)"
    )


def read_video_processor_config(model_dir: Path) -> dict | None:
    """The video processor's config, nested in processor_config.json or in video_preprocessor_config.json; None if neither."""
    root = Path(model_dir)
    nested = _read_json(root / "processor_config.json")
    if isinstance(nested, dict) and isinstance(nested.get("video_processor"), dict):
        return nested["video_processor"]
    legacy = _read_json(root / "video_preprocessor_config.json")
    return legacy if isinstance(legacy, dict) else None


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-save the processor with save_pretrained") from None


def _as_list(value, n: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * n


def clip_style_spec(proc: dict, tokens_per_tile: int, pad_to_square: bool = False) -> PreprocessSpec:
    """resize (shortest_edge or height/width) → centre crop → rescale → normalise."""
    size = proc.get("size", {"shortest_edge": 224})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if not proc.get("do_resize", True):
        resize, target = "none", [0]
    elif "shortest_edge" in size:
        resize, target = "shortest_edge", [int(size["shortest_edge"])]
    elif "height" in size and "width" in size:
        resize, target = "exact", [int(size["height"]), int(size["width"])]
    else:
        raise ValueError(f"unsupported image processor size {size}; expected shortest_edge or height/width")
    crop = proc.get("crop_size") if proc.get("do_center_crop", False) else None
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    mean = _as_list(proc.get("image_mean", OPENAI_CLIP_MEAN), 3)
    return PreprocessSpec(
        scheme="fixed",
        resize=resize,
        size=target,
        crop=[int(crop["height"]), int(crop["width"])] if crop else None,
        pad_to_square=pad_to_square,
        # LLaVA pads with the mean colour: tuple(int(x * 255) for x in image_mean)
        background=[int(m * 255) for m in mean],
        resample=proc.get("resample", 3),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0,
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=mean,
        std=_as_list(proc.get("image_std", OPENAI_CLIP_STD), 3),
        tokens_per_tile=tokens_per_tile,
    )
