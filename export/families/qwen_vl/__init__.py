"""Qwen-VL / Qwen-VL-Chat (``model_type: "qwen"`` with a ``visual`` block; the checkpoint's own
``QWenLMHeadModel`` remote code is never imported or run).

Graphs: vision = the ViT (``transformer.visual`` up to its blocks) → image_features (n, grid², width);
connector = the position-aware adapter + ``ln_post`` + ``proj`` → image_embeds (n, n_queries, d);
llm = the Qwen-7B decoder, whose dynamic-NTK α is a per-sequence input (``ntk_alpha``, declared as
a token input) and whose log-n scaling is computed in the graph.
Images: one square size (448), bicubic, CLIP mean/std. Prompt: each image is
``<img>`` + n_queries slots + ``</img>``; the manifest declares the span, so a path or URL written
between the marks is dropped, never opened. Answers' ``<ref>…</ref><box>(x1,y1),(x2,y2)</box>``
become ``result.boxes`` (manifest ``image.grounding``). Tokenizer: ``qwen.tiktoken`` converted
(tokenizer.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, GroundingSpec, ImageSpec, LLMSpec, TokenInput, TokenizerSpec
from ...decoder import EXAMPLE_BATCH, EXAMPLE_PAST, EXAMPLE_SEQ, cache_names
from ...onnx_export import GraphExport
from ...original_weights import load_into, load_state_dict, need, under
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..base import FamilyExport
from .config import QwenVLConfig, VisualConfig, parse_config
from .decoder import QwenDecoder, QwenDecoderNTK
from .template import chat_template
from .tokenizer import read_ranks, special_ids, tokenizer_json
from .vision import QwenVisual

ARCHITECTURES = ("QWenLMHeadModel",)
SPAN = ["<img>", "</img>"]
IMAGE_TOKEN = "<imgpad>"


class Tower(nn.Module):
    """pixel_values (n, 3, S, S) → image_features (n, grid², width): patches, positions, blocks."""

    def __init__(self, visual: QwenVisual):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values):
        v = self.visual
        x = v.conv1(pixel_values).flatten(2).transpose(1, 2)
        return v.transformer(v.ln_pre(x + v.patch_pos))


class Adapter(nn.Module):
    """image_features (n, grid², width) → image_embeds (n, n_queries, d)."""

    def __init__(self, visual: QwenVisual):
        super().__init__()
        self.visual = visual

    def forward(self, image_features):
        v = self.visual
        return v.ln_post(v.attn_pool(image_features)) @ v.proj


def build(model_dir: Path, c: QwenVLConfig) -> tuple[QwenVisual, QwenDecoder, torch.Tensor]:
    """Our modules with the checkpoint's weights, and the embedding table (vocab, d)."""
    visual = QwenVisual(c.visual)
    decoder = QwenDecoderNTK(c) if c.use_dynamic_ntk else QwenDecoder(c)
    state = load_state_dict(model_dir)
    load_into(visual, under(state, "transformer.visual."), "transformer.visual.")
    load_into(decoder, {k.replace("transformer.", "", 1): v for k, v in state.items()
                        if k.startswith(("transformer.h.", "transformer.ln_f.", "lm_head."))})
    embed = need(state, "transformer.wte.weight", (c.vocab_size, c.hidden_size))
    visual.finish_loading()
    return visual.eval(), decoder.eval(), embed


def vision_graphs(visual: QwenVisual, v: VisualConfig) -> list[GraphExport]:
    pixels = torch.randn(2, 3, v.image_size, v.image_size)
    tower = Tower(visual).eval()
    with torch.no_grad():
        features = tower(pixels)
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=Adapter(visual).eval(), example_inputs=(features,),
                    input_names=["image_features"], output_names=["image_embeds"],
                    dims={"image_features": {0: "num_tiles"}}),
    ]


