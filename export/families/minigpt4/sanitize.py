"""Original MiniGPT-4 (LAVIS-style) weight names → transformers' ``Blip2ForConditionalGeneration``.

MiniGPT-4 is BLIP-2's EVA ViT + Q-Former, a linear ``llama_proj`` and a Vicuna (Llama) decoder.
The renames follow transformers' BLIP-2 conversion script; EVA's separate q/v biases become the
fused ``qkv.bias`` (its key bias is zero). The Q-Former's unused text embeddings and MLM head,
which MiniGPT-4 drops, are skipped.
"""

from __future__ import annotations

import re

import torch

_PREFIXES = [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embedding."),
    ("ln_vision.", "vision_model.post_layernorm."),
    ("Qformer.bert.embeddings.LayerNorm.", "qformer.layernorm."),
    ("Qformer.bert.", "qformer."),
    ("llama_proj.", "language_projection."),
    ("llama_model.", "language_model."),
]
_BLOCK = [("norm1.", "layer_norm1."), ("norm2.", "layer_norm2."), ("attn.qkv.", "self_attn.qkv."),
          ("attn.proj.", "self_attn.projection."), ("mlp.", "mlp.")]
_SKIP = re.compile(r"^Qformer\.(cls\.|bert\.embeddings\.(word_embeddings|position_embeddings|position_ids))")


def is_original_layout(state_dict: dict) -> bool:
    return any(k.startswith(("llama_proj.", "visual_encoder.")) for k in state_dict)


def rename(key: str) -> str:
    m = re.match(r"visual_encoder\.blocks\.(\d+)\.(.*)", key)
    if m:
        rest = m.group(2)
        for old, new in _BLOCK:
            if rest.startswith(old):
                return f"vision_model.encoder.layers.{m.group(1)}.{new}{rest[len(old):]}"
        raise ValueError(f"unexpected MiniGPT-4 vision weight {key!r}")
    for old, new in _PREFIXES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    return key.replace("attention.self.", "attention.attention.")


def sanitize(state_dict: dict) -> dict:
    """Rename an original MiniGPT-4 state dict to transformers' BLIP-2 layout."""
    out, biases = {}, {}
    for key, value in state_dict.items():
        if _SKIP.match(key):
            continue
        m = re.match(r"visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$", key)
        if m:
            biases.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        out[rename(key)] = value
    for layer, b in biases.items():
        q, v = b["q_bias"], b["v_bias"]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out
