"""export/grouped_attention.py: the same outputs as transformers' eager attention (which expands
the KV heads first), including Gemma 2's score soft-capping."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("softcap", [None, 50.0, 2.0])
def test_equals_eager_attention(softcap):
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    from vlmforge.export.grouped_attention import grouped_attention_forward

    torch.manual_seed(0)
    b, h, kv, q, s, d = 2, 6, 2, 5, 9, 8
    module = torch.nn.Module().eval()
    module.num_key_value_groups = h // kv
    query, key, value = torch.randn(b, h, q, d) * 4, torch.randn(b, kv, s, d) * 4, torch.randn(b, kv, s, d)
    mask = torch.where(torch.rand(b, 1, q, s) < 0.3, torch.finfo(torch.float32).min, 0.0)
    want, want_w = eager_attention_forward(module, query, key, value, mask, scaling=d ** -0.5, softcap=softcap)
    got, got_w = grouped_attention_forward(module, query, key, value, mask, scaling=d ** -0.5, softcap=softcap)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_w, want_w, atol=1e-5, rtol=1e-5)
