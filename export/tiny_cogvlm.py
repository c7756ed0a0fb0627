"""Tiny random CogVLM and CogAgent checkpoints in the original layout (``config.json`` as THUDM writes it —
``CogVLMForCausalLM``, the vision block's ``num_heads`` / ``in_channels`` / ``num_positions``; v1
without a model_type, CogVLM2 with ``num_multi_query_heads`` — weights by the original names, and a
tokenizer), for tests and smoke runs. Tests pass the weights of the original code
(../shared/reference/cogvlm1, cogvlm); without them the weights come from our own modules.
"""

from __future__ import annotations

import json
from pathlib import Path

V1_AUTO_MAP = {"AutoConfig": "configuration_cogvlm.CogVLMConfig", "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"}


def tiny_config(version: int = 1, *, vocab_size: int = 1000, hidden: int = 64, layers: int = 2, heads: int = 4,
                kv_heads: int = 2, image_size: int = 28, patch_size: int = 14, vision_hidden: int = 32,
                vision_layers: int = 2, vision_heads: int = 2, template_version: str = "chat",
                max_positions: int = 256, bos: int = 1, eos: int = 2, pad: int = 0) -> dict:
    grid = image_size // patch_size
    cfg = {
        "architectures": ["CogVLMForCausalLM"], "auto_map": V1_AUTO_MAP, "vocab_size": vocab_size,
        "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "hidden_act": "silu", "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5, "template_version": template_version, "bos_token_id": bos, "eos_token_id": eos,
        "pad_token_id": pad, "tie_word_embeddings": False, "torch_dtype": "float32",
        "vision_config": {"dropout_prob": 0.0, "hidden_act": "gelu", "in_channels": 3, "num_hidden_layers": vision_layers,
                          "hidden_size": vision_hidden, "patch_size": patch_size, "num_heads": vision_heads,
                          "intermediate_size": 2 * vision_hidden, "layer_norm_eps": 1e-6,
                          "num_positions": grid * grid + 1, "image_size": image_size},
    }
    if version == 2:
        cfg.update(model_type="cogvlm2", num_multi_query_heads=kv_heads)
    return cfg


def cogagent_config(base: dict, *, cross_image_size: int = 56, cross_compute_hidden_size: int = 128,
                    template_version: str = "chat_old") -> dict:
    """CogAgent's config.json: a v1 ``tiny_config`` plus the high-resolution branch's fields."""
    cfg = {**base, "architectures": ["CogAgentForCausalLM"], "template_version": template_version,
           "cross_image_size": cross_image_size, "cross_hidden_size": 1024,
           "cross_compute_hidden_size": cross_compute_hidden_size}
    cfg["auto_map"] = {"AutoConfig": "configuration_cogagent.CogAgentConfig",
                       "AutoModelForCausalLM": "modeling_cogagent.CogAgentForCausalLM"}
    return cfg


def make_tiny_cogvlm(out_dir: str | Path, config: dict, state_dict=None, tokenizer=None) -> Path:
    """Write a checkpoint folder: ``config`` (tiny_config's layout), ``state_dict`` original-named
    tensors (else random ones of our modules; CogVLM configs only), ``tokenizer`` a transformers tokenizer (else a byte-level
    BPE trained here; its ids stay below the config's vocab_size)."""
    from safetensors.torch import save_file

    from .tiny import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        state_dict = random_state(config)
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = tokenizer or train_tokenizer(vocab_size=min(400, config["vocab_size"]), chat_template=None)
    tokenizer.save_pretrained(out)
    return out


def random_state(config: dict) -> dict:
    """Original-named random weights from our own modules (no original code needed)."""
    import torch

    from .families.cogvlm.config import parse_config
    from .families.cogvlm.decoder import CogDecoder
    from .families.cogvlm.vision import CogVision

    c = parse_config(config)
    torch.manual_seed(0)
    state = {}
    for prefix, module in (("model.vision.", CogVision(c)), ("model.", CogDecoder(c))):
        for name, p in module.state_dict().items():
            norm = name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith("norm1.weight")
            key = "lm_head.weight" if name == "lm_head.weight" else prefix + name
            state[key] = torch.ones_like(p) if norm else torch.randn_like(p) * 0.2
    state["model.embed_tokens.weight"] = torch.randn(c.vocab_size, c.hidden_size) * 0.2
    return state
