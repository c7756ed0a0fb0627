"""Llama-3.2-Vision (``MllamaForConditionalGeneration``): a tiled vision encoder whose projected
tiles a Llama reads through cross-attention layers at the configured indexes.

Graphs: vision (one picture's tiles, padded to ``max_image_tiles`` inside → its features),
connector (the projector), cross_kv (every cross layer's K/V of the prompt's pictures, once per
prompt) and llm (self-attention KV cache for the self-attention layers only, cross K/V bound at
every step). The prompt keeps each ``<|image|>`` as an ordinary token (``placement="memory"``);
the ``cross_mask`` token input (runtime/cross_mask.py) says which pictures' tiles each token sees,
from where those tokens stand — as ``MllamaProcessor`` builds its cross-attention mask. A prompt
without pictures runs too (``Capabilities.cross_attention_optional``).
"""

from __future__ import annotations

from pathlib import Path

from ....kernels.canvas import supported_arrangements
from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec, TokenInput
from ...preprocess import read_processor_config
from ..base import FamilyExport, load_pretrained
from .text import cross_kv_graph, llm_graph, text_layout
from .vision import connector_graph, vision_graph

ARCHITECTURES = ("MllamaForConditionalGeneration",)
IMAGE_TOKEN = "<|image|>"


def load(model_dir: Path):
    from transformers import MllamaForConditionalGeneration

    return load_pretrained(MllamaForConditionalGeneration, model_dir)


def tokens_per_tile(vision) -> int:
    """The patches of one tile + its class token."""
    return (vision.image_size // vision.patch_size) ** 2 + 1


def check_config(config, proc: dict) -> None:
    """Refuse what the graphs or the kernel would get wrong, naming it."""
    vision, text = config.vision_config, config.text_config
    max_tiles = int(proc.get("max_image_tiles", 4))
    size = proc.get("size") or {}
    if size.get("height") != vision.image_size or size.get("width") != vision.image_size:
        raise ValueError(f"the image processor's size {size} must be the vision model's image_size "
                         f"{vision.image_size} square; fix processor_config.json")
    if max_tiles != vision.max_num_tiles:
        raise ValueError(f"the processor's max_image_tiles {max_tiles} differs from the vision model's max_num_tiles "
                         f"{vision.max_num_tiles}; fix one of them")
    arrangements = [list(a) for a in supported_arrangements(max_tiles)]
    if [list(a) for a in vision.supported_aspect_ratios] != arrangements:
        raise ValueError(f"supported_aspect_ratios {vision.supported_aspect_ratios} are not the processor's "
                         f"arrangements of up to {max_tiles} tiles {arrangements}; only those are supported")
    cross = text_layout(text)[0]
    if not cross or 0 in cross or max(cross) >= text.num_hidden_layers or len(set(cross)) != len(cross):
        raise ValueError(f"cross_attention_layers {text.cross_attention_layers} must be distinct layers in "
                         f"1 … {text.num_hidden_layers - 1} (transformers reads the cache length from layer 0)")


def preprocess_spec(proc: dict, vision) -> PreprocessSpec:
    return PreprocessSpec(
        scheme="canvas", resize="none", size=[vision.image_size], tile_size=vision.image_size,
        patch_size=vision.patch_size, max_tiles=int(proc.get("max_image_tiles", 4)),
        resample=proc.get("resample", 2), background=[0, 0, 0],
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)), do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(v) for v in proc.get("image_mean", [0.5] * 3)],
        std=[float(v) for v in proc.get("image_std", [0.5] * 3)],
        tokens_per_tile=tokens_per_tile(vision), image_newline=False,
    )


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    vision, text = config.vision_config, config.text_config
    proc = read_processor_config(model_dir)
    check_config(config, proc)
    spec = preprocess_spec(proc, vision)
    cross, kv_heads, head_dim = text_layout(text)
    embed = model.model.language_model.embed_tokens.weight.detach()  # vocab + 8 rows: <|image|> among them
    mask = TokenInput(name="cross_attention_mask", kind="cross_mask", token_id=int(config.image_token_index),
                      tokens_per_tile=spec.tokens_per_tile)
    return FamilyExport(
        family="mllama",
        architecture=ARCHITECTURES[0],
        graphs=[vision_graph(model, spec.max_tiles, spec.tile_size),
                connector_graph(model, spec.max_tiles, spec.tokens_per_tile),
                cross_kv_graph(model), llm_graph(model)],
        embed_tokens=embed,
        image=ImageSpec(image_token=IMAGE_TOKEN, image_token_id=int(config.image_token_index), placement="memory",
                        preprocess=spec),
        llm=LLMSpec(num_layers=text.num_hidden_layers - len(cross), num_kv_heads=kv_heads, head_dim=head_dim,
                    hidden_size=text.hidden_size, vocab_size=int(model.lm_head.out_features),
                    max_context=int(text.max_position_embeddings), token_inputs=[mask]),
        capabilities=Capabilities(cross_attention=True, cross_attention_optional=True),
        source_config=config.to_dict(),
    )
