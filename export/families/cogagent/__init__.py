"""CogAgent (``cogagent-chat-hf`` / ``cogagent-vqa-hf``): CogVLM v1 plus a high-resolution branch —
EVA2-CLIP-L at ``cross_image_size`` (1120 px) whose patch features every decoder layer reads through
cross-attention. The checkpoint's ``CogAgentForCausalLM`` remote code is never imported or run; the
original weight names are loaded into our own modules (CogVLM's, export/families/cogvlm/, for the
low-resolution tower, the adapter and the visual experts).

Graphs: vision = EVA2-CLIP-E at 224 px (``model.vision``) → image_features; vision_aux = EVA2-CLIP-L
(``model.cross_vision``) → cross_features (n, grid², 1024); connector = the low-resolution tower's
learned positions, the GLU adapter and boi/eoi → image_embeds, with cross_features passed through as
``cross_memory``; cross_kv = every layer's ``cross_attn.key_value`` of that memory, once per picture;
llm = the visual-expert decoder with a cross-attention per layer.
What the runtime honours, all manifest declarations: the two towers on the ``dual`` kernel's two
resizes of one picture (``vision_towers``, ``dual_low="resize"``), the memory
(``capabilities.cross_memory``), CogVLM's expert mask and shared-span positions, one picture per
conversation, and the answers' ``[[x0,y0,x1,y1]]`` boxes (0–1000) as ``result.boxes``
(``image.grounding``, format "brackets"). A prompt needs its picture: the original has no text-only
path (its cross-attention reads the picture in every layer).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ....kernels.spec import PreprocessSpec
from ....runtime.manifest import Capabilities, GroundingSpec, ImageSpec, VisionTowerSpec
from ...decoder import EXAMPLE_BATCH, EXAMPLE_PAST, EXAMPLE_SEQ, cache_names
from ...onnx_export import GraphExport
from ...original_weights import load_into, load_state_dict, need, under
from ...preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ...seq2seq import cross_names
from ..base import FamilyExport
from ..cogvlm import EXPERT_MASK, llm_spec
from ..cogvlm.template import COGAGENT, chat_template
from ..cogvlm.tokenizer import IMAGE_TOKEN, tokenizer_files
from ..cogvlm.vision import Adapter, CogVision, Tower
from .config import CROSS_WIDTH, CogAgentConfig, parse_config
from .cross_vision import CrossVision
from .decoder import CogAgentDecoder, CrossKV

ARCHITECTURES = ("CogAgentForCausalLM",)
MEMORY = "cross_memory"
_UNUSED = ("rotary_emb.inv_freq", "rope.freqs_cos", "rope.freqs_sin")  # buffers we compute in the graphs


class Connector(torch.nn.Module):
    """image_features (n, 1 + grid², w), cross_features (n, m, 1024) → image_embeds (n, grid² + 2, d),
    cross_memory (n, m, 1024): CogVLM's adapter (with CogAgent's positions), the memory passed on."""

    def __init__(self, vision: CogVision):
        super().__init__()
        self.adapter = Adapter(vision)

    def forward(self, image_features, cross_features):
        # "+ 0.0": an output of its own, not the input returned as it is (which the exporter aliases)
        return self.adapter(image_features), cross_features + 0.0


def count_cross_layers(state: dict) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(r"model\.cross_vision\.vit\.model\.blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def build(model_dir: Path, raw: dict):
    """(config, low-res vision, cross vision, decoder, embedding table) with the checkpoint's weights."""
    state = {k: v for k, v in load_state_dict(model_dir).items() if not k.endswith(_UNUSED)}
    c = parse_config(raw, count_cross_layers(state))
    vision, cross, decoder = CogVision(c.base, pos_embed=True), CrossVision(c), CogAgentDecoder(c)
    load_into(vision, under(state, "model.vision."), "model.vision.")
    load_into(cross, under(state, "model.cross_vision."), "model.cross_vision.")
    load_into(decoder, {k.replace("model.", "", 1): v for k, v in state.items()
                        if k.startswith(("model.layers.", "model.norm.", "lm_head."))})
    embed = need(state, "model.embed_tokens.weight", (c.base.vocab_size, c.base.hidden_size))
    return c, vision.eval(), cross.eval(), decoder.eval(), embed


