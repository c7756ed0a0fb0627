"""The CLIP tower's tensors in the checkpoint; loading itself is export/original_weights.py."""

from __future__ import annotations

import torch

TOWER = "vit.vision_tower."
CLIP_ROOT = "vision_model."  # transformers 4 saved CLIPVisionModel under it; transformers 5 drops it


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
