"""MGM's high-resolution tower: the stem and four stages of open_clip's timm ConvNeXt
(``OpenCLIPVisionTower``: ``visual.trunk.stem`` / ``visual.trunk.stages``; norm_pre, head and
the CLIP projection are dropped), in plain torch, its shape read from the weights.

Per block (timm ``ConvNeXtBlock``): 7×7 depthwise conv → LayerNorm (eps 1e-6) → MLP 4× with
exact GELU → ·gamma → + input. ``conv_mlp`` checkpoints (1×1-conv MLP, channels-first norm;
timm's atto…nano) and Linear-MLP ones (large_d_320) compute the same thing; both load.

The tower's output (``backbone``): every stage's map, stages 1-3 bilinearly upsampled
(align_corners=False) to stage 0's size, concatenated on channels: (n, ΣC, H/4, W/4)."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6  # timm ConvNeXt's LayerNorm / LayerNorm2d


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (n, C, H, W)."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """fc1 → GELU → fc2, as 1×1 convs on (n, C, H, W) (``conv``) or Linears on (n, H, W, C)."""

    def __init__(self, dim: int, hidden: int, conv: bool):
        super().__init__()
        make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.fc1, self.act, self.fc2 = make(dim, hidden), nn.GELU(), make(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, kernel: int, hidden: int, conv_mlp: bool, has_gamma: bool):
        super().__init__()
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = LayerNorm2d(dim, eps=EPS) if conv_mlp else nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, hidden, conv_mlp)
        self.gamma = nn.Parameter(torch.ones(dim)) if has_gamma else None

    def forward(self, x):  # (n, C, H, W)
        y = self.conv_dw(x)
        if self.conv_mlp:
            y = self.mlp(self.norm(y))
        else:
            y = self.mlp(self.norm(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            y = y * self.gamma.reshape(1, -1, 1, 1)
        return x + y


class Stage(nn.Module):
    def __init__(self, blocks: list[Block], downsample: tuple[int, int, int] | None):
        super().__init__()
        if downsample is None:
            self.downsample = nn.Identity()
        else:  # (in, out, stride): LayerNorm2d then a stride×stride conv
            c_in, c_out, stride = downsample
            self.downsample = nn.Sequential(LayerNorm2d(c_in, eps=EPS), nn.Conv2d(c_in, c_out, stride, stride=stride))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXtTower(nn.Module):
    """pixel_values_aux (n, 3, H, W) → image_features_aux (n, ΣC, H/4, W/4) (the stem's stride)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        """``state``: the tower's tensors named ``stem.*`` / ``stages.*`` (open_clip's trunk)."""
        super().__init__()
        stem = state["stem.0.weight"]  # (C0, 3, s, s)
        patch = stem.shape[-1]
        self.stem = nn.Sequential(nn.Conv2d(3, stem.shape[0], patch, stride=patch), LayerNorm2d(stem.shape[0], eps=EPS))
        self.stages = nn.ModuleList(self._stage(state, i) for i in range(_count(state, r"stages\.(\d+)\.")))
        self.channels = [int(state[f"stages.{i}.blocks.0.conv_dw.weight"].shape[0]) for i in range(len(self.stages))]

    @staticmethod
    def _stage(state: dict, i: int) -> Stage:
        p = f"stages.{i}."
        down = state.get(p + "downsample.1.weight")  # (out, in, s, s)
        downsample = None if down is None else (down.shape[1], down.shape[0], down.shape[-1])
        blocks = []
        for j in range(_count(state, re.escape(p) + r"blocks\.(\d+)\.")):
            b = f"{p}blocks.{j}."
            dw, fc1 = state[b + "conv_dw.weight"], state[b + "mlp.fc1.weight"]  # (C, 1, k, k), (4C, C[, 1, 1])
            blocks.append(Block(dw.shape[0], dw.shape[-1], fc1.shape[0], fc1.ndim == 4, b + "gamma" in state))
        return Stage(blocks, downsample)

    def forward(self, pixel_values_aux: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values_aux)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        size = maps[0].shape[-2:]
        ups = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return torch.cat(ups, dim=1)


def _count(state: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if found != set(range(len(found))) or not found:
        raise ValueError(f"the aux tower's weights have no consecutive {pattern!r} entries (found {sorted(found)}); "
                         "expected open_clip's ConvNeXt trunk (visual.trunk.stem / visual.trunk.stages)")
    return len(found)
