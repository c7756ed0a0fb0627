"""CogAgent's high-resolution tower: EVA2-CLIP-L (``Eva2LargeEncoder``) at ``cross_image_size``,
written from the architecture; parameter names are the checkpoint's under ``model.cross_vision.``:
``vit.model.{patch_embed.proj, cls_token, pos_embed}``, ``vit.model.blocks.N.{norm1, attn.{q_proj,
k_proj, v_proj, q_bias, v_bias, inner_attn_ln, proj}, norm2, mlp.{w1, w2, ffn_ln, w3}}`` and the
tower's own ``pos_embed`` (grid², 1024) added to its output. ``vit.model.{norm, head}`` and the last
block are in the checkpoint but unused: the original runs ``blocks[:-1]`` and returns the patch
tokens before the norm.

Blocks: pre-norm, q/v biases (no k bias), 2-D RoPE on the patch tokens (the cls token is not
rotated) with the original's interleaved-pair rotation and its table interpolated from a 16² grid,
a LayerNorm inside attention (``inner_attn_ln``) and inside the SwiGLU (``ffn_ln``); eps 1e-6.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import CROSS_HEAD_WIDTH, CROSS_MLP, CROSS_PATCH, CROSS_ROPE_GRID, CROSS_WIDTH, CogAgentConfig

EPS = 1e-6


def rope_tables(grid: int, head_dim: int = CROSS_HEAD_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (grid², head_dim): VisionRotaryEmbeddingFast(dim=head_dim/2, pt_seq_len=16,
    ft_seq_len=grid) — row frequencies in the first half, column ones in the second, each pair repeated."""
    dim = head_dim // 2
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))  # (dim/2,)
    t = torch.arange(grid) / grid * CROSS_ROPE_GRID
    freqs = torch.repeat_interleave(t[:, None] * inv[None], 2, dim=-1)  # (grid, dim)
    rows = freqs[:, None, :].expand(grid, grid, dim)
    cols = freqs[None, :, :].expand(grid, grid, dim)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def rotate_pairs(x):
    """(…, d): each pair (x1, x2) → (−x2, x1), as the original's ``rotate_half``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cos: torch.Tensor, sin: torch.Tensor):
        super().__init__()
        self.heads = CROSS_WIDTH // CROSS_HEAD_WIDTH
        self.q_proj = nn.Linear(CROSS_WIDTH, CROSS_WIDTH, bias=False)
        self.k_proj = nn.Linear(CROSS_WIDTH, CROSS_WIDTH, bias=False)
        self.v_proj = nn.Linear(CROSS_WIDTH, CROSS_WIDTH, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(CROSS_WIDTH))
        self.v_bias = nn.Parameter(torch.zeros(CROSS_WIDTH))
        self.inner_attn_ln = nn.LayerNorm(CROSS_WIDTH, eps=EPS)
        self.proj = nn.Linear(CROSS_WIDTH, CROSS_WIDTH)
        self.register_buffer("cos", cos, persistent=False)  # (grid², head_dim)
        self.register_buffer("sin", sin, persistent=False)

    def rope(self, x):
        """x (n, heads, 1 + grid², hd): the patch tokens rotated, the cls token as it is."""
        cls, patches = x[:, :, :1], x[:, :, 1:]
        return torch.cat([cls, patches * self.cos + rotate_pairs(patches) * self.sin], dim=2)

    def forward(self, x):
        n, s, _ = x.shape
        q = (self.q_proj(x) + self.q_bias).reshape(n, s, self.heads, -1).transpose(1, 2)
        k = self.k_proj(x).reshape(n, s, self.heads, -1).transpose(1, 2)
        v = (self.v_proj(x) + self.v_bias).reshape(n, s, self.heads, -1).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(self.rope(q), self.rope(k), v,
                                                         scale=1.0 / math.sqrt(CROSS_HEAD_WIDTH))
        return self.proj(self.inner_attn_ln(out.transpose(1, 2).reshape(n, s, CROSS_WIDTH)))


class SwiGLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(CROSS_WIDTH, CROSS_MLP)
        self.w2 = nn.Linear(CROSS_WIDTH, CROSS_MLP)
        self.ffn_ln = nn.LayerNorm(CROSS_MLP, eps=EPS)
        self.w3 = nn.Linear(CROSS_MLP, CROSS_WIDTH)

    def forward(self, x):
        return self.w3(self.ffn_ln(nn.functional.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, cos, sin):
        super().__init__()
        self.norm1 = nn.LayerNorm(CROSS_WIDTH, eps=EPS)
        self.attn = Attention(cos, sin)
        self.norm2 = nn.LayerNorm(CROSS_WIDTH, eps=EPS)
        self.mlp = SwiGLU()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, CROSS_WIDTH, kernel_size=CROSS_PATCH, stride=CROSS_PATCH)


class EVALarge(nn.Module):
    """``vit.model``: (n, 3, S, S) → (n, grid², 1024), the patch tokens after all blocks but the last."""

    def __init__(self, c: CogAgentConfig):
        super().__init__()
        grid = c.cross_grid
        cos, sin = rope_tables(grid)
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, CROSS_WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, CROSS_WIDTH))
        self.blocks = nn.ModuleList(Block(cos, sin) for _ in range(c.cross_layers))
        self.norm = nn.LayerNorm(CROSS_WIDTH, eps=EPS)  # loaded, unused (as upstream)
        self.head = nn.Linear(CROSS_WIDTH, 768)  # loaded, unused

    def forward(self, pixels):
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks[:-1]:
            x = block(x)
        return x[:, 1:]


class Encoder(nn.Module):
    def __init__(self, c: CogAgentConfig):
        super().__init__()
        self.model = EVALarge(c)


class CrossVision(nn.Module):
    """``model.cross_vision``: pixel_values_aux (n, 3, S, S) → cross_features (n, grid², 1024)."""

    def __init__(self, c: CogAgentConfig):
        super().__init__()
        self.vit = Encoder(c)
        self.pos_embed = nn.Parameter(torch.zeros(c.cross_grid ** 2, CROSS_WIDTH))

    def forward(self, pixel_values_aux):
        return self.vit.model(pixel_values_aux) + self.pos_embed
