"""Tiny InternLM-XComposer2 checkpoints in the original layout, for tests: ``config.json`` as the hub
writes it (``model_type`` "internlmxcomposer2", the remote classes in ``auto_map``), the CLIP tower's
config in the subfolder the original loads it from (``IXC2d5_clip_l_560/``), the weights by their
on-disk names (transformers 4 wrote the tower under ``vit.vision_tower.vision_model.``), and the
SentencePiece ``tokenizer.model``.

The weights and the tokenizer come from the original code's tiny model
(../shared/reference/internlm-xcomposer2: ``model.state_dict()``, ``tokenizer.vocab_file``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CLIP_FOLDER = "IXC2d5_clip_l_560"
LLM_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "bias", "rope_theta", "pad_token_id",
            "bos_token_id", "eos_token_id", "tie_word_embeddings", "max_length")
AUTO_MAP = {"AutoConfig": "configuration_internlm_xcomposer2.InternLMXcomposer2Config",
            "AutoModel": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM",
            "AutoModelForCausalLM": "modeling_internlm_xcomposer2.InternLMXComposer2ForCausalLM"}


def rope_scaling(llm: dict) -> dict | None:
    """The original's ``rope_scaling`` ({"type", "factor"}), from transformers 5's rope_parameters too."""
    rope = llm.get("rope_scaling") or llm.get("rope_parameters") or {}
    kind = rope.get("type", rope.get("rope_type", "default"))
    return None if kind == "default" else {"type": kind, "factor": float(rope["factor"])}


def tiny_config(llm: dict, hd_num: int | None = None) -> dict:
    """config.json from the LLM config's fields (the original's ``config.to_dict()``)."""
    config = {"architectures": ["InternLMXComposer2ForCausalLM"], "model_type": "internlmxcomposer2",
              "auto_map": AUTO_MAP, "hidden_act": "silu", "rope_scaling": rope_scaling(llm),
              "attn_implementation": "eager", "torch_dtype": "float32", **{k: llm[k] for k in LLM_KEYS if k in llm}}
    if hd_num is not None:
        config["hd_num"] = hd_num
    return config


def on_disk_names(state: dict) -> dict:
    """transformers 5's CLIPVisionModel names → the checkpoint's (``vit.vision_tower.vision_model.…``)."""
    tower = "vit.vision_tower."
    return {(tower + "vision_model." + k[len(tower):] if k.startswith(tower) and not k.startswith(tower + "vision_model.")
             else k): v for k, v in state.items()}


def make_tiny_internlm_xcomposer2(out_dir: str | Path, state_dict: dict, tokenizer_model: str | Path, llm: dict,
                                  clip: dict, hd_num: int | None = None, clip_folder: str | None = CLIP_FOLDER) -> Path:
    """Write a checkpoint folder. ``llm``: the LLM config's fields; ``clip``: the CLIP vision config's,
    written to ``clip_folder`` (None: no CLIP folder, as IXC2-4KHD ships — its tower config is the hub's
    ``openai/clip-vit-large-patch14-336``, so the export reads it off the weights)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in on_disk_names(state_dict).items()}
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(tiny_config(llm, hd_num), indent=2))
    if clip_folder is not None:
        (out / clip_folder).mkdir(exist_ok=True)
        (out / clip_folder / "config.json").write_text(json.dumps({"model_type": "clip_vision_model", **clip}, indent=2))
    shutil.copy(tokenizer_model, out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "InternLM2Tokenizer", "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
        "unk_token": "<unk>"}))
    return out
