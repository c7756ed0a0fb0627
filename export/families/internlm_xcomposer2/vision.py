"""InternLM-XComposer2's vision side: the CLIP ViT-L/14 tower (transformers' CLIPVisionModel,
loaded under the checkpoint's ``vit.vision_tower.`` names), its 2×2 token merge and the
``vision_proj`` MLP; the two learned separators ``plora_sub_GN`` / ``plora_glb_GN``.

The original (build_mlp.CLIPVisionTower) takes the last layer's patch features (``hidden_states[-1]``
without CLS), merges each 2×2 block of the patch grid (40×40 at 560 px, 24×24 at 4KHD's 336) into
one 4C-wide token (channels in (row, column, C) order), puts ``sub_GN`` after every token row and
``glb_GN`` between the global view and the local grid — all 4C wide, before ``vision_proj``. The
MLP works token by token, so here the separators go through it once at export (``newline`` /
``separator`` in the LLM's width) and the runtime packs projected tokens (kernels/hd.py
``pack_hd_features``) in the same order.

The tower's config is not in the checkpoint's config.json (the original loads it from a CLIP
folder): a CLIP vision config.json in a subfolder (the original layout: ``IXC2d5_clip_l_560/``),
else it is read off the weights with CLIP ViT's 64-wide heads (4KHD: its tower config comes from
the hub's ``openai/clip-vit-large-patch14-336``, so nothing in the folder names it).

IXC2-VL (variants.SingleView) keeps the last layer's patches as they are (``feature_select``:
``hidden_states[-1][:, 1:]``, no merge, no separators). Its tower is the hub's 336-px CLIP whose
position table ``resize_pos`` resized (bicubic) to 35×35 before the checkpoint was loaded over it,
so the checkpoint holds the resized table and the view is that table's grid × patch (490 px).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from ...graphs import VisionFeatures
from ...original_weights import WeightsError, load_into, need
from .variants import VARIANTS, is_single_view, variant_for
from .weights import tower_state

HEAD_DIM = 64  # CLIP ViT-L/14: 1024 wide, 16 heads


class VisionConfigError(ValueError):
    pass


def clip_folder_config(model_dir: Path) -> dict | None:
    """The CLIP vision config of a subfolder (``clip_vision_model``, or a ``clip`` config's vision part)."""
    for sub in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        path = sub / "config.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise VisionConfigError(f"{path} is not valid JSON: {e}") from None
        if data.get("model_type") == "clip_vision_model":
            return data
        if data.get("model_type") == "clip" and isinstance(data.get("vision_config"), dict):
            return data["vision_config"]
    return None


def inferred_config(tower: dict) -> dict:
    """Width, depth, patch and image size from the tower's tensors; heads by CLIP ViT's 64-wide rule."""
    patch = tower.get("embeddings.patch_embedding.weight")
    positions = tower.get("embeddings.position_embedding.weight")
    fc1 = tower.get("encoder.layers.0.mlp.fc1.weight")
    if patch is None or positions is None or fc1 is None:
        raise WeightsError("the checkpoint has no CLIP vision tower under vit.vision_tower. (patch and position "
                           "embeddings, encoder layers); InternLM-XComposer2 checkpoints carry its weights")
    width, p = int(patch.shape[0]), int(patch.shape[2])
    if width % HEAD_DIM:
        raise VisionConfigError(f"the vision tower is {width} wide, not a multiple of {HEAD_DIM}, so its head count "
                                "cannot be read off the weights; put its CLIP config.json in a subfolder")
    layers = {int(m.group(1)) for k in tower if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    return {"hidden_size": width, "intermediate_size": int(fc1.shape[0]), "num_hidden_layers": max(layers) + 1,
            "num_attention_heads": width // HEAD_DIM, "patch_size": p,
            "image_size": math.isqrt(int(positions.shape[0]) - 1) * p}


def table_view(tower: dict, patch: int) -> int:
    """The picture side the position table is sized for: grid × patch (IXC2-VL's resized 35×35 → 490)."""
    rows = int(tower["embeddings.position_embedding.weight"].shape[0])
    grid = math.isqrt(rows - 1)
    if grid * grid + 1 != rows:
        raise VisionConfigError(f"the vision tower's position table has {rows} rows, not a square grid plus CLS; "
                                "is this an InternLM-XComposer2 checkpoint?")
    return grid * patch


def clip_config(model_dir: Path, tower: dict, single_view: bool = False):
    """The tower's CLIPVisionConfig, checked against the tile geometry the original hard-codes
    (``single_view``: IXC2-VL, whose view is what its resized position table holds)."""
    from transformers import CLIPVisionConfig

    data = clip_folder_config(model_dir) or inferred_config(tower)
    if single_view:
        data = {**data, "image_size": table_view(tower, int(data.get("patch_size", 14)))}
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "hidden_act", "layer_norm_eps")
    config = CLIPVisionConfig(**{k: data[k] for k in keys if k in data})
    config._attn_implementation = "eager"
    if single_view:
        return config
    if variant_for(config.image_size) is None:
        known = ", ".join(f"{v.tile} px ({v.name})" for v in VARIANTS.values())
        raise VisionConfigError(
            f"the vision tower takes {config.image_size}-px pictures but the checkpoint has HD separators "
            f"(plora_sub_GN / plora_glb_GN); the InternLM-XComposer2 HD variants' towers take {known}. "
            "IXC2-VL (490 px, no tiling) is exported from its own checkpoint, which has no separators")
    if (config.image_size // config.patch_size) % 2 or config.image_size % config.patch_size:
        raise VisionConfigError(f"the patch grid {config.image_size}/{config.patch_size} must be whole and even "
                                "(tokens are merged 2×2)")
    return config


def check_view(config: dict, clip) -> None:
    """IXC2-VL's processor resizes to config.json's ``img_size``; its tower takes what its table holds."""
    size = config.get("img_size", clip.image_size)
    if size != clip.image_size:
        raise VisionConfigError(
            f"config.json's img_size {size} (the side IXC2-VL's processor resizes pictures to) does not match the "
            f"{clip.image_size}-px view its vision tower's position table holds; the original could not run them "
            "together either — fix img_size or use the checkpoint's own weights")


def merge_2x2(features: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, grid², C) → (n, (grid/2)², 4C): each 2×2 block one token, channels (row, column, C)."""
    n, _, c = features.shape
    x = features.reshape(n, grid // 2, 2, grid // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (grid // 2) ** 2, 4 * c)


class Tower(nn.Module):
    """pixel_values (n, 3, t, t) → image_features (n, (t/28)², 4C): last-layer patches, merged 2×2
    (t = 560: 400 tokens; 4KHD's t = 336: 144); ``merge`` False (IXC2-VL): (n, (t/14)², C)."""

    def __init__(self, clip: nn.Module, grid: int, merge: bool = True):
        super().__init__()
        self.features = VisionFeatures(clip, [-1], drop_cls=True)
        self.grid = grid
        self.merge = merge

    def forward(self, pixel_values):
        features = self.features(pixel_values)
        return merge_2x2(features, self.grid) if self.merge else features


def build_tower(model_dir: Path, state: dict) -> tuple[Tower, object]:
    from transformers import CLIPVisionModel

    tower = tower_state(state)
    single = is_single_view(state)
    config = clip_config(model_dir, tower, single)
    clip = CLIPVisionModel(config)
    load_into(clip, tower, "vit.vision_tower.")
    return Tower(clip.eval(), config.image_size // config.patch_size, merge=not single).eval(), config


def build_projector(state: dict, in_dim: int, hidden: int) -> nn.Sequential:
    """``vision_proj``: Linear(4C, H), GELU, Linear(H, H) (mlp2x_gelu)."""
    proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    for i, shape in ((0, (hidden, in_dim)), (2, (hidden, hidden))):
        proj[i].weight.data = need(state, f"vision_proj.{i}.weight", shape)
        proj[i].bias.data = need(state, f"vision_proj.{i}.bias", shape[:1])
    return proj.eval()


@torch.no_grad()
def separators(state: dict, proj: nn.Module, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(newline, separator) (hidden,): ``plora_sub_GN`` and ``plora_glb_GN`` through vision_proj."""
    sub = need(state, "plora_sub_GN", (1, 1, 1, width)).reshape(1, width)
    glb = need(state, "plora_glb_GN", (1, 1, width)).reshape(1, width)
    return proj(sub)[0], proj(glb)[0]
