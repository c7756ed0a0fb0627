"""Qwen-VL's vision side, written from the architecture (not imported): an OpenCLIP-style ViT at
one square size and the position-aware adapter — one cross-attention layer whose ``n_queries``
learned queries read the patch features, 2-D sin-cos positions added to queries and keys.

Parameter names are the checkpoint's own below ``transformer.visual.``: ``conv1``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.{i}.{ln_1,attn.in_proj,attn.out_proj,
ln_2,mlp.c_fc,mlp.c_proj}``, ``attn_pool.{query,pos_embed,kv_proj,attn.*,ln_q,ln_kv}``, ``ln_post``,
``proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisualConfig

EPS = 1e-6


def resized_positions(table: torch.Tensor, count: int) -> torch.Tensor:
    """(L, C) square position table → (count, C): bicubic (align_corners=False) when the grids
    differ, as the original's ``get_abs_pos``. Done once at load: the graph's size is fixed."""
    src, dst = int(math.sqrt(table.shape[0])), int(math.sqrt(count))
    if src == dst:
        return table
    grid = table.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """(grid², dim) fixed 2-D sin-cos positions (MAE's): half the channels encode the row, half the
    column, each [sin | cos] of position · 1/10000^(2i/(dim/2)). The checkpoint stores this table
    (``attn_pool.pos_embed``); this builds it for checkpoints made here."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) / (half / 2))
    cols, rows = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="xy")

    def encode(pos):
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def attention(q, k, v, heads: int) -> torch.Tensor:
    """q (n, lq, d), k/v (n, lk, d) → (n, lq, d), ``heads`` heads, softmax(q·kᵀ/√hd)·v."""
    n, lq, d = q.shape
    hd = d // heads
    q = q.reshape(n, lq, heads, hd).transpose(1, 2)
    k = k.reshape(n, -1, heads, hd).transpose(1, 2)
    v = v.reshape(n, -1, heads, hd).transpose(1, 2)
    scores = torch.matmul(q / math.sqrt(hd), k.transpose(-1, -2)).softmax(-1)
    return torch.matmul(scores, v).transpose(1, 2).reshape(n, lq, d)


class SelfAttention(nn.Module):
    """The tower's attention: one fused in_proj whose output is laid out per head as
    [q_h | k_h | v_h] (the original views it (…, heads, 3·hd) before splitting)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):  # (n, l, w)
        n, length, w = x.shape
        hd = w // self.heads
        qkv = self.in_proj(x).reshape(n, length, self.heads, 3 * hd)
        q, k, v = (t.reshape(n, length, w) for t in qkv.split(hd, dim=-1))
        return self.out_proj(attention(q, k, v, self.heads))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=EPS)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=EPS)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Tower(nn.Module):
    """The ``transformer`` of the visual block: a list of residual blocks."""

    def __init__(self, v: VisualConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(v.width, v.heads, v.mlp_ratio) for _ in range(v.layers))

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class Resampler(nn.Module):
    """(n, patches, width) → (n, n_queries, output_dim): the learned queries (plus their fixed
    2-D sin-cos positions) cross-attend to the patches (plus the same table resized to the patch grid)."""

    def __init__(self, v: VisualConfig):
        super().__init__()
        d = v.output_dim
        self.heads = d // 128
        self.pos_embed = nn.Parameter(torch.zeros(v.n_queries, d), requires_grad=False)
        self.query = nn.Parameter(torch.zeros(v.n_queries, d))
        self.kv_proj = nn.Linear(v.width, d, bias=False) if v.width != d else nn.Identity()
        self.attn = nn.MultiheadAttention(d, self.heads)  # only for its parameter names and layout
        self.ln_q = nn.LayerNorm(d, eps=EPS)
        self.ln_kv = nn.LayerNorm(d, eps=EPS)
        self.register_buffer("key_pos", torch.zeros(v.grid ** 2, d), persistent=False)

    def finish_loading(self) -> None:
        self.key_pos = resized_positions(self.pos_embed.detach(), self.key_pos.shape[0])

    def forward(self, x):
        x = self.ln_kv(self.kv_proj(x))
        q = (self.ln_q(self.query) + self.pos_embed).expand(x.shape[0], -1, -1)
        wq, wk, wv = self.attn.in_proj_weight.chunk(3)
        bq, bk, bv = self.attn.in_proj_bias.chunk(3)
        out = attention(F.linear(q, wq, bq), F.linear(x + self.key_pos, wk, bk), F.linear(x, wv, bv), self.heads)
        return self.attn.out_proj(out)


class QwenVisual(nn.Module):
    """pixel_values (n, 3, S, S) → image_embeds (n, n_queries, hidden): the whole vision side in
    one graph (the adapter is the connector, but its 256 outputs are all the LLM ever reads)."""

    def __init__(self, v: VisualConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, v.width, kernel_size=v.patch_size, stride=v.patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.zeros(256, v.width))
        self.ln_pre = nn.LayerNorm(v.width, eps=EPS)
        self.transformer = Tower(v)
        self.attn_pool = Resampler(v)
        self.ln_post = nn.LayerNorm(v.output_dim, eps=EPS)
        self.proj = nn.Parameter(torch.zeros(v.output_dim, v.output_dim))
        self.register_buffer("patch_pos", torch.zeros(v.grid ** 2, v.width), persistent=False)

    def finish_loading(self) -> None:
        """After the weights: the position tables resized to this size's grids (constants in the graph)."""
        self.patch_pos = resized_positions(self.positional_embedding.detach(), self.patch_pos.shape[0])
        self.attn_pool.finish_loading()

    def forward(self, pixel_values):
        x = self.conv1(pixel_values).flatten(2).transpose(1, 2)  # (n, grid², width)
        x = self.ln_pre(x + self.patch_pos)
        x = self.attn_pool(self.transformer(x))
        return self.ln_post(x) @ self.proj
