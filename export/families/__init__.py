"""Family registry: ``model_type`` (or, where a config has none, its architecture) → family folder,
resolved with importlib.

Each folder is a module with ``ARCHITECTURES`` and ``prepare(model_dir) -> FamilyExport``.
"""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path

# folder name → the model_types that load through it
FAMILIES = {
    "llava": ("llava",),
    "llava_next": ("llava_next",),
    "llava_onevision": ("llava_onevision",),
    "blip_2": ("blip-2", "blip_2"),
    "instructblip": ("instructblip",),
    "fuyu": ("fuyu",),
    "blip": ("blip",),
    "minigpt4": ("minigpt4", "minigpt-4"),
    "qwen2_vl": ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),  # the Qwen2-VL line: one folder, thin per-version parts
    "internvl": ("internvl",),
    "qwen_vl": ("qwen",),  # Qwen-VL (v1): our own implementation of the checkpoint's remote code
    "internlm_xcomposer2": ("internlmxcomposer2", "internlm2"),  # "internlm2": its remote config class's own name
    "internlm_xcomposer": ("InternLMXComposer", "internlmxcomposer"),  # v1: our own implementation, original names
    "paligemma": ("paligemma",),
    "gemma3": ("gemma3",),
    "vila": ("llava_llama",),  # VILA / VILA1.5 / NVILA: the original llm/ vision_tower/ mm_projector/ layout
    "idefics3": ("idefics3", "smolvlm"),  # Idefics3 and SmolVLM / SmolVLM2: one folder, a per-version table
    "mgm": ("mgm",),  # Mini-Gemini (Llama): our own implementation of the original checkpoint layout
    "mllama": ("mllama",),  # Llama-3.2-Vision: cross-attention layers over the image tiles
    "cogvlm": ("cogvlm", "cogvlm2"),  # CogVLM v1 and CogVLM2: our own implementation, original weight names
    "cogagent": ("cogagent",),  # CogAgent: CogVLM + a high-resolution cross-attention branch, our own implementation
}
# checkpoints whose config.json names no model_type (THUDM's cogvlm-chat-hf): found by architecture
ARCHITECTURES = {"CogVLMForCausalLM": "cogvlm", "CogAgentForCausalLM": "cogagent"}
_ALIASES = {model_type: folder for folder, types in FAMILIES.items() for model_type in types}


class UnsupportedModelError(ValueError):
    pass


def read_config(model_dir: str | Path) -> dict:
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} does not exist; pass a local Hugging Face checkpoint folder")
    path = root / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{root} has no config.json; pass a Hugging Face checkpoint folder (saved with save_pretrained)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def resolve(config: dict):
    """The family module for a checkpoint config; a clear error naming the supported ones otherwise."""
    model_type = config.get("model_type", "")
    folder = _ALIASES.get(model_type)
    if folder is None and not model_type:
        folder = next((ARCHITECTURES[a] for a in config.get("architectures") or [] if a in ARCHITECTURES), None)
    if folder is None:
        supported = sorted(_ALIASES)
        close = difflib.get_close_matches(model_type, supported, n=1, cutoff=0.4)
        hint = f"; the closest supported one is {close[0]!r}" if close else ""
        archs = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise UnsupportedModelError(
            f"model_type {model_type!r} ({archs}) is not supported; supported model types: "
            f"{', '.join(supported)}{hint}"
        )
    return importlib.import_module(f"{__name__}.{folder}")
