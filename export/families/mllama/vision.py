"""Mllama's vision graph (the tiled encoder) and connector graph (the multi-modal projector).

vision:    pixel_values (tiles, 3, t, t) — one picture's own tiles, as the kernel writes them —,
           aspect_ratio_ids (1, 1), aspect_ratio_mask (1, 1, max_tiles) int64
           → image_features (max_tiles, P, vision_output_dim), P = patches + 1 (the class token)
connector: image_features → image_embeds (max_tiles, P, text hidden)

The processor packs every picture to ``max_tiles`` tiles with zeros after normalising; the graph
pads the same way, so the padded tiles' features (which the encoder's mask lets real tokens read,
as transformers does) are transformers' own.
"""

from __future__ import annotations

import torch
from torch import nn

from ....kernels.canvas import supported_arrangements
from ...onnx_export import GraphExport


class MllamaVision(nn.Module):
    def __init__(self, vision_model: nn.Module, max_tiles: int):
        super().__init__()
        self.vision_model, self.max_tiles = vision_model, max_tiles

    def forward(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        n, c, h, w = pixel_values.shape
        padding = torch.zeros(self.max_tiles - n, c, h, w, dtype=pixel_values.dtype)
        pixels = torch.cat([pixel_values, padding])[None, None]  # (1, 1, max_tiles, 3, t, t)
        out = self.vision_model(pixel_values=pixels, aspect_ratio_ids=aspect_ratio_ids,
                                aspect_ratio_mask=aspect_ratio_mask).last_hidden_state
        return out[0, 0]  # (max_tiles, P, vision_output_dim)


class MllamaConnector(nn.Module):
    def __init__(self, projector: nn.Module):
        super().__init__()
        self.multi_modal_projector = projector

    def forward(self, image_features):
        return self.multi_modal_projector(image_features)


def vision_graph(model, max_tiles: int, tile: int) -> GraphExport:
    tiles = min(2, max_tiles)  # torch.export specialises a size of 1
    mask = torch.zeros(1, 1, max_tiles, dtype=torch.int64)
    mask[..., :tiles] = 1
    # the arrangement (1, tiles): id = its index among the supported ones + 1
    ids = torch.tensor([[supported_arrangements(max_tiles).index((1, tiles)) + 1]], dtype=torch.int64)
    return GraphExport(
        name="vision",
        module=MllamaVision(model.model.vision_model, max_tiles).eval(),
        example_inputs=(torch.randn(tiles, 3, tile, tile), ids, mask),
        input_names=["pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"],
        output_names=["image_features"],
        dims={"pixel_values": {0: "num_tiles"}},
    )


def connector_graph(model, max_tiles: int, tokens_per_tile: int) -> GraphExport:
    width = model.config.vision_config.vision_output_dim
    return GraphExport(
        name="connector",
        module=MllamaConnector(model.model.multi_modal_projector).eval(),
        example_inputs=(torch.randn(max_tiles, tokens_per_tile, width),),
        input_names=["image_features"],
        output_names=["image_embeds"],
    )
