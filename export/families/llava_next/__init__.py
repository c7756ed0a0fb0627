"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): LLaVA with AnyRes dynamic resolution.

Graphs are LLaVA's (tower up to the feature layer, MLP projector, decoder LM); the tile batch is
the base view plus the best-fitting grid of tiles (``anyres`` kernel scheme). After the
connector, the runtime unpads the grid features and appends ``image_newline`` to every row
(``ImageSpec.newline_path`` + the ``image_newline`` capability), exactly as
``LlavaNextModel.pack_image_features`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec
from ...decoder import decoder_graph, text_llm_spec
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, read_processor_config
from ..base import FamilyExport, load_pretrained
from ..llava import IMAGE_TOKEN, connector_graph, vision_graph

ARCHITECTURES = ("LlavaNextForConditionalGeneration",)
NEWLINE_FILE = "image_newline.npy"


def load(model_dir: Path):
    from transformers import LlavaNextForConditionalGeneration

    return load_pretrained(LlavaNextForConditionalGeneration, model_dir)


def preprocess_spec(model_dir: Path, config) -> PreprocessSpec:
    proc = read_processor_config(model_dir)
    vc = config.vision_config
    crop = proc.get("crop_size") or {"height": vc.image_size}
    tile = int(crop["height"] if isinstance(crop, dict) else crop)
    if tile != vc.image_size:
        raise ValueError(f"processor tile size {tile} differs from the vision tower's image_size {vc.image_size}")
    pinpoints = proc.get("image_grid_pinpoints") or config.image_grid_pinpoints
    return PreprocessSpec(
        scheme="anyres",
        resize="none",
        size=[tile],
        grid_pinpoints=[list(map(int, p)) for p in pinpoints],
        tile_size=tile,
        patch_size=vc.patch_size,
        resample=proc.get("resample", 3),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)),
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(v) for v in proc.get("image_mean", OPENAI_CLIP_MEAN)],
        std=[float(v) for v in proc.get("image_std", OPENAI_CLIP_STD)],
        tokens_per_tile=(tile // vc.patch_size) ** 2,
        image_newline=True,
    )


def image_spec(model_dir: Path, config) -> ImageSpec:
    if config.vision_feature_select_strategy != "default":
        raise ValueError(
            "LLaVA-NeXT packs tile features on a (patches × patches) grid, which needs "
            f"vision_feature_select_strategy='default'; this config has {config.vision_feature_select_strategy!r}"
        )
    return ImageSpec(
        image_token=IMAGE_TOKEN,
        image_token_id=int(config.image_token_id),
        preprocess=preprocess_spec(model_dir, config),
        newline_path=NEWLINE_FILE,
    )


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    return newline_export(model, "llava_next", ARCHITECTURES[0], image_spec(model_dir, model.config))


def newline_export(model, family: str, architecture: str, image: ImageSpec, check=None) -> FamilyExport:
    """LLaVA's graphs with ``image_newline`` kept as an artifact (LLaVA-NeXT, LLaVA-OneVision);
    ``check(config, features)`` sees the tower's example features before anything is built on them."""
    config = model.config
    vision = vision_graph(model, config)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    if check is not None:
        check(config, features)
    text = config.text_config
    embed = model.get_input_embeddings().weight.detach()
    newline = model.model.image_newline.detach().float().numpy()  # (hidden,)
    return FamilyExport(
        family=family,
        architecture=architecture,
        graphs=[vision, connector_graph(model, config, features),
                decoder_graph(model.model.language_model, model.lm_head, text)],
        embed_tokens=embed,
        image=image,
        llm=text_llm_spec(text, embed.shape[0]),
        capabilities=Capabilities(image_newline=True),
        source_config=config.to_dict(),
        extra_arrays={NEWLINE_FILE: newline.astype(np.float32)},
    )
