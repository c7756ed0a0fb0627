"""Idefics3 / SmolVLM vision and connector graphs, split where ``Idefics3Model.get_image_features``
hands the tower's output to ``connector``.

Every frame the ``split`` kernel writes is a full tile_size² square, so the tower's patch mask is
all ones: its attention needs no mask, and its position ids — which ``Idefics3VisionEmbeddings``
buckets from fractional patch coordinates — are one constant row, computed here with the same
float32 arithmetic the module runs (it is not always 0 … n−1: the buckets' float boundaries can
shift a patch one position down)."""

from __future__ import annotations

import torch
from torch import nn

from ...onnx_export import GraphExport


def bucket_position_ids(side: int, num_patches_per_side: int) -> torch.Tensor:
    """(side²,) int64: ``Idefics3VisionEmbeddings.forward``'s position ids for a full side × side patch mask."""
    boundaries = torch.arange(1 / num_patches_per_side, 1.0, 1 / num_patches_per_side)
    nb = torch.full((1,), side, dtype=torch.int64)  # patch_attention_mask[:, :, 0].sum(dim=1)
    step = 1.0 / nb
    indices = torch.arange(side, dtype=torch.float32)
    coords = torch.clamp(indices[None, :] * step[:, None], max=(1.0 - 1e-6))
    buckets = torch.bucketize(coords, boundaries, right=True)  # (1, side), the same for rows and columns
    return (buckets[:, :, None] * num_patches_per_side + buckets[:, None, :]).reshape(-1)


class Idefics3VisionFeatures(nn.Module):
    """pixel_values (tiles, 3, t, t) → image_features (tiles, ⌊t/p⌋², width): ``vision_model`` with a
    full patch mask — patch conv (a remainder of t/p dropped, as the tower's "valid" conv and the
    mask's unfold both drop it), the constant position ids' embeddings, the encoder, post_layernorm."""

    def __init__(self, vision_model: nn.Module, tile: int):
        super().__init__()
        emb = vision_model.embeddings
        self.patch_embedding, self.position_embedding = emb.patch_embedding, emb.position_embedding
        self.register_buffer("position_ids", bucket_position_ids(tile // emb.patch_size, emb.num_patches_per_side),
                             persistent=False)
        self.layers = vision_model.encoder.layers
        self.post_layernorm = vision_model.post_layernorm

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (tiles, patches, width)
        hidden = hidden + self.position_embedding(self.position_ids)[None]
        for layer in self.layers:
            hidden = layer(hidden, None)  # a full patch mask: no attention mask
        return self.post_layernorm(hidden)


class PixelShuffleConnector(nn.Module):
    """image_features (tiles, side², width) → image_embeds (tiles, side²/r², hidden): ``Idefics3Connector``'s
    pixel shuffle by ``scale_factor`` r in its own view / permute order, then ``modality_projection``."""

    def __init__(self, connector: nn.Module, side: int, width: int):
        super().__init__()
        r = int(connector.scale_factor)
        if side % r:  # image_spec refuses such checkpoints first
            raise ValueError(f"the {side}×{side} patch grid of a tile cannot be pixel-shuffled by scale_factor {r}; "
                             "max_image_size.longest_edge / patch_size must be a multiple of scale_factor")
        self.projection = connector.modality_projection
        self.side, self.width, self.r = side, width, r

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        s, c, r = self.side, self.width, self.r
        x = image_features.reshape(-1, s, s // r, c * r)  # (tiles, h, w/r, c·r)
        x = x.permute(0, 2, 1, 3).reshape(-1, s // r, s // r, c * r * r)  # (tiles, w/r, h/r, c·r²)
        x = x.permute(0, 2, 1, 3).reshape(-1, (s // r) ** 2, c * r * r)
        return self.projection(x)


def vision_graph(model, tile: int) -> GraphExport:
    module = Idefics3VisionFeatures(model.model.vision_model, tile).eval()
    return GraphExport(name="vision", module=module, example_inputs=(torch.randn(2, 3, tile, tile),),
                       input_names=["pixel_values"], output_names=["image_features"],
                       dims={"pixel_values": {0: "num_tiles"}})


def connector_graph(model, tile: int, features: torch.Tensor) -> GraphExport:
    vc = model.config.vision_config
    module = PixelShuffleConnector(model.model.connector, tile // vc.patch_size, vc.hidden_size).eval()
    return GraphExport(name="connector", module=module, example_inputs=(features,),
                       input_names=["image_features"], output_names=["image_embeds"],
                       dims={"image_features": {0: "num_tiles"}})
