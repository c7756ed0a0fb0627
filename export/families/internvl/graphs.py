"""InternVL's vision and connector graphs, split where ``InternVLModel.get_image_features`` reads the
tower: vision = InternViT up to ``vision_feature_layer`` with the CLS position dropped; connector =
the pixel shuffle (``downsample_ratio``) and ``multi_modal_projector``."""

from __future__ import annotations

import torch
from torch import nn

from ...onnx_export import GraphExport


class InternViTFeatures(nn.Module):
    """pixel_values (tiles, 3, t, t) → image_features (tiles, (t/p)², width).

    ``get_image_features`` takes ``last_hidden_state`` (after the tower's final ``layernorm``, an
    Identity when ``use_mean_pooling``) for layer -1 only; any other layer is ``hidden_states[layer]``
    — the embeddings' output at 0, layer i's output at i, no final norm — so the layers after it are
    not run. The CLS position is dropped ("default" strategy)."""

    def __init__(self, vision_tower: nn.Module, feature_layer: int):
        super().__init__()
        layers = list(vision_tower.encoder.layer)
        num_states = len(layers) + 1  # hidden_states[0] is the embedding output
        if not -num_states <= feature_layer < num_states:
            raise ValueError(f"vision_feature_layer {feature_layer} is outside the tower's {num_states} hidden states "
                             f"(-{num_states} … {num_states - 1})")
        self.embeddings = vision_tower.embeddings
        self.layers = nn.ModuleList(layers[: feature_layer % num_states])
        self.layernorm = vision_tower.layernorm if feature_layer == -1 else nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(pixel_values)  # (tiles, 1 + patches, width), CLS first
        for layer in self.layers:
            hidden = layer(hidden)
        return self.layernorm(hidden)[:, 1:]


class PixelShuffleProjector(nn.Module):
    """image_features (tiles, side², width) → image_embeds (tiles, (side·r)², hidden), r = downsample_ratio.

    The features are laid on their (side, side) grid and pixel-shuffled exactly as
    ``InternVLModel.pixel_shuffle`` does (each r⁻¹ × r⁻¹ block of patches becomes one token of
    width / r² channels, in its view / permute order), then ``multi_modal_projector`` (LayerNorm →
    Linear → act → Linear) maps them to the LLM's width."""

    def __init__(self, projector: nn.Module, side: int, width: int, ratio: float):
        super().__init__()
        if side * ratio != int(side * ratio):
            raise ValueError(f"the {side}×{side} patch grid cannot be pixel-shuffled by downsample_ratio {ratio}; "
                             "InternVL needs tile_size / patch_size divisible by 1 / downsample_ratio")
        self.projector = projector
        self.side, self.width, self.ratio = side, width, ratio

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        s, c, r = self.side, self.width, self.ratio
        x = image_features.reshape(-1, s, s, c)  # (tiles, s, s, c)
        x = x.reshape(-1, s, int(s * r), int(c / r)).permute(0, 2, 1, 3)  # (tiles, s·r, s, c/r)
        x = x.reshape(-1, int(s * r), int(s * r), int(c / r**2)).permute(0, 2, 1, 3)  # (tiles, s·r, s·r, c/r²)
        return self.projector(x.reshape(-1, int(s * r) ** 2, int(c / r**2)))


def vision_graph(model, config, tile: int) -> GraphExport:
    module = InternViTFeatures(model.model.vision_tower, int(config.vision_feature_layer)).eval()
    return GraphExport(
        name="vision",
        module=module,
        example_inputs=(torch.randn(2, 3, tile, tile),),
        input_names=["pixel_values"],
        output_names=["image_features"],
        dims={"pixel_values": {0: "num_tiles"}},
    )


def connector_graph(model, config, tile: int, vision_out: torch.Tensor) -> GraphExport:
    vc = config.vision_config
    side = tile // square_size(vc.patch_size, "patch_size")
    ratio = float(config.downsample_ratio)
    module = PixelShuffleProjector(model.model.multi_modal_projector, side, vc.hidden_size, ratio)
    return GraphExport(
        name="connector",
        module=module.eval(),
        example_inputs=(vision_out,),
        input_names=["image_features"],
        output_names=["image_embeds"],
        dims={"image_features": {0: "num_tiles"}},
    )


def square_size(value, name: str) -> int:
    """InternVL configs hold sizes as [h, w] (or an int); the tiles here are square."""
    h, w = (value, value) if isinstance(value, int) else tuple(value)
    if h != w:
        raise ValueError(f"vision_config.{name} {list(value)} is not square; vlmforge exports square InternVL tiles")
    return int(h)
