"""VILA's ``mm_projector``: the ``mlp_downsample`` family of projectors (``MultimodalProjector``,
weights ``layers.<i>.*`` as the original's ``nn.Sequential`` numbers them; index 0 is the token
merge, which has none).

mlp_downsample / mlp_downsample_2x2_fix (VILA1.5): each 2×2 block of the tower's token grid → one
token of 4·C channels (odd sides zero-padded first), LayerNorm → Linear → GELU → Linear.
mlp_downsample_3x3_fix (NVILA): 3×3 blocks → 9·C, LayerNorm → Linear(9C→3C) → GELU → LayerNorm →
Linear(3C→d) → GELU → Linear(d→d)."""

from __future__ import annotations

import math

import torch
from torch import nn

# mm_projector_type → (merge side k, layer widths in units: "in" = k²·C, "mid" = 3·C, "d" = LLM width)
MERGES = {"mlp_downsample": 2, "mlp_downsample_2x2_fix": 2, "mlp_downsample_3x3_fix": 3}


def merge_square(x: torch.Tensor, side: int, k: int) -> torch.Tensor:
    """(n, side², c) → (n, ⌈side/k⌉², k²·c): each k×k block of the grid becomes one token.

    The grid is padded with zero rows / columns to a multiple of k, then folded in the original's
    order: the second grid axis is grouped first (its k neighbours' channels side by side), then
    the first; tokens come out with the second axis (after folding) running slowest."""
    n, _, c = x.shape
    x = x.reshape(n, side, side, c)  # (n, a, b, c): a the first grid axis, b the second
    pad = (k - side % k) % k
    if pad:
        x = torch.cat([x, x.new_zeros(n, pad, side, c)], dim=1)
        x = torch.cat([x, x.new_zeros(n, side + pad, pad, c)], dim=2)
    s = side + pad
    x = x.reshape(n, s, s // k, k * c).permute(0, 2, 1, 3)  # (n, b/k, a, k·c)
    x = x.reshape(n, s // k, s // k, k * k * c).permute(0, 2, 1, 3)  # (n, a/k, b/k, k²·c)
    return x.reshape(n, (s // k) ** 2, k * k * c)


def build_layers(kind: str, mm_hidden: int, hidden: int) -> nn.Sequential:
    """The projector's Sequential with the original's indices (0: the merge, no weights)."""
    if kind not in MERGES:
        raise ValueError(f"mm_projector_type {kind!r} is not supported; vlmforge exports VILA's "
                         f"{', '.join(sorted(MERGES))} projectors")
    if MERGES[kind] == 2:
        return nn.Sequential(nn.Identity(), nn.LayerNorm(4 * mm_hidden), nn.Linear(4 * mm_hidden, hidden), nn.GELU(),
                             nn.Linear(hidden, hidden))
    return nn.Sequential(nn.Identity(), nn.LayerNorm(9 * mm_hidden), nn.Linear(9 * mm_hidden, 3 * mm_hidden), nn.GELU(),
                         nn.LayerNorm(3 * mm_hidden), nn.Linear(3 * mm_hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, hidden))


class VilaProjector(nn.Module):
    """image_features (n, side², C) → image_embeds (n, ⌈side/k⌉² + e, d).

    After the merged tokens come the embeddings of the image encoder's end tokens (e rows: what
    ``BasicImageEncoder`` appends after every image, the LLM's embedding of ``tokenizer("\\n")``),
    a constant of the graph, so every image's slots are its tokens followed by them."""

    def __init__(self, kind: str, mm_hidden: int, hidden: int, side: int, end_embeds: torch.Tensor):
        super().__init__()
        self.layers = build_layers(kind, mm_hidden, hidden)
        self.k, self.side = MERGES[kind], side
        self.register_buffer("end_embeds", end_embeds.detach().float().clone(), persistent=False)  # (e, d)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        x = merge_square(image_features, self.side, self.k)
        for layer in list(self.layers)[1:]:
            x = layer(x)
        end = self.end_embeds.expand(x.shape[0], -1, -1)
        return torch.cat([x, end], dim=1)

    def num_tokens(self) -> int:
        return math.ceil(self.side / self.k) ** 2 + self.end_embeds.shape[0]
