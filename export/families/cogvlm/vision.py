"""CogVLM's EVA2-CLIP tower and GLU adapter, written from the architecture; parameter names are
the checkpoint's under ``model.vision.``:

- ``patch_embedding.{proj, cls_embedding, position_embedding}``: conv patches, a cls token first,
  learned positions added to all 1 + grid² tokens;
- ``transformer.layers.N.{attention.query_key_value, attention.dense, input_layernorm, mlp.fc1,
  mlp.fc2, post_attention_layernorm}``: *post*-norm blocks, x + LN(attn(x)) then x + LN(mlp(x));
- ``conv`` (CogVLM2 only): 2×2 stride-2 convolution over the patch grid, after the cls token is dropped;
- ``linear_proj.{linear_proj, norm1, gate_proj, dense_h_to_4h, dense_4h_to_h}``: the GLU adapter
  into the LLM width; ``boi`` / ``eoi`` (1, 1, d): the begin/end-of-image embeddings around it.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CogVLMConfig, VisionConfig


class PatchEmbedding(nn.Module):
    def __init__(self, v: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(v.in_channels, v.hidden_size, kernel_size=v.patch_size, stride=v.patch_size)
        self.cls_embedding = nn.Parameter(torch.zeros(1, v.hidden_size))
        self.position_embedding = nn.Embedding(v.num_positions, v.hidden_size)

    def forward(self, pixels):
        """(n, 3, S, S) → (n, 1 + grid², w)."""
        x = self.proj(pixels).flatten(2).transpose(1, 2)
        cls = self.cls_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight[None]


class Attention(nn.Module):
    def __init__(self, v: VisionConfig):
        super().__init__()
        self.heads = v.num_heads
        self.query_key_value = nn.Linear(v.hidden_size, 3 * v.hidden_size)
        self.dense = nn.Linear(v.hidden_size, v.hidden_size)

    def forward(self, x):
        n, s, w = x.shape
        qkv = self.query_key_value(x).reshape(n, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (n, heads, s, hd)
        return self.dense(out.transpose(1, 2).reshape(n, s, w))


class MLP(nn.Module):
    def __init__(self, v: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(v.hidden_size, v.intermediate_size)
        self.fc2 = nn.Linear(v.intermediate_size, v.hidden_size)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, v: VisionConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)
        self.attention = Attention(v)
        self.mlp = MLP(v)
        self.post_attention_layernorm = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)

    def forward(self, x):
        x = x + self.input_layernorm(self.attention(x))  # post-norm: the norm is on the branch's output
        return x + self.post_attention_layernorm(self.mlp(x))


class Transformer(nn.Module):
    def __init__(self, v: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(Layer(v) for _ in range(v.num_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class GLU(nn.Module):
    """(…, w) → (…, d): linear_proj, GELU(LayerNorm), then silu(gate) · h_to_4h → 4h_to_h."""

    def __init__(self, c: CogVLMConfig):
        super().__init__()
        d = c.hidden_size
        self.linear_proj = nn.Linear(c.vision.hidden_size, d, bias=False)
        self.norm1 = nn.LayerNorm(d)
        self.dense_h_to_4h = nn.Linear(d, c.intermediate_size, bias=False)
        self.gate_proj = nn.Linear(d, c.intermediate_size, bias=False)
        self.dense_4h_to_h = nn.Linear(c.intermediate_size, d, bias=False)

    def forward(self, x):
        x = nn.functional.gelu(self.norm1(self.linear_proj(x)))
        return self.dense_4h_to_h(nn.functional.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))


class CogVision(nn.Module):
    """The checkpoint's ``model.vision`` module, split into the two graphs below. ``pos_embed``:
    CogAgent's low-resolution tower adds learned positions (grid², w) to the patches before the GLU."""

    def __init__(self, c: CogVLMConfig, pos_embed: bool = False):
        super().__init__()
        self.c = c
        v = c.vision
        self.patch_embedding = PatchEmbedding(v)
        self.transformer = Transformer(v)
        self.linear_proj = GLU(c)
        if c.version == 2:
            self.conv = nn.Conv2d(v.hidden_size, v.hidden_size, kernel_size=2, stride=2)
        self.boi = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.eoi = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(v.grid ** 2, v.hidden_size)) if pos_embed else None


class Tower(nn.Module):
    """pixel_values (n, 3, S, S) → image_features (n, 1 + grid², w): patches, positions, blocks."""

    def __init__(self, vision: CogVision):
        super().__init__()
        self.vision = vision

    def forward(self, pixel_values):
        return self.vision.transformer(self.vision.patch_embedding(pixel_values))


class Adapter(nn.Module):
    """image_features (n, 1 + grid², w) → image_embeds (n, image_tokens, d): cls dropped, v2's
    convolution over the grid, the GLU, then boi + tokens + eoi."""

    def __init__(self, vision: CogVision):
        super().__init__()
        self.vision = vision

    def forward(self, image_features):
        v = self.vision
        x = image_features[:, 1:]
        if v.pos_embed is not None:
            x = x + v.pos_embed
        if v.c.version == 2:
            n, _, w = x.shape
            grid = v.c.vision.grid
            x = v.conv(x.reshape(n, grid, grid, w).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        x = v.linear_proj(x)
        n = x.shape[0]
        return torch.cat([v.boi.expand(n, 1, -1), x, v.eoi.expand(n, 1, -1)], dim=1)
