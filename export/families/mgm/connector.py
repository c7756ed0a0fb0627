"""MGM's connector: patch-info mining, then ``mm_projector``.

Every low-resolution token (a query, from the CLIP tower) attends over the high-resolution
features of its own patch: the aux map (ΣC, S, S) cut into the query grid's √N × √N cells of
(S/√N)² positions. q = LN→Linear(query) (``vlm_uni_query_projector``), k, v = LN→Linear(aux)
(``vlm_uni_aux_projector`` / ``vlm_uni_val_projector``); mined = mean over the one query of
softmax(q·kᵀ/√d)·v; the token is query + mined, then the projector (``mlp2x_gelu`` …).

MGM-HD (``image_grid`` g > 1): the views are g² crops (row-major) then, with ``image_global``,
the whole picture; the aux map is cut into the same g×g cells, each cell the keys of its crop,
and the global view's keys are the whole map bilinearly shrunk by g. Tokens come out global
first, then the crops in order."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


def projector_layers(kind: str, mm_hidden: int, hidden: int) -> nn.Module:
    """``mm_projector`` by its config name: linear, mlp{N}x_gelu or identity (the original's names)."""
    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    if kind == "identity":
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind or "")
    if not match:
        raise ValueError(f"mm_projector_type {kind!r} is not supported; MGM uses linear, mlp<N>x_gelu or identity")
    layers = [nn.Linear(mm_hidden, hidden)]
    for _ in range(1, int(match.group(1))):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers)


def norm_linear(width_in: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width_in), nn.Linear(width_in, width_out))


class MGMConnector(nn.Module):
    """(image_features (V, N, C), image_features_aux (1, ΣC, g·S, g·S)) → image_embeds (1, V·N, d):
    one picture's V = g² (+1 global) views of N tokens each."""

    def __init__(self, mm_hidden: int, aux_hidden: int, hidden: int, projector: str, grid: int, has_global: bool):
        super().__init__()
        self.vlm_uni_query_projector = norm_linear(mm_hidden, mm_hidden)
        self.vlm_uni_aux_projector = norm_linear(aux_hidden, mm_hidden)
        self.vlm_uni_val_projector = norm_linear(aux_hidden, mm_hidden)
        self.mm_projector = projector_layers(projector, mm_hidden, hidden)
        self.grid, self.has_global = grid, has_global

    def mine(self, queries: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """queries (n, N, C), aux (n, A, S, S) → mined (n, N, C): each query over its own patch."""
        n, num, _ = queries.shape
        side = int(num ** 0.5)  # the query grid is square (N = side²)
        cell = aux.shape[-1] // side
        a = aux.shape[1]
        # (n, A, side·cell, side·cell) → (n, side², cell², A): row-major patches, positions inside each
        patches = aux.reshape(n, a, side, cell, side, cell).permute(0, 2, 4, 3, 5, 1).reshape(n, side * side, cell * cell, a)
        q = self.vlm_uni_query_projector(queries).unsqueeze(2)  # (n, N, 1, C)
        k = self.vlm_uni_aux_projector(patches)  # (n, N, cell², C)
        v = self.vlm_uni_val_projector(patches)
        scores = torch.nan_to_num(q @ (k.transpose(-1, -2) / k.shape[-1] ** 0.5))  # (n, N, 1, cell²)
        return (scores.softmax(-1) @ v).mean(2)

    def forward(self, image_features: torch.Tensor, image_features_aux: torch.Tensor) -> torch.Tensor:
        g = self.grid
        local = image_features[:-1] if self.has_global else image_features  # (g², N, C)
        aux = image_features_aux
        if g > 1:  # (1, A, g·S, g·S) → (g², A, S, S): cell (row, col) at row·g + col
            a, side = aux.shape[1], aux.shape[-1] // g
            cells = aux.reshape(1, a, g, side, g, side).permute(0, 2, 4, 1, 3, 5).reshape(g * g, a, side, side)
        else:
            cells = aux
        tokens = local + self.mine(local, cells)
        tokens = tokens.reshape(1, -1, tokens.shape[-1])
        if self.has_global:
            whole = image_features[-1:]
            shrunk = F.interpolate(aux, scale_factor=1 / g, mode="bilinear", align_corners=False)
            tokens = torch.cat([whole + self.mine(whole, shrunk), tokens], dim=1)
        return self.mm_projector(tokens)
