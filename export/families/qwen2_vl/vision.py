"""Qwen2-VL's vision tower as an export-friendly module: one image per call.

transformers' ``Qwen2VisionTransformerPretrainedModel.forward`` derives the rotary positions and
the attention blocks (``cu_seqlens``) from ``grid_thw`` with Python loops over ``tolist()`` —
data-dependent control flow no graph can hold. Here the host computes the geometry from the grid
(``kernels/native.py``: ``rotary_pos_ids``) and the graph takes it as an input; with one image
per call every patch attends to every other, so no mask is needed. Same weights, same maths.

Qwen2.5-VL's windowed layers attend within windows only. transformers permutes the patches into
window order so flash attention sees contiguous windows; attention restricted by a mask built in
the graph from the host's ``window_ids`` is the same sum over the same keys (no permutation, and
no data-dependent split): softmax ignores the masked keys exactly.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def vision_attention(attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """``VisionAttention`` over one image: x (n, d), cos / sin (n, head_dim), mask (n, n) additive → (n, d)."""
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # (n, heads, hd)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, n, hd)
    scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32)
    out = torch.matmul(weights.to(q.dtype), v).transpose(0, 1).reshape(n, -1)
    return attn.proj(out)


class NativeVision(nn.Module):
    """pixel_values (patches, 3·t·p·p), rotary_pos_ids (patches, 2) → image_features (patches, embed_dim),
    the patches in merge-window order (the connector, the patch merger, folds each window into a token)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values: torch.Tensor, rotary_pos_ids: torch.Tensor) -> torch.Tensor:
        v = self.visual
        hidden = v.patch_embed(pixel_values)
        cos, sin = v.rotary_pos_emb(hidden, rotary_pos_ids)  # (patches, head_dim) each
        for block in v.blocks:
            hidden = hidden + vision_attention(block.attn, block.norm1(hidden), cos, sin)
            hidden = hidden + block.mlp(block.norm2(hidden))
        return hidden


class WindowedVision(NativeVision):
    """Qwen2.5-VL: as NativeVision, with ``window_ids`` (patches,) int64; layers outside
    ``full_layers`` attend only to patches of the same window."""

    def __init__(self, visual: nn.Module, full_layers):
        super().__init__(visual)
        self.full_layers = set(full_layers)

    def forward(self, pixel_values: torch.Tensor, rotary_pos_ids: torch.Tensor, window_ids: torch.Tensor) -> torch.Tensor:
        v = self.visual
        hidden = v.patch_embed(pixel_values)
        cos, sin = v.rotary_pos_emb(hidden, rotary_pos_ids)
        same = window_ids.unsqueeze(0) == window_ids.unsqueeze(1)  # (patches, patches)
        window_mask = torch.where(same, 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        for i, block in enumerate(v.blocks):
            mask = None if i in self.full_layers else window_mask
            hidden = hidden + vision_attention(block.attn, block.norm1(hidden), cos, sin, mask)
            hidden = hidden + block.mlp(block.norm2(hidden))
        return hidden
