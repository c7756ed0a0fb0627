"""Qwen2-VL's vision tower as an export-friendly module: one image per call.

transformers' ``Qwen2VisionTransformerPretrainedModel.forward`` derives the rotary positions and
the attention blocks (``cu_seqlens``) from ``grid_thw`` with Python loops over ``tolist()`` —
data-dependent control flow no graph can hold. Here the host computes the geometry from the grid
(``kernels/native.py``: ``rotary_pos_ids``) and the graph takes it as an input; with one image
per call, the only mask is the one that keeps a video's temporal patches apart (``segment_ids``,
what ``cu_seqlens`` does there). Same weights, same maths.

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


def group_mask(ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(patches,) group ids → (patches, patches) additive mask: 0 within a group, min elsewhere."""
    same = ids.unsqueeze(0) == ids.unsqueeze(1)
    return torch.where(same, 0.0, torch.finfo(dtype).min).to(dtype)


class NativeVision(nn.Module):
    """pixel_values (patches, 3·t·p·p), rotary_pos_ids (patches, 2), segment_ids (patches,) →
    image_features (patches, embed_dim), the patches in merge-window order (the connector, the patch
    merger, folds each window into a token). A patch attends to the patches of its segment (its
    temporal patch: an image is one segment, a video one per frame group)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values: torch.Tensor, rotary_pos_ids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        return self.run(pixel_values, rotary_pos_ids, segment_ids, None)[0]

    def run(self, pixel_values, rotary_pos_ids, segment_ids, window_ids, full_layers=(), pos_embeds=None, capture=()):
        """→ (last hidden state, [hidden state after each layer in ``capture``]); ``pos_embeds``
        (patches, width) is added to the patch embeddings (Qwen3-VL's resampled position grid)."""
        v = self.visual
        hidden = v.patch_embed(pixel_values)
        if pos_embeds is not None:
            hidden = hidden + pos_embeds
        cos, sin = v.rotary_pos_emb(hidden, rotary_pos_ids)  # (patches, head_dim) each
        full = group_mask(segment_ids, hidden.dtype)
        windowed = full if window_ids is None else group_mask(window_ids, hidden.dtype)
        captured = []
        for i, block in enumerate(v.blocks):
            mask = full if window_ids is None or i in full_layers else windowed
            hidden = hidden + vision_attention(block.attn, block.norm1(hidden), cos, sin, mask)
            hidden = hidden + block.mlp(block.norm2(hidden))
            if i in capture:
                captured.append(hidden)
        return hidden, captured


class WindowedVision(NativeVision):
    """Qwen2.5-VL: as NativeVision, with ``window_ids`` (patches,); layers outside ``full_layers``
    attend only to patches of the same window."""

    def __init__(self, visual: nn.Module, full_layers):
        super().__init__(visual)
        self.full_layers = tuple(full_layers)

    def forward(self, pixel_values: torch.Tensor, rotary_pos_ids: torch.Tensor, segment_ids: torch.Tensor,
                window_ids: torch.Tensor) -> torch.Tensor:
        return self.run(pixel_values, rotary_pos_ids, segment_ids, window_ids, self.full_layers)[0]
