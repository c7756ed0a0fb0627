"""VILA's checkpoint layout: a top folder whose ``config.json`` (``model_type`` "llava_llama", as
``LlavaLlamaConfig`` writes it) points at three subfolders, each saved by ``save_pretrained`` of its
part — ``llm/`` (a transformers causal LM and its tokenizer), ``vision_tower/`` (SigLIP and its
image processor), ``mm_projector/`` (``MultimodalProjector``, ``model_type`` "v2l_projector").

What the original's inference path does with the top config, and what vlmforge refuses: the
multi-scale S2 / dynamic-S2 towers, PS3, dynamic tiling (``image_aspect_ratio`` "dynamic…"), and
the "patch" feature selection (SigLIP has no CLS token: dropping position 0 would break the grid)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .projector import MERGES

SUBFOLDERS = ("llm", "vision_tower", "mm_projector")
LLM_TYPES = ("llama", "qwen2")  # what VILA1.5 / NVILA checkpoints carry in llm/
TOWER_TYPES = ("siglip_vision_model",)
ASPECT_RATIOS = (None, "resize", "pad")  # fixed-size schemes (llava/mm_utils.py process_image)


@dataclass
class VilaConfig:
    root: Path
    raw: dict  # the top config.json
    llm: dict  # llm/config.json
    tower: dict  # vision_tower/config.json
    projector_type: str
    select_layer: int
    image_aspect_ratio: str | None

    def folder(self, name: str) -> Path:
        return self.root / name


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a VILA checkpoint keeps its {what} in {path.parent.name}/ "
                                "(llm/, vision_tower/ and mm_projector/ next to the top config.json, as VILA saves them)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def refuse_variants(raw: dict) -> None:
    """What this export does not implement, named with what would be needed."""
    for key in ("llm_cfg", "vision_tower_cfg", "mm_projector_cfg"):
        if isinstance(raw.get(key), str):
            raise ValueError(f"config.json's {key} names {raw[key]!r}, a model elsewhere; vlmforge reads the parts "
                             f"from the checkpoint's own {key[:-4]}/ folder — copy that model there")
    for key, what in (("s2", "S2 multi-scale towers"), ("dynamic_s2", "dynamic-S2 tiling"), ("ps3", "PS3 towers")):
        if raw.get(key):
            raise ValueError(f"this VILA checkpoint sets {key}=true ({what}); vlmforge exports single-scale VILA "
                             "only (s2, dynamic_s2 and ps3 false)")
    aspect = raw.get("image_aspect_ratio")
    if aspect not in ASPECT_RATIOS:
        raise ValueError(f"image_aspect_ratio {aspect!r} is not supported; vlmforge exports VILA with one fixed-size "
                         "image per picture: 'resize', 'pad' or unset")
    feature = raw.get("mm_vision_select_feature", "patch")
    if feature != "cls_patch":
        raise ValueError(f"mm_vision_select_feature {feature!r} is not supported: SigLIP has no CLS token, so VILA "
                         "reads every position ('cls_patch'); 'patch' would drop a real patch and break the square grid")
    if not isinstance(raw.get("mm_vision_select_layer"), int):
        raise ValueError(f"mm_vision_select_layer must be a layer index (VILA uses -2), got "
                         f"{raw.get('mm_vision_select_layer')!r}")


def parse_config(root: Path) -> VilaConfig:
    raw = read_json(root / "config.json", "top config")
    refuse_variants(raw)
    llm = read_json(root / "llm" / "config.json", "language model")
    tower = read_json(root / "vision_tower" / "config.json", "vision tower")
    projector = read_json(root / "mm_projector" / "config.json", "projector")
    if llm.get("model_type") not in LLM_TYPES:
        raise ValueError(f"llm/config.json has model_type {llm.get('model_type')!r}; vlmforge exports VILA with a "
                         f"{' or '.join(LLM_TYPES)} decoder")
    if tower.get("model_type") not in TOWER_TYPES:
        raise ValueError(f"vision_tower/config.json has model_type {tower.get('model_type')!r}; vlmforge exports "
                         "VILA's SigLIP tower only (siglip_vision_model)")
    kind = projector.get("mm_projector_type")
    if kind not in MERGES:
        raise ValueError(f"mm_projector/config.json has mm_projector_type {kind!r}; vlmforge exports "
                         f"{', '.join(sorted(MERGES))}")
    for key, want in (("hidden_size", llm.get("hidden_size")), ("mm_hidden_size", tower.get("hidden_size"))):
        if raw.get(key) is not None and raw[key] != want:
            raise ValueError(f"config.json says {key}={raw[key]} but the subfolder's model has {want}; the top "
                             "config and its llm/ / vision_tower/ do not belong together")
    return VilaConfig(root=root, raw=raw, llm=llm, tower=tower, projector_type=kind,
                      select_layer=int(raw["mm_vision_select_layer"]), image_aspect_ratio=raw.get("image_aspect_ratio"))
