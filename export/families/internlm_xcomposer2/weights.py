"""The checkpoint's tensors by their original names, from safetensors only (one file or shards with
``model.safetensors.index.json``; export/checkpoint.py has refused pickles already), and strict
loading into our modules with errors that name what is missing, surplus or misshapen."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

TOWER = "vit.vision_tower."
CLIP_ROOT = "vision_model."  # transformers 4 saved CLIPVisionModel under it; transformers 5 drops it


class WeightsError(ValueError):
    pass


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        sorted(p.name for p in model_dir.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(model_dir / name)))
    return state


def tower_state(state: dict) -> dict[str, torch.Tensor]:
    """The CLIP tower's tensors under CLIPVisionModel's own names (either layout), without the
    ``position_ids`` buffer older transformers saved (an arange, rebuilt by the model)."""
    out = {}
    for key, value in state.items():
        if key.startswith(TOWER):
            name = key[len(TOWER):]
            name = name[len(CLIP_ROOT):] if name.startswith(CLIP_ROOT) else name
            if name != "embeddings.position_ids":
                out[name] = value
    return out


def load_into(module: nn.Module, picked: dict[str, torch.Tensor], where: str = "") -> None:
    """Strict load with an error naming what is missing, surplus or misshapen (``where``: the prefix
    the checkpoint names ``picked`` under; empty for the decoder, whose names are whole)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(picked))
    unexpected = sorted(set(picked) - set(own))
    wrong = [f"{k} {tuple(picked[k].shape)} ≠ {tuple(own[k].shape)}" for k in own if k in picked
             and picked[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(f"the checkpoint's {where or 'decoder'} weights do not fit its config.json: missing "
                           f"{[where + k for k in missing[:4]]}, unexpected {[where + k for k in unexpected[:4]]}, "
                           f"wrong shapes {wrong[:4]}")
    module.load_state_dict({k: v.float() for k, v in picked.items()}, strict=True)


def need(state: dict, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    value = state.get(key)
    if value is None or tuple(value.shape) != shape:
        got = None if value is None else tuple(value.shape)
        raise WeightsError(f"the checkpoint's {key} should be {shape}, got {got}; the weights do not fit config.json")
    return value.float()