def vision_graphs(c: CogAgentConfig, vision: CogVision, cross: CrossVision) -> list[GraphExport]:
    low, high = c.base.vision.image_size, c.cross_image_size
    pixels, aux = torch.randn(2, 3, low, low), torch.randn(2, 3, high, high)
    tower = Tower(vision).eval()
    with torch.no_grad():
        features, cross_features = tower(pixels), cross(aux)
    return [
        GraphExport(name="vision", module=tower, example_inputs=(pixels,), input_names=["pixel_values"],
                    output_names=["image_features"], dims={"pixel_values": {0: "num_tiles"}}),
        GraphExport(name="vision_aux", module=cross, example_inputs=(aux,), input_names=["pixel_values_aux"],
                    output_names=["cross_features"], dims={"pixel_values_aux": {0: "num_tiles"}}),
        GraphExport(name="connector", module=Connector(vision).eval(), example_inputs=(features, cross_features),
                    input_names=["image_features", "cross_features"], output_names=["image_embeds", MEMORY],
                    dims={"image_features": {0: "num_tiles"}, "cross_features": {0: "num_tiles"}}),
    ]


def cross_kv_graph(decoder: CogAgentDecoder, c: CogAgentConfig) -> GraphExport:
    return GraphExport(name="cross_kv", module=CrossKV(decoder).eval(), example_inputs=(torch.randn(2, 5, CROSS_WIDTH),),
                       input_names=["encoder_hidden_states"], output_names=cross_names(c.base.num_layers),
                       dims={"encoder_hidden_states": {0: "batch", 1: "memory_sequence"}})


def llm_graph(decoder: CogAgentDecoder, c: CogAgentConfig) -> GraphExport:
    """CogVLM's llm graph inputs, then encoder_attention_mask (batch, memory), the cache and cross K/V."""
    base, (b, s, p, m) = c.base, (EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST, 5)
    past_names, present_names = cache_names(base.num_layers)
    kv = tuple(torch.randn(b, base.num_heads, p, base.head_dim) for _ in range(2 * base.num_layers))
    kv += tuple(torch.randn(b, base.num_heads, m, c.cross_head_dim) for _ in range(2 * base.num_layers))
    memory_mask = torch.ones(b, m, dtype=torch.int64)
    memory_mask[1, -2:] = 0  # a shorter picture's padded memory rows
    head = (torch.randn(b, s, base.hidden_size), torch.ones(b, p + s, dtype=torch.int64),
            torch.arange(p, p + s).expand(b, s).contiguous(), torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]),
            memory_mask)
    crosses = cross_names(base.num_layers)
    return GraphExport(
        name="llm", module=decoder, example_inputs=(*head, kv),
        input_names=["inputs_embeds", "attention_mask", "position_ids", EXPERT_MASK, "encoder_attention_mask",
                     *past_names, *crosses],
        output_names=["logits", *present_names],
        dims={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
              "position_ids": {0: "batch", 1: "sequence"}, EXPERT_MASK: {0: "batch", 1: "sequence"},
              "encoder_attention_mask": {0: "batch", 1: "memory_sequence"},
              **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
              **{n: {0: "batch", 2: "memory_sequence"} for n in crosses}},
    )


def image_spec(c: CogAgentConfig, image_token_id: int) -> ImageSpec:
    low, high = c.base.vision.image_size, c.cross_image_size
    spec = PreprocessSpec(scheme="dual", dual_low="resize", resize="exact", size=[high, high], tile_size=low,
                          patch_size=c.base.vision.patch_size, resample="bicubic", mean=list(OPENAI_CLIP_MEAN),
                          std=list(OPENAI_CLIP_STD), tokens_per_tile=c.base.image_tokens)
    return ImageSpec(image_token=IMAGE_TOKEN, image_token_id=image_token_id, max_images=1, preprocess=spec,
                     grounding=GroundingSpec(format="brackets"))


def prepare(model_dir: Path) -> FamilyExport:
    raw = json.loads((model_dir / "config.json").read_text())
    c, vision, cross, decoder, embed = build(model_dir, raw)
    text, tok, image_token_id = tokenizer_files(model_dir, c.base, chat_template(COGAGENT.get(c.base.template_version),
                                                                                  IMAGE_TOKEN))
    return FamilyExport(
        family="cogagent",
        architecture=ARCHITECTURES[0],
        graphs=[*vision_graphs(c, vision, cross), cross_kv_graph(decoder, c), llm_graph(decoder, c)],
        embed_tokens=embed,
        image=image_spec(c, image_token_id),
        llm=llm_spec(c.base),
        capabilities=Capabilities(token_type_experts=True, cross_attention=True, cross_memory=MEMORY),
        source_config=raw,
        extra_files={"tokenizer.json": text},
        tokenizer=tok,
        vision_towers=[VisionTowerSpec(graph="vision", pixels="pixel_values", output="image_features"),
                       VisionTowerSpec(graph="vision_aux", pixels="pixel_values_aux", output="cross_features")],
    )
