"""InternLM-XComposer2 with its HD tiling: the IXC-2.5 lineage and the original IXC2-4KHD
(``model_type`` "internlmxcomposer2"; the checkpoint's own remote code is never imported or run).

Graphs: vision = the CLIP ViT-L/14 tower on t-px tiles (560: IXC-2.5, 336: 4KHD; variants.py),
last-layer patches merged 2×2 → image_features (tiles, (t/28)², 4C); connector = ``vision_proj`` →
image_embeds (tiles, (t/28)², d); llm = InternLM2 with Partial LoRA on wqkv / wo / w1 / w2 / w3,
whose image-token mask is the per-token input ``image_mask`` (declared as a token input; 1 at
image slots, 0 elsewhere).
Images: the ``hd`` scheme as the variant tiles them (a global t² view first, then up to hd_num local
tiles; IXC-2.5 pads below / right and tiles several pictures at hd_num 6, 4KHD pads centred); the
runtime packs the projected tokens with ``plora_sub_GN`` after each row and ``plora_glb_GN``
between the views (both through vision_proj at export: ``image.newline_path`` / ``separator_path``).
Prompt: ``[UNUSED_TOKEN_146]user\\n…[UNUSED_TOKEN_145]\\n[UNUSED_TOKEN_146]assistant\\n`` with
``<ImageHere>`` placeholders (template.py); the answer ends at ``[UNUSED_TOKEN_145]`` or ``</s>``.
Tokenizer: ``tokenizer.model`` converted (tokenizer.py). ``hd_num`` may be set in config.json
(the original's chat() argument; default the variant's).

IXC2-VL (``internlm-xcomposer2-vl-7b``; a checkpoint without ``plora_sub_GN`` / ``plora_glb_GN``,
variants.SingleView): image = the ``fixed`` scheme, a bicubic resize to the tower's 490² (Pillow's,
as its ``transforms.Resize((490, 490), BICUBIC)`` on the opened picture) and CLIP normalisation;
vision = the tower's last-layer patches (1225, C), no merge; connector = ``vision_proj`` from C;
no newline or separator; the prompt is its chat()'s (template.vl_chat_template).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec, TokenInput, TokenizerSpec
from ...decoder import EXAMPLE_BATCH, EXAMPLE_PAST, EXAMPLE_SEQ, cache_names
from ...graphs import Connector
from ...onnx_export import GraphExport
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..base import FamilyExport
from .config import ARCHITECTURE, XComposer2Config, parse_config
from .decoder import LORA_RANK, XComposer2Decoder
from .template import END, IMAGE_TOKEN, chat_template, vl_chat_template
from .tokenizer import convert
from .variants import IXC2_VL, is_single_view, variant_for
from .vision import Tower, build_projector, build_tower, check_view, separators
from ...original_weights import WeightsError, load_into, load_state_dict

ARCHITECTURES = (ARCHITECTURE,)
NEWLINE_FILE, SEPARATOR_FILE = "image_newline.npy", "view_separator.npy"
MASK = "image_mask"


def build_decoder(state: dict, c: XComposer2Config) -> tuple[XComposer2Decoder, torch.Tensor]:
    """Our decoder with the checkpoint's weights, and the embedding table (vocab, d)."""
    lora_a = state.get("model.layers.0.attention.wqkv.Plora_A.weight")  # (rank, hidden)
    if lora_a is None:
        raise WeightsError("the checkpoint has no model.layers.0.attention.wqkv.Plora_A.weight: InternLM-XComposer2's "
                           "decoder carries Partial-LoRA weights in every projection (a plain InternLM2 LLM does not)")
    if lora_a.shape[0] != LORA_RANK:
        raise WeightsError(f"the Partial LoRA is rank {lora_a.shape[0]}; the original builds it at rank {LORA_RANK} "
                           "(lora_alpha 256, so unscaled) and could not load these weights either")
    decoder = XComposer2Decoder(c)
    embed = state.get("model.tok_embeddings.weight")
    weights = {k: v for k, v in state.items() if k.startswith("model.") and k != "model.tok_embeddings.weight"}
    output = state.get("output.weight", embed if c.tie_word_embeddings else None)
    load_into(decoder, {**weights, **({"output.weight": output} if output is not None else {})})
    if embed is None or tuple(embed.shape) != (c.vocab_size, c.hidden_size):
        got = None if embed is None else tuple(embed.shape)
        raise WeightsError(f"model.tok_embeddings.weight should be ({c.vocab_size}, {c.hidden_size}), got {got}")
    return decoder.eval(), embed.float()


def vision_graphs(tower: Tower, proj, tile: int) -> list[GraphExport]:
    pixels = torch.randn(2, 3, tile, tile)
    with torch.no_grad():
        features = tower(pixels).contiguous()  # (2, (tile / 28)², 4C); IXC2-VL (2, (tile / 14)², C), a view
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=Connector(proj).eval(), example_inputs=(features,),
                    input_names=["image_features"], output_names=["image_embeds"],
                    dims={"image_features": {0: "num_tiles"}}),
    ]


