"""Fuyu (``FuyuForCausalLM``): no vision encoder. The image is cut into flat pixel patches
(``patches`` kernel scheme) that one linear layer projects into the decoder's width.

Graphs: connector = ``vision_embed_tokens`` (patches (n, p·p·3) → (n, hidden)); llm = the
Persimmon decoder with KV cache. There is no vision graph. Prompt layout, as ``FuyuProcessor``
builds it: for each row of patches ``|SPEAKER|`` × cols then ``|NEWLINE|`` (whose text embedding
stays: ``ImageSpec.newline_token_id``), then BOS, the prompt, and ``<0x04>`` (beginning of answer).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec
from ...decoder import decoder_graph, text_llm_spec
from ...graphs import Connector
from ...onnx_export import GraphExport
from ...preprocess import read_processor_config
from ..base import FamilyExport, load_pretrained

ARCHITECTURES = ("FuyuForCausalLM",)
IMAGE_TOKEN, NEWLINE_TOKEN, ANSWER_TOKEN = "|SPEAKER|", "|NEWLINE|", "<0x04>"


def load(model_dir: Path):
    from transformers import FuyuForCausalLM

    return load_pretrained(FuyuForCausalLM, model_dir)


def _side(value, default: int) -> int:
    return int(value["height"]) if isinstance(value, dict) else int(value or default)


def preprocess_spec(model_dir: Path, config) -> PreprocessSpec:
    proc = read_processor_config(model_dir)
    size = proc.get("size", {"height": 1080, "width": 1920})
    mean, std = proc.get("image_mean", 0.5), proc.get("image_std", 0.5)
    pad = float(proc.get("padding_value", 1.0))
    return PreprocessSpec(
        scheme="patches",
        resize="none",
        size=[int(size["height"]), int(size["width"])],
        patch_size=_side(proc.get("patch_size"), config.patch_size),
        # FuyuImageProcessor pads the uint8 image with padding_value before rescaling
        background=[int(pad)] * 3,
        resample=proc.get("resample", 2),
        rescale_factor=float(proc.get("rescale_factor", 1 / 255)),
        do_normalize=bool(proc.get("do_normalize", True)),
        mean=[float(mean)] * 3 if not isinstance(mean, list) else mean,
        std=[float(std)] * 3 if not isinstance(std, list) else std,
        image_newline=True,
    )


def tokenizer_ids(model_dir: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, NEWLINE_TOKEN, ANSWER_TOKEN)}
    missing = [t for t, i in ids.items() if i is None or i == tok.unk_token_id]
    if missing:
        raise ValueError(f"the tokenizer in {model_dir} lacks Fuyu's special tokens {missing}")
    return ids


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    width = config.patch_size * config.patch_size * config.num_channels
    connector = GraphExport(
        name="connector",
        module=Connector(model.model.vision_embed_tokens).eval(),
        example_inputs=(torch.randn(5, width),),
        input_names=["image_features"],
        output_names=["image_embeds"],
        dims={"image_features": {0: "num_patches"}},
    )
    text = config.text_config
    embed = model.get_input_embeddings().weight.detach()
    ids = tokenizer_ids(model_dir)
    return FamilyExport(
        family="fuyu",
        architecture=ARCHITECTURES[0],
        graphs=[connector, decoder_graph(model.model.language_model, model.lm_head, text)],
        embed_tokens=embed,
        image=ImageSpec(
            image_token=IMAGE_TOKEN, image_token_id=ids[IMAGE_TOKEN], preprocess=preprocess_spec(model_dir, config),
            placement="prefix", newline_token_id=ids[NEWLINE_TOKEN],
        ),
        llm=text_llm_spec(text, embed.shape[0], int(text.max_position_embeddings)),
        capabilities=Capabilities(image_newline=True),
        source_config=config.to_dict(),
        prompt_suffix=ANSWER_TOKEN,
    )
