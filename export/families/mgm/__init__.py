"""Mini-Gemini / MGM (dvlab-research; ``model_type`` "mgm"): our own implementation of the
original checkpoint layout (config.py), loaded without any of its Python.

Graphs: vision = the CLIP tower (transformers' CLIPVisionModel) up to ``mm_vision_select_layer``,
patch tokens (the queries); vision_aux = the ConvNeXt (convnext.py, plain torch) with its four
stages at stage 0's resolution (the keys / values); connector = patch-info mining + the
projector (connector.py), reading both (``manifest.vision_towers``); llm = the Llama decoder.

Images: the ``dual`` kernel (kernels/dual.py) writes both resolutions of one picture in one call.
Prompt: vicuna_v1 (template.py); the text's ``<image>`` is one slot run per picture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ....runtime.manifest import Capabilities, ImageSpec, VisionTowerSpec
from ...decoder import decoder_graph, text_llm_spec
from ...graphs import VisionFeatures
from ...onnx_export import GraphExport
from ...original_weights import load_into, load_state_dict, under
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport
from .config import MGMConfig, parse_config
from .connector import MGMConnector
from .convnext import ConvNeXtTower
from .template import chat_template
from .tokenizer import IMAGE_TOKEN, tokenizer_files

ARCHITECTURES = ("MGMLlamaForCausalLM",)
LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


def load_llm(c: MGMConfig, state: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    keep = {k: v for k, v in c.raw.items() if not k.startswith("mm_") and k not in ("architectures", "model_type")}
    config = LlamaConfig(**keep)
    config._attn_implementation = "eager"
    llm = LlamaForCausalLM(config).eval()
    load_into(llm, {k: v for k, v in state.items() if k.startswith(LLM_PREFIXES)}, "")
    return llm.float()


def load_clip(c: MGMConfig, state: dict):
    """The CLIP tower from its folder, then the checkpoint's copy where it has one (the original's order)."""
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel.from_pretrained(c.clip_dir, attn_implementation="eager", dtype=torch.float32).eval()
    copy = under(state, "model.vision_tower.vision_tower.")
    if copy:
        own = tower.state_dict()
        prefix = "vision_model." if any(k.startswith("vision_model.") for k in own) else ""
        copy = {prefix + k.removeprefix("vision_model."): v for k, v in copy.items()}
        load_into(tower, {k: v for k, v in copy.items() if k in own or not k.endswith("position_ids")},
                  "model.vision_tower.vision_tower.")
    return tower


def load_aux(c: MGMConfig, state: dict) -> ConvNeXtTower:
    path = c.aux_dir / "open_clip_pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: MGM's aux tower folder holds open_clip's ConvNeXt weights there")
    weights = torch.load(path, map_location="cpu", weights_only=True)
    trunk = under(weights, "visual.trunk.")
    if c.optimize_aux:  # the original then loads the trained stem / stages from the checkpoint
        trunk.update({k.removeprefix("vision_"): v for k, v in under(state, "model.vision_tower_aux.").items()})
    trunk = {k: v for k, v in trunk.items() if k.startswith(("stem.", "stages."))}
    tower = ConvNeXtTower(trunk)
    load_into(tower, trunk, "visual.trunk.")
    return tower.eval()


def build_connector(c: MGMConfig, state: dict, mm_hidden: int, aux_hidden: int, hidden: int) -> MGMConnector:
    conn = MGMConnector(mm_hidden, aux_hidden, hidden, c.projector, c.grid, c.has_global)
    picked = {k: v for k, v in under(state, "model.").items() if k.startswith(("vlm_uni_", "mm_projector."))}
    load_into(conn, picked, "model.")
    return conn.eval()


def image_spec(c: MGMConfig, clip_config, image_token_id: int) -> ImageSpec:
    """The dual kernel's spec: the CLIP processor at image_size_aux (cli.py) for the aux view,
    its own crop for the low-resolution views."""
    proc = dict(read_processor_config(c.clip_dir))
    crop = proc.get("crop_size", {})
    side = crop if isinstance(crop, int) else crop.get("height")
    if side != clip_config.image_size:
        raise ValueError(f"the CLIP tower reads {clip_config.image_size} px but its processor crops to {crop}; "
                         "the tower folder's preprocessor_config.json does not belong to it")
    proc.update(size={"shortest_edge": c.image_size_aux}, crop_size={"height": c.image_size_aux, "width": c.image_size_aux},
                do_center_crop=True)
    grid_side = clip_config.image_size // clip_config.patch_size
    spec = clip_style_spec(proc, tokens_per_tile=grid_side * grid_side, pad_to_square=c.pad)
    spec = dataclasses.replace(spec, scheme="dual", tile_size=clip_config.image_size, patch_size=clip_config.patch_size,
                               image_grid=c.grid, image_global=c.has_global, image_newline=False)
    return ImageSpec(image_token=IMAGE_TOKEN, image_token_id=image_token_id, preprocess=spec)


def check_geometry(c: MGMConfig, clip_config, aux: ConvNeXtTower) -> None:
    side = clip_config.image_size // clip_config.patch_size
    stem = aux.stem[0].stride[0]
    cell = c.image_size_aux // c.grid // stem  # stage-0 positions per crop side
    if c.image_size_aux % (c.grid * stem) or cell % side:
        raise ValueError(f"image_size_aux {c.image_size_aux} gives {cell} stage-0 positions per view side, not a "
                         f"multiple of the CLIP grid {side}: patch mining needs whole cells per query")


def graphs(c: MGMConfig, clip, aux: ConvNeXtTower, conn: MGMConnector) -> list[GraphExport]:
    t, views = clip.config.image_size, 1 if c.grid == 1 else c.grid ** 2 + int(c.has_global)
    vision = VisionFeatures(clip, [c.select_layer], drop_cls=True).eval()
    pixels, pixels_aux = torch.randn(views, 3, t, t), torch.randn(1, 3, c.image_size_aux, c.image_size_aux)
    with torch.no_grad():
        feats, feats_aux = vision(pixels), aux(pixels_aux)
    return [
        GraphExport(name="vision", module=vision, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"]),
        GraphExport(name="vision_aux", module=aux, example_inputs=(pixels_aux,), input_names=["pixel_values_aux"],
                    output_names=["image_features_aux"]),
        GraphExport(name="connector", module=conn, example_inputs=(feats, feats_aux),
                    input_names=["image_features", "image_features_aux"], output_names=["image_embeds"]),
    ]


def prepare(model_dir: Path) -> FamilyExport:
    c = parse_config(Path(model_dir))
    state = load_state_dict(c.root)
    llm, clip, aux = load_llm(c, state), load_clip(c, state), load_aux(c, state)
    check_geometry(c, clip.config, aux)
    conn = build_connector(c, state, clip.config.hidden_size, sum(aux.channels), llm.config.hidden_size)
    embed = llm.get_input_embeddings().weight.detach()
    text, tok, image_id = tokenizer_files(c.root, chat_template(IMAGE_TOKEN))
    if image_id > embed.shape[0]:
        raise ValueError(f"the tokenizer has {image_id} tokens but the decoder embeds {embed.shape[0]}; the "
                         "tokenizer and the checkpoint do not belong together")
    if image_id == embed.shape[0]:  # the image slot's own row: always overwritten by image embeddings
        embed = torch.cat([embed, embed.new_zeros(1, embed.shape[1])])
    return FamilyExport(
        family="mgm",
        architecture=ARCHITECTURES[0],
        graphs=[*graphs(c, clip, aux, conn), decoder_graph(llm.model, llm.lm_head, llm.config)],
        embed_tokens=embed,
        image=image_spec(c, clip.config, image_id),
        llm=text_llm_spec(llm.config, llm.config.vocab_size, int(llm.config.max_position_embeddings)),
        capabilities=Capabilities(),
        source_config=c.raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
        stop_strings=["</s>"],
        vision_towers=[VisionTowerSpec("vision", "pixel_values", "image_features"),
                       VisionTowerSpec("vision_aux", "pixel_values_aux", "image_features_aux")],
    )
