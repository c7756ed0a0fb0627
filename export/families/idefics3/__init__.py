"""Idefics3 and SmolVLM / SmolVLM2 (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``):
SigLIP tower → pixel shuffle (``scale_factor``) + linear → Llama decoder.

One folder for both model types: their modeling and image processors are the same code in
transformers 5.24; what differs (the model class, where the processor finds its prompt tokens) is
the small ``VERSIONS`` table below.

Graphs (graphs.py): vision = ``vision_model`` on full tiles (constant bucketed position ids, no
mask); connector = ``connector`` (pixel shuffle + ``modality_projection``); llm = ``text_model`` +
``lm_head`` with KV cache.

Images: the ``split`` kernel scheme (kernels/split.py) — resize to ``size.longest_edge``, then to
multiples of ``max_image_size.longest_edge``, cut into tiles plus a global view, as the image
processor does; each frame is ``image_seq_len`` tokens.

Prompt: the placeholder is ``<image>``; the processor writes each picture as
``<fake_token_around_image><row_r_col_c>`` + slots per tile, ``\\n`` after each row, then
``\\n<fake_token_around_image><global-img>`` + slots + ``<fake_token_around_image>`` (a picture
that is one frame: only the global part, without the leading ``\\n``). The manifest declares
that text as ``image.tile_prompt``; the runtime renders it from each picture's grid.
Not done: SmolVLM2 video prompts (its video processor's frame sampling and timestamp text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec, TilePromptSpec
from ...decoder import decoder_graph, embedding_table, text_llm_spec
from ...preprocess import read_processor_config
from .. import read_config
from ..base import FamilyExport, load_pretrained
from .graphs import connector_graph, vision_graph

IMAGENET_STANDARD = [0.5, 0.5, 0.5]  # the image processors' default mean and std


@dataclass(frozen=True)
class Version:
    architecture: str
    # SmolVLMProcessor reads its prompt tokens from the tokenizer's named tokens (falling back to
    # these strings); Idefics3Processor always writes the strings
    named_tokens: bool


VERSIONS = {
    "idefics3": Version("Idefics3ForConditionalGeneration", named_tokens=False),
    "smolvlm": Version("SmolVLMForConditionalGeneration", named_tokens=True),
}
ARCHITECTURES = tuple(v.architecture for v in VERSIONS.values())
# token name on the tokenizer → the string both processors default to
PROMPT_TOKENS = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                 "global_image_token": "<global-img>"}


def version_of(model_type) -> Version:
    version = VERSIONS.get(model_type)
    if version is None:
        raise ValueError(f"model_type {model_type!r} is not one this folder exports; it takes {sorted(VERSIONS)}")
    return version


def load(model_dir: Path):
    import transformers

    version = version_of(read_config(model_dir).get("model_type"))
    return load_pretrained(getattr(transformers, version.architecture), model_dir)


def processor_sizes(proc: dict) -> tuple[int, int]:
    """(size.longest_edge, max_image_size.longest_edge), the processors' defaults where absent."""
    size, tile = proc.get("size") or {"longest_edge": 4 * 364}, proc.get("max_image_size") or {"longest_edge": 364}
    if not all(isinstance(d, dict) and isinstance(d.get("longest_edge"), int) for d in (size, tile)):
        raise ValueError(f"the image processor's size {size} and max_image_size {tile} must each be "
                         "{'longest_edge': N}, as Idefics3 / SmolVLM checkpoints have them")
    return int(size["longest_edge"]), int(tile["longest_edge"])


def preprocess_spec(model_dir: Path, config, tokens_per_tile: int) -> PreprocessSpec:
    proc = read_processor_config(model_dir)
    longest, tile = processor_sizes(proc)
    if not proc.get("do_resize", True):
        raise ValueError("the image processor config sets do_resize=false; vlmforge exports the longest-edge resize "
                         "Idefics3 / SmolVLM checkpoints use — set do_resize to true")
    return PreprocessSpec(
        scheme="split", resize="none", size=[longest], tile_size=tile,
        patch_size=int(config.vision_config.patch_size), resample=proc.get("resample", 1),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0,
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(v) for v in _three(proc.get("image_mean", IMAGENET_STANDARD))],
        std=[float(v) for v in _three(proc.get("image_std", IMAGENET_STANDARD))],
        tokens_per_tile=tokens_per_tile, image_newline=False, split_image=bool(proc.get("do_image_splitting", True)),
    )


def _three(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * 3


def tokens_per_tile(config, tile: int) -> int:
    """⌊tile / patch⌋² patches (the patch conv drops a remainder: SmolVLM2-2.2B's 384-pixel tiles are
    27 patches of 14), pixel-shuffled by scale_factor: the processor's image_seq_len."""
    patch, scale = int(config.vision_config.patch_size), int(config.scale_factor)
    if (tile // patch) % scale:
        raise ValueError(f"tiles of {tile} pixels (max_image_size.longest_edge) are {tile // patch} patches of {patch} "
                         f"a side, which scale_factor {scale} does not divide; the pixel shuffle needs it to — this "
                         "processor and model do not belong together")
    return (tile // patch) ** 2 // scale**2


def check_seq_len(model_dir: Path, expected: int) -> None:
    path = Path(model_dir) / "processor_config.json"
    declared = json.loads(path.read_text()).get("image_seq_len") if path.is_file() else None
    if declared is not None and int(declared) != expected:
        raise ValueError(f"processor_config.json says image_seq_len={declared} but a tile gives {expected} tokens "
                         "((max_image_size / patch_size)² / scale_factor²); the processor and the model do not "
                         "belong together")


def prompt_tokens(model_dir: Path, version: Version) -> dict[str, str]:
    """The image, fake-around-image and global-image tokens as the processor finds them."""
    if not version.named_tokens:
        return dict(PROMPT_TOKENS)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return {name: getattr(tokenizer, name, None) or default for name, default in PROMPT_TOKENS.items()}


def tile_prompt(tokens: dict[str, str]) -> TilePromptSpec:
    """``Idefics3Processor.replace_image_token`` / SmolVLM's ``get_image_prompt_string`` as a template."""
    fake, glob = tokens["fake_image_token"], tokens["global_image_token"]
    single = f"{fake}{glob}{{image}}{fake}"
    return TilePromptSpec(tile=f"{fake}<row_{{row}}_col_{{col}}>{{image}}", row_end="\n",
                          global_view=f"\n{single}", single=single)


def image_spec(model_dir: Path, config) -> ImageSpec:
    per_tile = tokens_per_tile(config, processor_sizes(read_processor_config(model_dir))[1])
    check_seq_len(model_dir, per_tile)
    tokens = prompt_tokens(model_dir, version_of(config.model_type))
    return ImageSpec(image_token=tokens["image_token"], image_token_id=int(config.image_token_id),
                     preprocess=preprocess_spec(model_dir, config, per_tile), tile_prompt=tile_prompt(tokens))


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    image = image_spec(model_dir, config)
    tile = image.preprocess.tile_size
    vision = vision_graph(model, tile)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    text = config.text_config
    embed = embedding_table(model)
    return FamilyExport(
        family="idefics3",
        architecture=version_of(config.model_type).architecture,
        graphs=[vision, connector_graph(model, tile, features),
                decoder_graph(model.model.text_model, model.lm_head, text)],
        embed_tokens=embed,
        image=image,
        llm=text_llm_spec(text, embed.shape[0]),
        capabilities=Capabilities(),
        source_config=config.to_dict(),
    )
