"""Mini-Gemini's checkpoint layout (dvlab-research/MGM, ``model_type`` "mgm", ``MGMLlamaForCausalLM``):
the top folder's ``config.json`` (LlamaConfig + the ``mm_*`` keys) and safetensors with the
original names (``model.layers.*``, ``lm_head``, ``model.mm_projector.*``,
``model.vlm_uni_{query,aux,val}_projector.*``, the towers' copies under ``model.vision_tower.*``
/ ``model.vision_tower_aux.*``), and two tower folders the config names by path:

* ``mm_vision_tower``: a transformers CLIP folder (its name holds "openai", as the original's
  builder requires) — config, weights and the image processor;
* ``mm_vision_tower_aux``: an open_clip ConvNeXt folder (name holding "openclip" and
  "convnext") with ``open_clip_pytorch_model.bin`` (loaded as plain tensors, weights_only).

A relative tower path is looked up inside the checkpoint folder, then by its last component
there. What the original's loading does with the weights (mgm/model/builder.py,
``initialize_uni_modules``): the CLIP tower from its folder, then the checkpoint's
``vision_tower.vision_tower`` copy where it has one; the ConvNeXt from its folder, the
checkpoint's copy only with ``optimize_vision_tower_aux``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REFUSED = {"mm_use_im_start_end": "<im_start>/<im_end> marks around images"}
FEATURES = ("patch", "cls_patch")


@dataclass
class MGMConfig:
    root: Path
    raw: dict
    clip_dir: Path
    aux_dir: Path
    select_layer: int
    select_feature: str
    projector: str
    image_size_aux: int
    grid: int
    has_global: bool
    pad: bool  # image_aspect_ratio "pad": expand2square with the mean colour first
    optimize_aux: bool


def tower_dir(root: Path, value, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"config.json has no {key}; an MGM checkpoint names its tower folders there")
    given = Path(value)
    places = [given] if given.is_absolute() else [root / given, root / given.name]
    found = next((p for p in places if p.is_dir()), None)
    if found is None:
        raise FileNotFoundError(f"{key} {value!r} is not a folder at {', '.join(map(str, places))}; put the tower "
                                "folder there (MGM keeps its towers beside the checkpoint, e.g. model_zoo/OpenAI/...)")
    return found


def check_towers(clip: str, aux: str) -> None:
    low = clip.lower()
    if "lavis" in low or "eva" in low:
        raise ValueError(f"mm_vision_tower {clip!r} is an EVA tower; vlmforge exports MGM with the CLIP tower only")
    if "openai" not in low and "ShareGPT4V" not in clip:
        raise ValueError(f"mm_vision_tower {clip!r}: the original builder takes a CLIP folder whose name holds "
                         "'openai' (or 'ShareGPT4V'); rename the folder or point at the CLIP tower")
    if "openclip" not in aux.lower() or "convnext" not in aux.lower():
        raise ValueError(f"mm_vision_tower_aux {aux!r}: vlmforge exports MGM's open_clip ConvNeXt aux tower only "
                         "(a folder named openclip-convnext-…)")


def parse_config(root: Path) -> MGMConfig:
    raw = json.loads((root / "config.json").read_text())
    for key, what in REFUSED.items():
        if raw.get(key):
            raise ValueError(f"this MGM checkpoint sets {key}=true ({what}); vlmforge exports MGM without them")
    clip, aux = raw.get("mm_vision_tower"), raw.get("mm_vision_tower_aux")
    clip_dir, aux_dir = tower_dir(root, clip, "mm_vision_tower"), tower_dir(root, aux, "mm_vision_tower_aux")
    check_towers(clip, aux)
    feature = raw.get("mm_vision_select_feature", "patch")
    if feature not in FEATURES:
        raise ValueError(f"mm_vision_select_feature {feature!r} is not one of {FEATURES}")
    if feature != "patch":
        raise ValueError("mm_vision_select_feature 'cls_patch' gives N + 1 queries, which MGM's patch mining cannot "
                         "square (the original fails on it too); use 'patch'")
    grid, has_global = int(raw.get("image_grid", 1)), bool(raw.get("image_global", False))
    if grid < 1 or (has_global and grid < 2):
        raise ValueError(f"image_grid {grid} with image_global={has_global}: the global view exists only with "
                         "image_grid >= 2 (MGM-HD); the original fails on image_grid 1 with a global view")
    if not isinstance(raw.get("mm_vision_select_layer"), int):
        raise ValueError(f"mm_vision_select_layer must be a layer index (MGM uses -2), got "
                         f"{raw.get('mm_vision_select_layer')!r}")
    return MGMConfig(root=root, raw=raw, clip_dir=clip_dir, aux_dir=aux_dir,
                     select_layer=raw["mm_vision_select_layer"], select_feature=feature,
                     projector=raw.get("mm_projector_type", "linear"), image_size_aux=int(raw.get("image_size_aux", 320)),
                     grid=grid, has_global=has_global, pad=raw.get("image_aspect_ratio") == "pad",
                     optimize_aux=bool(raw.get("optimize_vision_tower_aux", False)))
