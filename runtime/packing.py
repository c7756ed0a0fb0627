"""Several pictures through one vision call: a native-resolution tower (``kernels.pack_geometry``)
takes the patches of many images concatenated, its block mask keeping each to itself. One call
instead of one per picture — what a GPU engine wants for a prompt with many small images (each
call pays its launch and synchronisation) — bounded by the patches one image may have at the
export's budget, so a packed call never exceeds the TensorRT profile nor costs more attention
than the largest single image would (attention is (Σ patches)² within a call).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Miss(NamedTuple):
    """A picture the vision cache did not have, preprocessed and waiting for its packed call."""

    index: int  # in the request's pictures
    rgb: np.ndarray
    key: str  # its vision-cache key
    pixels: np.ndarray  # (patches, C·t·P·P)
    layout: object  # kernels.TileLayout


def pack_groups(patches: list[int], limit: int) -> list[list[int]]:
    """Indices of consecutive pictures grouped so each group's patches sum to at most ``limit``
    (a picture over it — impossible within the export's bound — goes alone)."""
    groups, total = [], limit + 1
    for i, n in enumerate(patches):
        if total + n > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def split_tokens(embeds: np.ndarray, extras: dict[str, np.ndarray], counts: list[int]) -> list[tuple]:
    """One packed call's connector outputs → per picture (embeds (tokens, hidden), extras). Every
    output has its token axis second to last (image_embeds (tokens, hidden), DeepStack's (layers, tokens, hidden))."""
    bounds = np.cumsum([0, *counts])
    assert bounds[-1] == embeds.shape[0], (bounds[-1], embeds.shape)
    return [(embeds[a:b], {k: v[..., a:b, :] for k, v in extras.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
