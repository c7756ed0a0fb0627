"""InternLM-XComposer (v1)'s ``config.json`` (``model_type`` "InternLMXComposer", the remote
``configuration_InternLM_XComposer.py``'s name), read without that file, and the vision / Q-Former
sizes, which the original hard-codes (``create_eva_vit_g``, ``init_qformer`` with BERT-base's
``BertConfig()``) and which are read off the weights here.

The decoder is InternLM-7B: a Llama layout with biases on q / k / v / o when the config sets
``intern_converted_llm`` and ``kqvo_bias`` (the published checkpoints), none otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

ARCHITECTURE = "InternLMXComposerForCausalLM"
EVA_HEADS = 16  # create_eva_vit_g: num_heads=16 whatever the width (1408 → 88-wide heads)
QFORMER_HEAD_DIM = 64  # BertConfig(): 768 wide, 12 heads
CROSS_ATTENTION_FREQUENCY = 2  # init_qformer: a cross-attention layer every other block
EVA_LN_EPS, LN_VISION_EPS, BERT_LN_EPS = 1e-6, 1e-5, 1e-12  # EVA's blocks; ln_vision = nn.LayerNorm default


class XComposerConfigError(ValueError):
    pass


@dataclass(frozen=True)
class XComposerConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    rms_norm_eps: float
    bias: bool  # q / k / v / o biases
    max_position_embeddings: int
    num_query_token: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _need(config: dict, key: str, kind, default=None):
    value = config.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise XComposerConfigError(f"config.json needs {key!r} as {kind.__name__}, got {value!r}; is this an "
                                   "InternLM-XComposer (v1) checkpoint?")
    return value


def parse_config(config: dict) -> XComposerConfig:
    archs = config.get("architectures") or []
    if archs and ARCHITECTURE not in archs:
        raise XComposerConfigError(f"config.json names {archs}, not {ARCHITECTURE}: vlmforge exports the "
                                   "InternLM-XComposer (v1) vision-language model under that class")
    if config.get("rope_scaling"):
        raise XComposerConfigError(f"config.json sets rope_scaling {config['rope_scaling']!r}; InternLM-XComposer's "
                                   "InternLM-7B has plain rotary positions (base 10000) and no scaling")
    converted = bool(config.get("intern_converted_llm", False))
    c = XComposerConfig(
        vocab_size=_need(config, "vocab_size", int),
        hidden_size=_need(config, "hidden_size", int),
        intermediate_size=_need(config, "intermediate_size", int),
        num_layers=_need(config, "num_hidden_layers", int),
        num_heads=_need(config, "num_attention_heads", int),
        rms_norm_eps=float(_need(config, "rms_norm_eps", float, 1e-6)),
        bias=converted and bool(config.get("kqvo_bias", False)),
        max_position_embeddings=_need(config, "max_position_embeddings", int, 2048),
        num_query_token=_need(config, "num_query_token", int, 64),
    )
    problems = []
    if c.hidden_size % c.num_heads or c.head_dim % 2:
        problems.append(f"hidden_size {c.hidden_size} must split into num_attention_heads {c.num_heads} "
                        "even-sized heads")
    if min(c.vocab_size, c.intermediate_size, c.num_layers, c.num_query_token) < 1:
        problems.append("vocab_size, intermediate_size, num_hidden_layers and num_query_token must be positive")
    if problems:
        raise XComposerConfigError("config.json does not describe an InternLM-XComposer model vlmforge can build: "
                                   + "; ".join(problems))
    return c


def _depth(state: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def vision_config(state: dict[str, torch.Tensor]):
    """Blip2VisionConfig of the EVA ViT under ``visual_encoder.``, from its tensors."""
    from transformers import Blip2VisionConfig

    patch, pos = state.get("visual_encoder.patch_embed.proj.weight"), state.get("visual_encoder.pos_embed")
    fc1 = state.get("visual_encoder.blocks.0.mlp.fc1.weight")
    if patch is None or pos is None or fc1 is None:
        raise XComposerConfigError("the checkpoint has no EVA ViT under visual_encoder. (patch_embed, pos_embed, "
                                   "blocks); InternLM-XComposer checkpoints carry it")
    width, p = int(patch.shape[0]), int(patch.shape[2])
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    if width % EVA_HEADS or grid * grid != pos.shape[1] - 1:
        raise XComposerConfigError(f"the EVA ViT is {width} wide with {pos.shape[1]} positions: it must be a multiple "
                                   f"of the {EVA_HEADS} heads create_eva_vit_g builds, with a square patch grid + CLS")
    return Blip2VisionConfig(hidden_size=width, intermediate_size=int(fc1.shape[0]), num_attention_heads=EVA_HEADS,
                             num_hidden_layers=_depth(state, r"visual_encoder\.blocks\.(\d+)\."), image_size=grid * p,
                             patch_size=p, hidden_act="gelu", layer_norm_eps=EVA_LN_EPS, qkv_bias=True)


def qformer_config(state: dict[str, torch.Tensor], encoder_width: int):
    """Blip2QFormerConfig of the perceive sampler under ``Qformer.``, from its tensors."""
    from transformers import Blip2QFormerConfig

    queries = state.get("query_tokens")
    inter = state.get("Qformer.bert.encoder.layer.0.intermediate_query.dense.weight")
    if queries is None or inter is None:
        raise XComposerConfigError("the checkpoint has no perceive sampler (query_tokens, "
                                   "Qformer.bert.encoder.layer.*); InternLM-XComposer checkpoints carry it")
    hidden = int(queries.shape[-1])
    if hidden % QFORMER_HEAD_DIM:
        raise XComposerConfigError(f"the Q-Former is {hidden} wide, not a multiple of BERT's {QFORMER_HEAD_DIM}-wide "
                                   "heads (init_qformer builds BertConfig()'s)")
    depth = _depth(state, r"Qformer\.bert\.encoder\.layer\.(\d+)\.")
    return Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=depth,
                              num_attention_heads=hidden // QFORMER_HEAD_DIM, intermediate_size=int(inter.shape[0]),
                              layer_norm_eps=BERT_LN_EPS, cross_attention_frequency=CROSS_ATTENTION_FREQUENCY,
                              encoder_hidden_size=encoder_width, use_qformer_text_input=False)
