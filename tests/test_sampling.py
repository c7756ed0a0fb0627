"""Sampling follows transformers' logits processors; streaming text is exact and stop strings hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmforge.runtime.sampling import Sampler, SamplingParams
from vlmforge.runtime.stream import TextAssembler


def _allowed(params: SamplingParams, logits: np.ndarray, draws: int = 400) -> set[int]:
    sampler = Sampler(params)
    return {sampler(logits, np.array([], dtype=np.int64)) for _ in range(draws)}


def _hf_support(logits: np.ndarray, **kw) -> set[int]:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = torch.as_tensor(logits)[None]
    if "temperature" in kw:
        scores = TemperatureLogitsWarper(kw["temperature"])(None, scores)
    if "top_k" in kw:
        scores = TopKLogitsWarper(kw["top_k"])(None, scores)
    if "top_p" in kw:
        scores = TopPLogitsWarper(kw["top_p"])(None, scores)
    return set(torch.nonzero(torch.isfinite(scores[0])).flatten().tolist())


@pytest.mark.parametrize("kw", [dict(top_k=3), dict(top_p=0.5), dict(top_k=5, top_p=0.8, temperature=0.7)])
def test_sampling_support_matches_transformers(kw):
    logits = np.log(np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01], dtype=np.float32))
    ours = _allowed(SamplingParams(do_sample=True, seed=0, **kw), logits)
    assert ours == _hf_support(logits, **kw)


def test_greedy_and_seeded_sampling_are_deterministic():
    logits = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    assert Sampler(SamplingParams())(logits, np.array([])) == int(np.argmax(logits))
    a = [Sampler(SamplingParams(do_sample=True, seed=3))(logits, np.array([])) for _ in range(5)]
    b = [Sampler(SamplingParams(do_sample=True, seed=3))(logits, np.array([])) for _ in range(5)]
    assert a == b


def test_repetition_penalty_matches_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = np.array([2.0, -1.0, 1.9, 0.5], dtype=np.float32)
    seen = np.array([0, 1, 1])
    ref = RepetitionPenaltyLogitsProcessor(1.5)(torch.as_tensor(seen)[None], torch.as_tensor(logits)[None])
    assert Sampler(SamplingParams(repetition_penalty=1.5))(logits, seen) == int(ref.argmax())
    assert Sampler(SamplingParams(repetition_penalty=1.5))(logits, seen) == 2


class _Pieces:
    """A fake detokeniser whose tokens are text pieces."""

    def __init__(self, pieces):
        self.pieces = pieces

    def step(self, i):
        return self.pieces[i]


def test_stop_strings_never_leak_into_the_stream():
    asm = TextAssembler(_Pieces(["Hel", "lo ##", "# wor", "ld"]), stop=["###"])
    shown = [asm.push(i) for i in range(3)]
    assert asm.stopped and "".join(shown) + asm.flush() == "Hello " == asm.text


def test_multibyte_characters_stream_whole(tiny_llava):
    from vlmforge.runtime import Pipeline

    tok = Pipeline.load(tiny_llava[1]).tokenizer
    text = "猫 🐱 café"
    ids = tok.encode(text)[1:]  # drop BOS
    stream = tok.stream()
    pieces = [stream.step(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
