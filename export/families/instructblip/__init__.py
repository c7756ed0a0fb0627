"""InstructBLIP (``InstructBlipForConditionalGeneration``): BLIP-2 whose Q-Former also reads the
instruction, tokenised with its own BERT tokenizer (shipped in ``qformer_tokenizer/``).

The connector graph takes ``qformer_input_ids`` / ``qformer_attention_mask`` besides the image
features; the manifest declares it (``connector_text_inputs``) and ships the Q-Former tokenizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ....runtime.manifest import TokenizerSpec
from ...onnx_export import GraphExport
from ..base import FamilyExport
from ..blip_2 import image_spec, load, prepare_query_model
from ..blip_2.connector import InstructQFormerConnector

ARCHITECTURES = ("InstructBlipForConditionalGeneration",)
QFORMER_TOKENIZER = "qformer_tokenizer.json"


def connector_graph(model, features: torch.Tensor) -> GraphExport:
    module = InstructQFormerConnector(model.query_tokens, model.qformer, model.language_projection).eval()
    n = features.shape[0]
    ids = torch.randint(0, model.config.qformer_config.vocab_size, (n, 5))
    return GraphExport(
        name="connector",
        module=module,
        example_inputs=(features, ids, torch.ones_like(ids)),
        input_names=["image_features", "qformer_input_ids", "qformer_attention_mask"],
        output_names=["image_embeds"],
        dims={
            "image_features": {0: "num_tiles"},
            "qformer_input_ids": {0: "num_tiles", 1: "instruction_length"},
            "qformer_attention_mask": {0: "num_tiles", 1: "instruction_length"},
        },
    )


def qformer_tokenizer(model_dir: Path) -> tuple[str, dict]:
    """The Q-Former's tokenizer.json (+ its id of [PAD]) from ``qformer_tokenizer/``."""
    from transformers import AutoTokenizer

    source = model_dir / "qformer_tokenizer"
    if not source.is_dir():
        raise FileNotFoundError(
            f"{source} is missing; InstructBLIP checkpoints ship the Q-Former's BERT tokenizer there"
        )
    tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return (Path(tmp) / "tokenizer.json").read_text(), {"pad_token_id": tok.pad_token_id}


def prepare(model_dir: Path) -> FamilyExport:
    from transformers import InstructBlipForConditionalGeneration

    model = load(model_dir, InstructBlipForConditionalGeneration)
    tokenizer_json, _ = qformer_tokenizer(model_dir)
    image = image_spec(model_dir, model.config)
    image.connector_tokenizer = TokenizerSpec(path=QFORMER_TOKENIZER, bos_token_id=None, eos_token_ids=[],
                                              pad_token_id=None)
    return prepare_query_model(model, model_dir, "instructblip", ARCHITECTURES[0], connector_graph, image,
                               connector_text_inputs=True, extra_files={QFORMER_TOKENIZER: tokenizer_json})
