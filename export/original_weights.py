"""Checkpoints of families transformers lacks (Qwen-VL, InternLM-XComposer2): their tensors by
the original names, from safetensors only (one file, or shards with ``model.safetensors.index.json``;
export/checkpoint.py has refused pickles already), loaded strictly into our own modules with
errors that name what is missing, surplus or misshapen."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


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


def under(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix…``, with the prefix taken off."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_into(module: nn.Module, picked: dict[str, torch.Tensor], where: str = "") -> None:
    """Strict load (float32); ``where``: the prefix the checkpoint names ``picked`` under (for the error)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(picked))
    unexpected = sorted(set(picked) - set(own))
    wrong = [f"{k} {tuple(picked[k].shape)} ≠ {tuple(own[k].shape)}" for k in own if k in picked
             and picked[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(f"the checkpoint's {where or 'decoder '}weights do not fit its config.json: missing "
                           f"{[where + k for k in missing[:4]]}, unexpected {[where + k for k in unexpected[:4]]}, "
                           f"wrong shapes {wrong[:4]}")
    module.load_state_dict({k: v.float() for k, v in picked.items()}, strict=True)


def need(state: dict, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One tensor of a known shape, float32, or an error naming it."""
    value = state.get(key)
    if value is None or tuple(value.shape) != tuple(shape):
        got = None if value is None else tuple(value.shape)
        raise WeightsError(f"the checkpoint's {key} should be {tuple(shape)}, got {got}; the weights do not fit config.json")
    return value.float()


class RMSNorm(nn.Module):
    """x · rsqrt(mean(x²) + eps) · weight, in float32 (Qwen-7B's and InternLM2's norm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
