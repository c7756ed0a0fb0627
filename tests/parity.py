"""Shared parity runners: a vlmforge export against the transformers model it came from."""

from __future__ import annotations

import numpy as np
import torch


def hf_generate(model, input_ids: np.ndarray, pixel_values: np.ndarray | None, max_new_tokens: int) -> list[int]:
    """Greedy transformers generate; returns the new token ids."""
    ids = torch.as_tensor(input_ids)[None]
    kwargs = {"pixel_values": torch.as_tensor(pixel_values)} if pixel_values is not None else {}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **kwargs,
        )
    return out[0, ids.shape[1] :].tolist()


def assert_same_tokens(ours: list[int], theirs: list[int], min_tokens: int, eos: set[int]):
    assert ours == theirs, f"token mismatch\n ours:   {ours}\n theirs: {theirs}"
    assert len(ours) >= min_tokens or (ours and ours[-1] in eos), f"only {len(ours)} tokens compared"


def hf_generate_ids(model, max_new_tokens: int, **inputs) -> list[int]:
    """Greedy transformers generate from prepared torch inputs; returns the new token ids only.

    Decoder-only models return prompt + new ids, encoder-decoder ones start + new ids."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    if getattr(model.config, "text_config", model.config).is_encoder_decoder:
        return out[0, 1:].tolist()  # drop the decoder start token
    return out[0, inputs["input_ids"].shape[1] :].tolist()
