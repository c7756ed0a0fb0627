"""Next-token choice from logits, in the order transformers applies its processors:
repetition penalty → temperature → top-k → top-p → sample (or argmax when greedy)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np


@dataclass
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        self._check_types()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature}); use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k}); 0 disables it")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (got {self.repetition_penalty})")


    def _check_types(self) -> None:
        """NaN passes every comparison and True is an int: refuse them by name, before any work."""
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
            raise ValueError(f"top_k must be an integer (0 disables it), got {self.top_k!r}")
        self.top_k = int(self.top_k)
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise ValueError(f"do_sample must be True or False, got {self.do_sample!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                                      or self.seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {self.seed!r}")


def check_max_new_tokens(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {value!r}")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, seen: np.ndarray) -> int:
        """logits (vocab,) float32; ``seen`` the ids so far (prompt + generated) for the penalty."""
        p = self.params
        if p.repetition_penalty != 1.0 and len(seen):
            logits = logits.copy()
            ids = np.unique(seen)
            picked = logits[ids]
            logits[ids] = np.where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty)
        if not p.do_sample:
            return int(np.argmax(logits))
        return self._sample(logits.astype(np.float64) / p.temperature)

    def _sample(self, scores: np.ndarray) -> int:
        p = self.params
        if p.top_k and p.top_k < scores.shape[0]:
            kth = np.partition(scores, -p.top_k)[-p.top_k]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            cut = int(np.searchsorted(cumulative, p.top_p, side="left")) + 1
            keep = np.zeros_like(probs, dtype=bool)
            keep[order[:cut]] = True
            probs = np.where(keep, probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(probs.shape[0], p=probs))
