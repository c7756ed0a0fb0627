"""InternLM-XComposer (v1): EVA-CLIP ViT-g → a 64-query Q-Former ("perceive sampler", BLIP-2's
design) → ``internlm_proj`` between the learned ``flag_image_start`` / ``flag_image_end`` →
InternLM-7B (``model_type`` "InternLMXComposer"; the checkpoint's own remote code is never
imported or run).

Graphs: vision = the EVA ViT with ``ln_vision`` (transformers' Blip2VisionModel under the original
names, weights.py) → image_features (n, 1 + patches, 1408); connector = the Q-Former's queries
reading them, ``internlm_proj``, the two flags around → image_embeds (n, 2 + queries, d); llm =
InternLM-7B as a Llama with q / k / v / o biases (export/decoder.py's graph).
Images: ``Resize((224, 224), BICUBIC)`` of the PIL picture, CLIP's mean / std (the ``fixed`` scheme).
Prompt: ``' <|User|>:'`` picture text ``'\\n<TOKENS_UNUSED_0> <|Bot|>:'`` (template.py); the answer
ends at ``<TOKENS_UNUSED_1>`` or ``</s>``. Tokenizer: ``tokenizer.model`` converted by the
InternLM-XComposer2 converter (the same SentencePiece rules; internlm_xcomposer2/tokenizer.py).

Verified against transformers' BLIP-2 vision model and Q-Former and a Llama decoder composed under
the original names (tests/test_internlm_xcomposer.py): no original implementation is available.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec, TokenizerSpec
from ...decoder import decoder_graph
from ...graphs import VisionLastHidden
from ...onnx_export import GraphExport
from ...original_weights import load_state_dict
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..base import FamilyExport
from ..internlm_xcomposer2 import padded_embeddings
from ..internlm_xcomposer2.tokenizer import convert
from .config import ARCHITECTURE, XComposerConfig, parse_config
from .template import EOA, IMAGE_TOKEN, chat_template
from .weights import build_llm, build_projection, build_qformer, build_vision

ARCHITECTURES = (ARCHITECTURE,)


class PerceiveSampler(nn.Module):
    """image_features (n, patches, w) → image_embeds (n, 2 + queries, d): the Q-Former's queries
    (``encode_img``: all image positions attended), ``internlm_proj``, start / end flags around."""

    def __init__(self, qformer: nn.Module, query_tokens: torch.Tensor, proj: nn.Linear, start, end):
        super().__init__()
        self.qformer, self.proj = qformer, proj
        self.query_tokens = nn.Parameter(query_tokens, requires_grad=False)
        self.register_buffer("start", start.reshape(1, 1, -1))
        self.register_buffer("end", end.reshape(1, 1, -1))

    def forward(self, image_features):
        n = image_features.shape[0]
        queries = self.query_tokens.expand(n, -1, -1)
        mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_features, encoder_attention_mask=mask,
                           return_dict=True).last_hidden_state
        return torch.cat([self.start.expand(n, -1, -1), self.proj(out), self.end.expand(n, -1, -1)], dim=1)


def vision_graphs(vision: nn.Module, sampler: PerceiveSampler, size: int) -> list[GraphExport]:
    pixels = torch.randn(2, 3, size, size)
    tower = VisionLastHidden(vision).eval()
    with torch.no_grad():
        features = tower(pixels)  # (2, 1 + patches, w)
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=sampler.eval(), example_inputs=(features,), input_names=["image_features"],
                    output_names=["image_embeds"], dims={"image_features": {0: "num_tiles"}}),
    ]


def image_spec(size: int, tokens: int, image_token_id: int) -> ImageSpec:
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=image_token_id, placement="inline",
        preprocess=PreprocessSpec(scheme="fixed", resize="exact", size=[size, size], resample="bicubic",
                                  mean=list(OPENAI_CLIP_MEAN), std=list(OPENAI_CLIP_STD), tokens_per_tile=tokens),
    )


def tokenizer(model_dir: Path, c: XComposerConfig) -> tuple[str, TokenizerSpec, int]:
    """(tokenizer.json, its spec, the image slots' id: one past the tokenizer's pieces)."""
    text, sp = convert(model_dir, IMAGE_TOKEN)
    if len(sp.pieces) > c.vocab_size:
        raise ValueError(f"tokenizer.model has {len(sp.pieces)} pieces but config.json's vocab_size is {c.vocab_size}: "
                         "the tokenizer and the model do not belong together")
    eoa = next((i for i, p in enumerate(sp.pieces) if p.piece == EOA), None)
    if eoa is None:
        raise ValueError(f"tokenizer.model has no {EOA} piece, InternLM-XComposer's end of answer; is it the "
                         "checkpoint's own tokenizer?")
    bos, eos = sp.pieces[sp.bos_id].piece, sp.pieces[sp.eos_id].piece
    sep = " " if sp.add_dummy_prefix else ""
    spec = TokenizerSpec(path="tokenizer.json", bos_token_id=sp.bos_id, eos_token_ids=sorted({sp.eos_id, eoa}),
                         pad_token_id=sp.eos_id, chat_template=chat_template(sep, bos),
                         special_tokens={"bos_token": bos, "eos_token": eos, "image_token": IMAGE_TOKEN})
    return text, spec, len(sp.pieces)


def prepare(model_dir: Path) -> FamilyExport:
    raw = json.loads((model_dir / "config.json").read_text())
    c = parse_config(raw)
    text, tok, image_token_id = tokenizer(model_dir, c)
    state = load_state_dict(model_dir)
    vision, vc = build_vision(state)
    qformer, queries = build_qformer(state, vc.hidden_size)
    if queries.shape[1] != c.num_query_token:
        raise ValueError(f"query_tokens holds {queries.shape[1]} queries but config.json's num_query_token is "
                         f"{c.num_query_token}")
    proj, start, end = build_projection(state, queries.shape[-1], c.hidden_size)
    llm = build_llm(state, c)
    embed = llm.get_input_embeddings().weight.detach()
    return FamilyExport(
        family="internlm_xcomposer",
        architecture=ARCHITECTURE,
        graphs=[*vision_graphs(vision, PerceiveSampler(qformer, queries, proj, start, end), vc.image_size),
                decoder_graph(llm.model, llm.lm_head, llm.config)],
        embed_tokens=padded_embeddings(embed, image_token_id),
        image=image_spec(vc.image_size, c.num_query_token + 2, image_token_id),
        llm=LLMSpec(num_layers=c.num_layers, num_kv_heads=c.num_heads, head_dim=c.head_dim, hidden_size=c.hidden_size,
                    vocab_size=c.vocab_size, max_context=c.max_position_embeddings),
        capabilities=Capabilities(),
        source_config=raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
    )
