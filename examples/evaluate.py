"""``vlmforge eval OUT --suite shapes``: greedy exact match of an exported pipeline on held-out questions.

Runtime only (NumPy, Pillow, the exported graphs): no torch or transformers. The ``images``
control replaces each picture by a blank one of the same size or by another question's picture;
a model that reads its image then falls to the text-only baseline (the most frequent training
answer for the same question text), which the report prints alongside.
"""

from __future__ import annotations

import time
from functools import lru_cache
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .shapes_data import QUESTION_TYPES, make_sample, prompt_for, split_samples

SUITES = ("shapes",)
IMAGE_MODES = ("original", "blank", "shuffled")
BLANK_GREY = 165  # the middle of the backgrounds' grey range


@dataclass
class EvalItem:
    seed: int
    kind: str  # question type
    image: np.ndarray  # (H, W, 3) uint8
    question: str
    answer: str


@dataclass
class EvalReport:
    suite: str
    images: str  # which IMAGE_MODES entry
    n: int
    accuracy: float  # 0-1 over all n questions
    per_type: dict[str, float]
    text_only: dict[str, float]  # the text-only baseline on the same questions ("all" + per type)
    counts: dict[str, int]  # questions per type
    seconds: float
    mistakes: list[dict] = field(default_factory=list)  # the first few wrong answers

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{self.suite}: {self.n} held-out questions, images: {self.images}, {self.seconds:.1f} s",
                 f"{'type':<10}{'n':>5}{'accuracy':>10}{'text-only':>11}"]
        for kind, acc in self.per_type.items():
            lines.append(f"{kind:<10}{self.counts[kind]:>5}{acc:>10.3f}{self.text_only[kind]:>11.3f}")
        lines.append(f"{'all':<10}{self.n:>5}{self.accuracy:>10.3f}{self.text_only['all']:>11.3f}")
        return "\n".join(lines)


def shapes_items(n: int, images: str = "original") -> list[EvalItem]:
    """The first ``n`` test-split questions (types cycle: n/5 each), with the chosen pictures."""
    if images not in IMAGE_MODES:
        raise ValueError(f"unknown images mode {images!r}; choose one of {', '.join(IMAGE_MODES)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    items = []
    for seed, kind in split_samples("test", n):
        sample = make_sample(seed, first=kind)
        q = sample.questions[0]
        items.append(EvalItem(seed, kind, sample.image, q.text, q.answer))
    if images == "blank":
        for it in items:
            it.image = np.full_like(it.image, BLANK_GREY)
    elif images == "shuffled":  # each question gets the next question's picture (a derangement for n > 1)
        pictures = [it.image for it in items]
        for i, it in enumerate(items):
            it.image = pictures[(i + 1) % len(items)]
    return items


@lru_cache(maxsize=2)
def text_only_answers(num_train: int = 2000) -> dict[str, str]:
    """question text → its most frequent answer over the first training samples' questions."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for seed, _ in split_samples("train", num_train):
        for q in make_sample(seed).questions:
            seen[q.text][q.answer] += 1
    return {text: counts.most_common(1)[0][0] for text, counts in seen.items()}


def evaluate(pipe, suite: str = "shapes", n: int = 500, images: str = "original", max_new_tokens: int = 8) -> EvalReport:
    """Greedy answers of ``pipe`` (a loaded ``Pipeline``) to ``n`` questions of ``suite``."""
    if suite not in SUITES:
        raise ValueError(f"unknown eval suite {suite!r}; available: {', '.join(SUITES)}")
    start = time.perf_counter()
    items = shapes_items(n, images)
    guess = text_only_answers()
    correct, baseline, mistakes = [], [], []
    for it in items:
        answer = pipe.generate(prompt_for(it.question), images=[it.image], max_new_tokens=max_new_tokens,
                               do_sample=False).text.strip()
        correct.append(answer == it.answer)
        baseline.append(guess.get(it.question) == it.answer)
        if answer != it.answer and len(mistakes) < 20:
            mistakes.append({"seed": it.seed, "question": it.question, "expected": it.answer, "answer": answer})
    kinds = [it.kind for it in items]
    return EvalReport(
        suite=suite, images=images, n=len(items), accuracy=float(np.mean(correct)),
        per_type=_by_type(kinds, correct), text_only={"all": float(np.mean(baseline)), **_by_type(kinds, baseline)},
        counts=dict(Counter(kinds)), seconds=time.perf_counter() - start, mistakes=mistakes,
    )


def _by_type(kinds: list[str], values: list[bool]) -> dict[str, float]:
    present = [k for k in QUESTION_TYPES if k in kinds]
    return {k: float(np.mean([v for kk, v in zip(kinds, values) if kk == k])) for k in present}
