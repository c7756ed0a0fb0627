"""VILA / VILA1.5 / NVILA (NVlabs; ``model_type`` "llava_llama"): SigLIP → ``mlp_downsample``
projector → Llama or Qwen2, from the original checkpoint layout (config.py: ``llm/``,
``vision_tower/``, ``mm_projector/``), loaded without any of the checkpoint's Python.

Graphs: vision = SigLIP up to ``mm_vision_select_layer`` (``hidden_states[layer]``, every position:
"cls_patch"); connector = the projector (projector.py: k×k token merge + MLP) followed by the
embeddings of ``tokenizer("\\n")``, which ``BasicImageEncoder`` appends after every image; llm =
``llm/``'s decoder + ``lm_head`` with KV cache.

Images (``llava/mm_utils.py process_image``): "resize" — PIL's bicubic resize to the processor's
size, then SigLIP's processor (its resize is then a no-op); "pad" — pad to a square with the mean
colour, then the processor; unset — the processor alone (an exact resize). One tile per picture.
Prompt: a picture is ``<image>`` in the message text; its slots are the merged tokens and the end
tokens' rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ....runtime.manifest import Capabilities, ImageSpec
from ...decoder import decoder_graph, embedding_table, text_llm_spec
from ...graphs import VisionFeatures
from ...onnx_export import GraphExport
from ...original_weights import WeightsError, load_into, load_state_dict
from ...preprocess import clip_style_spec, read_processor_config
from ..base import FamilyExport
from .config import SUBFOLDERS, VilaConfig, parse_config
from .projector import VilaProjector
from .tokenizer import IMAGE_TOKEN, chat_template, end_token_ids, load_tokenizer, tokenizer_files

ARCHITECTURES = ("LlavaLlamaModel",)
WEIGHT_FOLDERS = SUBFOLDERS  # export/checkpoint.py checks each holds safetensors


def load_strictly(model_cls, folder: Path, unused: tuple[str, ...] = ()):
    """``from_pretrained`` in float32, eager attention, never the folder's code; a weight the
    checkpoint lacks is an error (transformers would initialise it at random and only warn),
    except under ``unused`` (parts the exported graphs never run)."""
    model, info = model_cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32,
                                            trust_remote_code=False, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith(unused)]
    if missing:
        raise WeightsError(f"{folder.name}/ lacks weights its config.json needs: {missing[:4]}; the weights do not "
                           "fit the config")
    return model.eval()


def load_parts(c: VilaConfig):
    """(llm, tower): transformers' own classes for the subfolders' model types, never remote code."""
    from transformers import AutoModelForCausalLM, SiglipVisionModel

    llm = load_strictly(AutoModelForCausalLM, c.folder("llm"))
    # the pooling head and the final norm come after every layer VILA reads
    tower = load_strictly(SiglipVisionModel, c.folder("vision_tower"),
                          unused=("vision_model.head.", "vision_model.post_layernorm."))
    return llm, tower


def grid_side(tower_config) -> int:
    size, patch = tower_config.image_size, tower_config.patch_size
    if size % patch:
        raise ValueError(f"vision_tower image_size {size} is not a multiple of patch_size {patch}; the projector "
                         "merges a square grid of patches")
    return size // patch


def build_projector(c: VilaConfig, tower_config, embed: torch.Tensor, end_ids: list[int]) -> VilaProjector:
    projector = VilaProjector(c.projector_type, tower_config.hidden_size, embed.shape[1], grid_side(tower_config),
                              embed[end_ids])
    load_into(projector, load_state_dict(c.folder("mm_projector")), "mm_projector/")
    return projector.eval()


def vision_graphs(tower, projector: VilaProjector, c: VilaConfig) -> list[GraphExport]:
    num_states = tower.config.num_hidden_layers + 1
    if not -num_states <= c.select_layer < num_states:
        raise ValueError(f"mm_vision_select_layer {c.select_layer} is outside the tower's {num_states} hidden states")
    size = tower.config.image_size
    vision = VisionFeatures(tower, [c.select_layer], drop_cls=False).eval()
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = vision(pixels)
    return [
        GraphExport(name="vision", module=vision, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=projector, example_inputs=(features,), input_names=["image_features"],
                    output_names=["image_embeds"], dims={"image_features": {0: "num_tiles"}}),
    ]


def image_spec(c: VilaConfig, tower_config, image_token_id: int, num_tokens: int) -> ImageSpec:
    proc = read_processor_config(c.folder("vision_tower"))
    spec = clip_style_spec(proc, tokens_per_tile=num_tokens, pad_to_square=c.image_aspect_ratio == "pad")
    size = tower_config.image_size
    if spec.resize != "exact" or list(spec.size) != [size, size] or spec.crop:
        raise ValueError(f"vision_tower's image processor resizes to {proc.get('size')} (crop {spec.crop}), but the "
                         f"tower reads {size}×{size}; set size to {{'height': {size}, 'width': {size}}}")
    if c.image_aspect_ratio == "resize":  # PIL's Image.resize default: bicubic, whatever the processor says
        spec = dataclasses.replace(spec, resample="bicubic")
    return ImageSpec(image_token=IMAGE_TOKEN, image_token_id=image_token_id, preprocess=spec)


def prepare(model_dir: Path) -> FamilyExport:
    c = parse_config(Path(model_dir))
    tokenizer = load_tokenizer(c.folder("llm"))
    chat_template(tokenizer, c.raw)  # refuses a template VILA would read from its own package, before loading
    llm, tower = load_parts(c)
    embed = embedding_table(llm)
    image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    if image_token_id >= embed.shape[0]:
        raise ValueError(f"{IMAGE_TOKEN} is token {image_token_id} but llm/ embeds only {embed.shape[0]} tokens; the "
                         "tokenizer and the language model do not belong together")
    projector = build_projector(c, tower.config, embed, end_token_ids(tokenizer))
    text, tok = tokenizer_files(c.root, tokenizer, c.raw)
    return FamilyExport(
        family="vila",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(tower, projector, c), decoder_graph(llm.model, llm.lm_head, llm.config)],
        embed_tokens=embed,
        image=image_spec(c, tower.config, image_token_id, projector.num_tokens()),
        llm=text_llm_spec(llm.config, embed.shape[0]),
        capabilities=Capabilities(),
        source_config=c.raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
    )
