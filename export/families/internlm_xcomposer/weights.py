"""InternLM-XComposer (v1)'s original weight names → the modules it is built from.

* ``visual_encoder.*`` (LAVIS EVA ViT-g) + ``ln_vision.*`` → transformers' ``Blip2VisionModel``
  (``ln_vision`` is its ``post_layernorm``; EVA's q_bias / v_bias become the fused qkv bias);
* ``query_tokens`` + ``Qformer.bert.*`` (the "perceive sampler": BLIP-2's Q-Former without its text
  FFN, word / position embeddings and MLM head, which the original sets to None) → ``Blip2QFormerModel``;
  these two renames are LAVIS's, shared with MiniGPT-4 (minigpt4/sanitize.py);
* ``internlm_proj.*``, ``flag_image_start`` / ``flag_image_end`` (1, 1, d) → the connector;
* ``internlm_model.model.*`` / ``internlm_model.lm_head.*`` → a Llama decoder (InternLM-7B's names
  are Llama's), without the rotary ``inv_freq`` buffers the original saves.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ...original_weights import WeightsError, load_into, need, under
from ..minigpt4.sanitize import sanitize
from .config import LN_VISION_EPS, XComposerConfig, qformer_config, vision_config

LLM = "internlm_model."
_LORA = re.compile(r"\.lora_[AB]\.")


def build_vision(state: dict):
    """(Blip2VisionModel with ln_vision as post_layernorm, its config)."""
    from transformers import Blip2VisionModel

    config = vision_config(state)
    config._attn_implementation = "eager"
    model = Blip2VisionModel(config)
    model.post_layernorm.eps = LN_VISION_EPS  # nn.LayerNorm(num_features): the default eps, not EVA's 1e-6
    picked = {k: v for k, v in state.items() if k.startswith(("visual_encoder.", "ln_vision."))}
    load_into(model, under(sanitize(picked), "vision_model."), "visual_encoder.")
    return model.eval(), config


def build_qformer(state: dict, encoder_width: int) -> tuple[nn.Module, torch.Tensor]:
    """(Blip2QFormerModel, query_tokens (1, queries, H))."""
    from transformers import Blip2QFormerModel

    config = qformer_config(state, encoder_width)
    config._attn_implementation = "eager"
    model = Blip2QFormerModel(config)
    picked = {k: v for k, v in state.items() if k.startswith("Qformer.")}
    load_into(model, under(sanitize(picked), "qformer."), "Qformer.")
    return model.eval(), state["query_tokens"].float()


def build_llm(state: dict, c: XComposerConfig):
    """A LlamaForCausalLM holding InternLM-7B's weights (attention biases per the config)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    llm = under(state, LLM)
    lora = sorted(k for k in llm if _LORA.search(k))
    if lora:
        raise WeightsError(f"the checkpoint carries LoRA branches in its InternLM ({LLM}{lora[0]} …, config.json's "
                           "internlm_lora): vlmforge does not export them — merge them into the base weights first")
    config = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_heads,
                         rms_norm_eps=c.rms_norm_eps, rope_theta=10000.0, attention_bias=c.bias, mlp_bias=False,
                         max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=False,
                         hidden_act="silu")
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    weights = {k: v for k, v in llm.items() if not k.endswith("rotary_emb.inv_freq")}
    load_into(model, weights, LLM)
    return model.eval()


def build_projection(state: dict, q_hidden: int, d: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """(internlm_proj Linear(H_q, d), flag_image_start (d,), flag_image_end (d,))."""
    proj = nn.Linear(q_hidden, d)
    proj.weight.data = need(state, "internlm_proj.weight", (d, q_hidden))
    proj.bias.data = need(state, "internlm_proj.bias", (d,))
    start = need(state, "flag_image_start", (1, 1, d)).reshape(d)
    end = need(state, "flag_image_end", (1, 1, d)).reshape(d)
    return proj.eval(), start, end
