"""CogVLM v1 (``cogvlm-chat-hf`` / ``cogvlm-base-*-hf``) and CogVLM2 (``cogvlm2-llama3-chat-19B``): the
checkpoint's ``CogVLMForCausalLM`` remote code is never imported or run; the original weight
names are loaded into our own modules.

Graphs: vision = EVA2-CLIP (``model.vision`` up to its blocks) → image_features (n, 1 + grid², w);
connector = cls dropped, CogVLM2's 2×2 convolution, the GLU adapter, boi + tokens + eoi → image_embeds
(n, image_tokens, d); llm = the visual-expert decoder (decoder.py), whose ``expert_mask`` input routes
each token through the vision or the language weights of every layer.
What the runtime honours, all declared in the manifest: the image's slots right after BOS (the chat
template puts the image first); ``expert_mask`` = the image slots but each one's last (eoi) token
(token input ``image_mask`` with ``skip_last`` 1); positions ``shared_span`` (boi, one shared position
for the interior, eoi); one image per prompt (``image.max_images``). Images: one square size (490 v1,
1344 v2), bicubic, CLIP mean/std, as ``build_conversation_input_ids``'s transform.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec, PositionSpec, TokenInput
from ...decoder import EXAMPLE_BATCH, EXAMPLE_PAST, EXAMPLE_SEQ, cache_names
from ...onnx_export import GraphExport
from ...original_weights import load_into, load_state_dict, need, under
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..base import FamilyExport
from .config import CogVLMConfig, parse_config
from .decoder import CogDecoder
from .template import COGVLM, chat_template
from .tokenizer import IMAGE_TOKEN, tokenizer_files
from .vision import Adapter, CogVision, Tower

ARCHITECTURES = ("CogVLMForCausalLM", "CogvlmForCausalLM")  # the remote code's class; the transformers port's
EXPERT_MASK = "expert_mask"


def build(model_dir: Path, c: CogVLMConfig) -> tuple[CogVision, CogDecoder, torch.Tensor]:
    """Our modules with the checkpoint's weights, and the embedding table (vocab, d)."""
    vision, decoder = CogVision(c), CogDecoder(c)
    # the remote code saves each layer's rotary inv_freq buffer; ours is computed in the graph
    state = {k: v for k, v in load_state_dict(model_dir).items() if not k.endswith("rotary_emb.inv_freq")}
    load_into(vision, under(state, "model.vision."), "model.vision.")
    load_into(decoder, {k.replace("model.", "", 1): v for k, v in state.items()
                        if k.startswith(("model.layers.", "model.norm.", "lm_head."))})
    embed = need(state, "model.embed_tokens.weight", (c.vocab_size, c.hidden_size))
    return vision.eval(), decoder.eval(), embed


def vision_graphs(vision: CogVision, c: CogVLMConfig) -> list[GraphExport]:
    size = c.vision.image_size
    pixels = torch.randn(2, 3, size, size)
    tower = Tower(vision).eval()
    with torch.no_grad():
        features = tower(pixels)
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="connector", module=Adapter(vision).eval(), example_inputs=(features,),
                    input_names=["image_features"], output_names=["image_embeds"],
                    dims={"image_features": {0: "num_tiles"}}),
    ]


def llm_graph(decoder: CogDecoder, c: CogVLMConfig) -> GraphExport:
    """As export/decoder.py's graphs, with ``expert_mask`` (batch, sequence) after position_ids; the
    example routes tokens of both kinds in each sequence."""
    b, s, p = EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST
    past_names, present_names = cache_names(c.num_layers)
    cache = tuple(torch.randn(b, c.num_kv_heads, p, c.head_dim) for _ in range(2 * c.num_layers))
    experts = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    positions = torch.arange(p, p + s).expand(b, s).contiguous()
    return GraphExport(
        name="llm", module=decoder,
        example_inputs=(torch.randn(b, s, c.hidden_size), torch.ones(b, p + s, dtype=torch.int64), positions,
                        experts, cache),
        input_names=["inputs_embeds", "attention_mask", "position_ids", EXPERT_MASK, *past_names],
        output_names=["logits", *present_names],
        dims={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
              "position_ids": {0: "batch", 1: "sequence"}, EXPERT_MASK: {0: "batch", 1: "sequence"},
              **{n: {0: "batch", 2: "past_sequence"} for n in past_names}},
    )


def image_spec(c: CogVLMConfig, image_token_id: int) -> ImageSpec:
    size = c.vision.image_size
    return ImageSpec(
        image_token=IMAGE_TOKEN, image_token_id=image_token_id, max_images=1,
        preprocess=PreprocessSpec(scheme="fixed", resize="exact", size=[size, size], resample="bicubic",
                                  mean=list(OPENAI_CLIP_MEAN), std=list(OPENAI_CLIP_STD),
                                  tokens_per_tile=c.image_tokens),
    )


def llm_spec(c: CogVLMConfig) -> LLMSpec:
    return LLMSpec(num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                   hidden_size=c.hidden_size, vocab_size=c.vocab_size, max_context=c.max_position_embeddings,
                   positions=PositionSpec(scheme="shared_span"),
                   token_inputs=[TokenInput(name=EXPERT_MASK, kind="image_mask", skip_last=1)])


def prepare(model_dir: Path) -> FamilyExport:
    raw = json.loads((model_dir / "config.json").read_text())
    c = parse_config(raw)
    text, tok, image_token_id = tokenizer_files(model_dir, c, chat_template(COGVLM.get(c.template_version), IMAGE_TOKEN))
    vision, decoder, embed = build(model_dir, c)
    return FamilyExport(
        family="cogvlm",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(vision, c), llm_graph(decoder, c)],
        embed_tokens=embed,
        image=image_spec(c, image_token_id),
        llm=llm_spec(c),
        capabilities=Capabilities(token_type_experts=True),
        source_config=raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
    )