def llm_graph(decoder: QwenDecoder, c: QwenVLConfig) -> GraphExport:
    """As export/decoder.py's graphs, with ``ntk_alpha`` (batch,) after position_ids when dynamic NTK is on."""
    b, s, p = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST
    past_names, present_names = cache_names(c.num_layers)
    extra = [("ntk_alpha", torch.tensor([1.0, 3.0]), {0: "batch"})] if c.use_dynamic_ntk else []
    # positions past seq_length, so the example exercises log-n scaling too
    positions = torch.arange(c.seq_length - 1, c.seq_length - 1 + s).expand(b, s).contiguous()
    cache = tuple(torch.randn(b, c.num_heads, p, c.kv_channels) for _ in range(2 * c.num_layers))
    return GraphExport(
        name="llm", module=decoder,
        example_inputs=(torch.randn(b, s, c.hidden_size), torch.ones(b, p + s, dtype=torch.int64), positions,
                        *(x for _, x, _ in extra), cache),
        input_names=["inputs_embeds", "attention_mask", "position_ids", *(n for n, _, _ in extra), *past_names],
        output_names=["logits", *present_names],
        dims={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
              "position_ids": {0: "batch", 1: "sequence"}, **{n: axes for n, _, axes in extra},
              **{n: {0: "batch", 2: "past_sequence"} for n in past_names}},
    )


def image_spec(c: QwenVLConfig) -> ImageSpec:
    v = c.visual
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=v.image_start_id + 2, placeholder="".join(SPAN), span=list(SPAN),
        grounding=GroundingSpec(),
        preprocess=PreprocessSpec(scheme="fixed", resize="exact", size=[v.image_size, v.image_size],
                                  resample="bicubic", mean=list(OPENAI_CLIP_MEAN), std=list(OPENAI_CLIP_STD),
                                  tokens_per_tile=v.n_queries),
    )


def tokenizer(model_dir: Path, c: QwenVLConfig) -> tuple[str, TokenizerSpec]:
    path = model_dir / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no qwen.tiktoken (Qwen-VL's tokenizer vocabulary); copy it from "
                                "the checkpoint next to config.json")
    ranks = read_ranks(path)
    ids = special_ids(len(ranks))
    if ids["<img>"] != c.visual.image_start_id:
        raise ValueError(f"qwen.tiktoken has {len(ranks)} tokens, so <img> would be id {ids['<img>']}, but config.json "
                         f"says image_start_id {c.visual.image_start_id}: the tokenizer and the model do not belong together")
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    chat = gen.get("chat_format", "chatml") == "chatml"
    eos = {int(gen.get("eos_token_id", ids["<|endoftext|>"]))} | ({ids["<|im_end|>"], ids["<|im_start|>"]} if chat else set())
    spec = TokenizerSpec(path="tokenizer.json", bos_token_id=None, eos_token_ids=sorted(eos),
                         pad_token_id=ids["<|endoftext|>"], chat_template=chat_template() if chat else None,
                         special_tokens={"eos_token": "<|endoftext|>", "image_token": IMAGE_TOKEN},
                         add_special_tokens=False)
    return tokenizer_json(ranks), spec


def prepare(model_dir: Path) -> FamilyExport:
    raw = json.loads((model_dir / "config.json").read_text())
    c = parse_config(raw)
    text, tok = tokenizer(model_dir, c)
    visual, decoder, embed = build(model_dir, c)
    return FamilyExport(
        family="qwen_vl",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(visual, c.visual), llm_graph(decoder, c)],
        embed_tokens=embed,
        image=image_spec(c),
        llm=LLMSpec(num_layers=c.num_layers, num_kv_heads=c.num_heads, head_dim=c.kv_channels,
                    hidden_size=c.hidden_size, vocab_size=c.vocab_size, max_context=c.max_position_embeddings,
                    token_inputs=[TokenInput(name="ntk_alpha", kind="ntk_alpha", seq_length=c.seq_length)]
                    if c.use_dynamic_ntk else []),
        capabilities=Capabilities(),
        source_config=raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
    )