def llm_graph(decoder: XComposer2Decoder, c: XComposer2Config) -> GraphExport:
    """export/decoder.py's graph with ``image_mask`` (batch, seq) after position_ids."""
    b, s, p = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST
    past_names, present_names = cache_names(c.num_layers)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # image and text tokens in one step
    positions = torch.arange(p, p + s).expand(b, s).contiguous()
    cache = tuple(torch.randn(b, c.num_kv_heads, p, c.head_dim) for _ in range(2 * c.num_layers))
    return GraphExport(
        name="llm", module=decoder,
        example_inputs=(torch.randn(b, s, c.hidden_size), torch.ones(b, p + s, dtype=torch.int64), positions, mask,
                        cache),
        input_names=["inputs_embeds", "attention_mask", "position_ids", MASK, *past_names],
        output_names=["logits", *present_names],
        dims={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
              "position_ids": {0: "batch", 1: "sequence"}, MASK: {0: "batch", 1: "sequence"},
              **{n: {0: "batch", 2: "past_sequence"} for n in past_names}},
    )


def image_spec(c: XComposer2Config, clip, image_token_id: int) -> ImageSpec:
    v = variant_for(clip.image_size)  # checked in vision.clip_config
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=image_token_id, newline_path=NEWLINE_FILE, separator_path=SEPARATOR_FILE,
        preprocess=PreprocessSpec(scheme="hd", resize="none", size=[clip.image_size], tile_size=clip.image_size,
                                  patch_size=clip.patch_size, merge_size=2, max_tiles=c.hd_num or v.default_hd_num,
                                  resample="bilinear",
                                  background=[255, 255, 255], mean=list(OPENAI_CLIP_MEAN), std=list(OPENAI_CLIP_STD),
                                  image_newline=True, hd_padding=v.padding, hd_cap_scale=v.cap_scale,
                                  multi_image_max_tiles=v.multi_image_hd_num,  # whatever hd_num is
                                  tokens_per_tile=(clip.image_size // clip.patch_size // 2) ** 2),
    )


def tokenizer(model_dir: Path, c: XComposer2Config, chat: str = "ixc2.5") -> tuple[str, TokenizerSpec, int]:
    """(tokenizer.json, its spec, the image slots' id: one past the tokenizer's pieces); ``chat``:
    the variant's chat format ("ixc2": IXC2-VL's and 4KHD's, "ixc2.5": the oracle's)."""
    text, sp = convert(model_dir, IMAGE_TOKEN)
    if len(sp.pieces) > c.vocab_size:
        raise ValueError(f"tokenizer.model has {len(sp.pieces)} pieces but config.json's vocab_size is {c.vocab_size}: "
                         "the tokenizer and the model do not belong together")
    end = next((i for i, p in enumerate(sp.pieces) if p.piece == END), None)
    if end is None:
        raise ValueError(f"tokenizer.model has no {END} piece, the end of every turn in InternLM-XComposer2's chat "
                         "format; is it the checkpoint's own tokenizer?")
    bos, eos = sp.pieces[sp.bos_id].piece, sp.pieces[sp.eos_id].piece
    spec = TokenizerSpec(path="tokenizer.json", bos_token_id=sp.bos_id, eos_token_ids=sorted({sp.eos_id, end}),
                         pad_token_id=sp.eos_id,
                         chat_template=vl_chat_template(bos) if chat == "ixc2" else chat_template(),
                         special_tokens={"bos_token": bos, "eos_token": eos, "image_token": IMAGE_TOKEN})
    return text, spec, len(sp.pieces)


def single_view_spec(clip, image_token_id: int) -> ImageSpec:
    """IXC2-VL: one (t/14)² view per picture (t = 490: 1225 tokens), no newlines or separator."""
    t = clip.image_size
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=image_token_id,
        preprocess=PreprocessSpec(scheme="fixed", resize="exact", size=[t, t], tile_size=t, patch_size=clip.patch_size,
                                  merge_size=IXC2_VL.merge, resample="bicubic", mean=list(OPENAI_CLIP_MEAN),
                                  std=list(OPENAI_CLIP_STD), image_newline=False,
                                  tokens_per_tile=(t // clip.patch_size) ** 2),
    )


def padded_embeddings(embed: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(max(vocab, image id + 1), d): a zero row for the image id when it is past the vocabulary (never
    read: the slots are overwritten with image embeddings)."""
    missing = image_token_id + 1 - embed.shape[0]
    return torch.cat([embed, embed.new_zeros(missing, embed.shape[1])]) if missing > 0 else embed


def prepare(model_dir: Path) -> FamilyExport:
    raw = json.loads((model_dir / "config.json").read_text())
    c = parse_config(raw)
    state = load_state_dict(model_dir)
    single = is_single_view(state)
    tower, clip = build_tower(model_dir, state)
    text, tok, image_token_id = tokenizer(model_dir, c, (IXC2_VL if single else variant_for(clip.image_size)).chat)
    width = (IXC2_VL.merge if single else 2) ** 2 * clip.hidden_size
    proj = build_projector(state, width, c.hidden_size)
    decoder, embed = build_decoder(state, c)
    if single:
        check_view(raw, clip)
        image, extras = single_view_spec(clip, image_token_id), {}
    else:
        newline, separator = separators(state, proj, width)
        image = image_spec(c, clip, image_token_id)
        extras = {NEWLINE_FILE: newline.numpy(), SEPARATOR_FILE: separator.numpy()}
    return FamilyExport(
        family="internlm_xcomposer2",
        architecture=ARCHITECTURE,
        graphs=[*vision_graphs(tower, proj, clip.image_size), llm_graph(decoder, c)],
        embed_tokens=padded_embeddings(embed, image_token_id),
        image=image,
        llm=LLMSpec(num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                    hidden_size=c.hidden_size, vocab_size=c.vocab_size, max_context=c.max_context,
                    token_inputs=[TokenInput(name=MASK, kind="image_mask")]),
        capabilities=Capabilities(image_newline=not single),
        source_config=raw,
        extra_arrays=extras,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
    )
