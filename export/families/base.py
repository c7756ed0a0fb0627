"""The contract every family folder fulfils: ``prepare(model_dir) -> FamilyExport``.

A family folder (named after the Hugging Face ``model_type``) knows how to load its checkpoint,
which submodules form the vision, connector and LLM graphs, how its images are preprocessed and
which capability flags the runtime must honour. Nothing outside the folder knows these things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import torch

from ...runtime.manifest import Capabilities, ImageSpec, LLMSpec, TokenizerSpec
from ..onnx_export import GraphExport


def load_pretrained(model_cls, model_dir: Path, **kwargs):
    """``model_cls.from_pretrained`` in float32 with eager attention: the exported graph is then
    plain MatMul/Softmax, which every backend parses."""
    return model_cls.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32, **kwargs).eval()


@dataclass
class FamilyExport:
    family: str
    architecture: str
    graphs: list[GraphExport]  # vision, connector, llm
    embed_tokens: torch.Tensor  # (vocab, hidden): gathered by the runtime, not a graph
    image: ImageSpec
    llm: LLMSpec
    capabilities: Capabilities
    source_config: dict
    atol: float = 1e-4  # export-time check of each graph against its torch module
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # file name → array (.npy artifacts)
    extra_files: dict[str, str] = field(default_factory=dict)  # file name → text (tokenizers …)
    decoder_start_token_id: int | None = None  # encoder-decoder LMs: the decoder's first input
    tokenizer_overrides: dict = field(default_factory=dict)  # TokenizerSpec fields the family sets itself
    # a family that converts its own tokenizer (Qwen-VL's tiktoken) writes it in extra_files and
    # describes it here; None: transformers' AutoTokenizer of the folder (export/tokenizer.py)
    tokenizer: TokenizerSpec | None = None
    stop_strings: list[str] = field(default_factory=list)  # the conversation format's turn separator
    prompt_suffix: str = ""  # appended to every prompt (Fuyu's beginning-of-answer token)
    vision_towers: list = field(default_factory=list)  # VisionTowerSpec: several vision graphs, one connector
