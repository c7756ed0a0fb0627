"""The checkpoint's tensors by their original names, from safetensors only (one file or shards
with ``model.safetensors.index.json``; export/checkpoint.py has refused pickles already)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        sorted(p.name for p in model_dir.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(model_dir / name)))
    return state
