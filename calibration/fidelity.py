"""The fidelity report: what a precision cost, per stage, against the float reference.

- vision / connector: cosine similarity per token (mean and worst) and max |error|. The
  connector is measured twice: ``isolated`` (fed the reference's vision features: its own
  error) and ``end_to_end`` (fed the quantised vision's features: what the LLM receives).
- llm: KL(reference ‖ quantised) of the next-token distribution after prefill, isolated (the
  reference's prompt embeddings) and end to end (the quantised model's own image embeddings).
- greedy token agreement: the reference decodes greedily; the quantised model is fed the same
  tokens (teacher forcing) and each position counts when its argmax is the reference's token.
  Before the first miss its free-running output is identical, so ``sequence_match`` (no miss in
  a sample) and the mean first-miss position come from the same pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


class Accumulator:
    """Per-token cosine and max |error| of (…, d) arrays, accumulated over samples."""

    def __init__(self):
        self.cosines: list[np.ndarray] = []
        self.max_abs_error = 0.0
        self.max_abs_reference = 0.0

    def add(self, reference: np.ndarray, got: np.ndarray) -> None:
        r = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
        g = got.reshape(-1, got.shape[-1]).astype(np.float64)
        denom = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
        self.cosines.append(np.sum(r * g, axis=1) / np.maximum(denom, 1e-30))
        self.max_abs_error = max(self.max_abs_error, float(np.abs(r - g).max()))
        self.max_abs_reference = max(self.max_abs_reference, float(np.abs(r).max()))

    def result(self) -> "StageFidelity | None":
        if not self.cosines:
            return None
        c = np.concatenate(self.cosines)
        return StageFidelity(float(c.mean()), float(c.min()), self.max_abs_error, self.max_abs_reference)


@dataclass
class StageFidelity:
    cosine_mean: float
    cosine_min: float
    max_abs_error: float
    max_abs_reference: float  # for scale: the largest |value| the reference produced


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """KL(p_ref ‖ p) in nats over the vocabulary."""
    lp, lq = log_softmax(reference_logits), log_softmax(logits)
    return float(np.sum(np.exp(lp) * (lp - lq)))


@dataclass
class TokenAgreement:
    matches: int = 0
    positions: int = 0
    identical_samples: int = 0
    first_miss: list[int] = field(default_factory=list)  # per sample; = positions when none

    def add(self, reference_tokens: list[int], predicted: list[int]) -> None:
        hits = [int(a == b) for a, b in zip(reference_tokens, predicted)]
        self.matches += sum(hits)
        self.positions += len(hits)
        self.identical_samples += all(hits)
        self.first_miss.append(hits.index(0) if 0 in hits else len(hits))


@dataclass
class FidelityReport:
    model: str
    reference: str
    precision: dict[str, str]
    num_samples: int
    samples: str  # where images and prompts came from
    new_tokens: int
    vision: StageFidelity | None = None
    connector_isolated: StageFidelity | None = None
    connector_end_to_end: StageFidelity | None = None
    kl_prefill_isolated: dict = field(default_factory=dict)  # mean / max
    kl_prefill_end_to_end: dict = field(default_factory=dict)
    prefill_top1_agreement: float = 0.0
    token_agreement: float = 0.0  # over num_samples × new_tokens positions
    sequence_match: float = 0.0  # fraction of samples whose greedy output is identical
    mean_first_miss: float = 0.0
    shapes_suite: dict | None = None  # accuracy of both models on the bundled model's test questions
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        lines = [f"fidelity of {self.model} ({', '.join(f'{g}={p}' for g, p in self.precision.items())}) "
                 f"against {self.reference}: {self.num_samples} image+prompt pairs ({self.samples})"]
        for label, s in (("vision", self.vision), ("connector (isolated)", self.connector_isolated),
                         ("connector (end to end)", self.connector_end_to_end)):
            if s is not None:
                lines.append(f"  {label:24s} cosine mean {s.cosine_mean:.5f}  min {s.cosine_min:.5f}  "
                             f"max |err| {s.max_abs_error:.3g} (|ref| max {s.max_abs_reference:.3g})")
        for label, kl in (("llm KL (isolated)", self.kl_prefill_isolated), ("llm KL (end to end)", self.kl_prefill_end_to_end)):
            lines.append(f"  {label:24s} mean {kl.get('mean', float('nan')):.3g}  max {kl.get('max', float('nan')):.3g} nats")
        lines.append(f"  {'greedy agreement':24s} {100 * self.token_agreement:.1f}% of {self.num_samples}×{self.new_tokens} tokens; "
                     f"prefill top-1 {100 * self.prefill_top1_agreement:.1f}%; identical outputs {100 * self.sequence_match:.1f}%; "
                     f"first miss at {self.mean_first_miss:.1f} on average")
        if self.shapes_suite:
            s = self.shapes_suite
            lines.append(f"  {'shapes suite':24s} {100 * s['model']:.1f}% (reference {100 * s['reference']:.1f}%) on {s['n']} questions")
        return "\n".join(lines)
