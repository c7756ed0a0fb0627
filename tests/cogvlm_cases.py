"""What the CogVLM v1 and CogVLM2 tests share: the original's inputs built from our prompt, and
the llm graph run on its own (tests/test_cogvlm.py, tests/test_cogvlm2.py)."""

from __future__ import annotations

import numpy as np
import torch

QUESTION = "What is in the picture?"


def oracle_prompt(pipe, messages, num_images: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our prompt ids as the original's ``build_conversation_input_ids`` lays them out: (input_ids,
    token_type_ids), each (1, seq) — the image's slots hold pad ids and token type 1."""
    n = pipe.manifest.image.preprocess.tokens_per_tile
    prepared = pipe.prompter.prepare_prompt(None, messages, num_images, [n] * num_images)
    ids, types = prepared.input_ids.copy(), np.zeros(len(prepared.input_ids), dtype=np.int64)
    for start, count in prepared.image_slots:
        ids[start : start + count], types[start : start + count] = pad_id, 1
    return torch.as_tensor(ids)[None], torch.as_tensor(types)[None]


def llm_session(pipe):
    import onnxruntime as ort

    return ort.InferenceSession(str(pipe.root / pipe.manifest.graphs["llm"].path), providers=["CPUExecutionProvider"])


def run_llm(session, llm, embeds: np.ndarray, expert_mask: np.ndarray, positions: np.ndarray | None = None):
    """One prefill of ``embeds`` (1, s, d) on an empty cache → (logits (1, 1, vocab), presents)."""
    s = embeds.shape[1]
    feeds = {"inputs_embeds": embeds.astype(np.float32), "attention_mask": np.ones((1, s), np.int64),
             "position_ids": np.arange(s, dtype=np.int64)[None] if positions is None else positions,
             "expert_mask": expert_mask.astype(np.float32)}
    for i in range(llm.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32)
    logits, *presents = session.run(None, feeds)
    return logits, presents
