"""The "shapes" task: procedural scenes of coloured shapes with short questions and answers.

Every sample is a pure function of its seed (``numpy.random.default_rng(seed)`` and Pillow's
non-antialiased drawing), so the splits below are fixed: the same seed gives the same picture,
the same questions and the same answers on every machine.

A scene is 1-4 shapes on a textured grey background; within a scene every shape has its own kind
and its own colour, no two shapes touch, and the largest shape is clearly the largest (at least
1.6× the area of any other). Pictures come in seven aspect ratios, so LLaVA-NeXT's AnyRes
tiling picks different grids (1×2, 2×1, 2×2 with 48 px tiles).

Questions: the colour of a named shape, which shape has a colour, how many shapes, the largest
shape, and left/right/above/below as "What color is the leftmost / rightmost / topmost /
bottommost shape?" — asked only where one shape's box lies beyond every other box on that side by
at least EXTREME_MARGIN of the picture, so no answer is a judgement call. (Until the model could
answer them, the spatial questions were pairwise yes/no — "Is the cross left of the star?" — and
every measured attempt at those stayed at chance: the default model's MODEL_CARD.md.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes_scene import COLORS, SHAPES, Shape, draw_scene, sample_scene

__all__ = ["BANDS", "COLORS", "DESCRIBE", "EXTREMES", "QUESTION_TYPES", "SHAPES", "SPLITS", "Question", "Sample", "all_texts", "describe",
           "extremes", "locate", "make_sample", "other_sides", "prompt_for", "spatial_question",
           "split_samples"]

QUESTION_TYPES = ("color", "shape", "count", "relation", "largest")
# disjoint seed ranges: a sample's split is fixed by its seed alone
SPLITS = {"train": 0, "validation": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000
DESCRIBE = "Describe the picture."


@dataclass(frozen=True)
class Question:
    kind: str  # one of QUESTION_TYPES
    text: str
    answer: str  # one word: a colour, a shape or a digit


@dataclass
class Sample:
    seed: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    shapes: tuple[Shape, ...]
    questions: list[Question]  # up to 8, every type the scene can answer, in a seeded order


def prompt_for(question: str) -> str:
    """The single-turn LLaVA prompt (what the chat template renders for one user turn)."""
    return f"USER: <image>\n{question} ASSISTANT:"


def make_sample(seed: int, first: str | None = None) -> Sample:
    """The scene, picture and questions for ``seed``; ``first`` puts a question of that type first.

    Scenes for relation / largest questions have at least two shapes, and for relation questions
    one beyond all the others on some side; otherwise 1-4 shapes uniformly."""
    if first is not None and first not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {first!r}; choose one of {', '.join(QUESTION_TYPES)}")
    rng = np.random.default_rng(seed)
    min_shapes = 2 if first in ("relation", "largest") else 1
    shapes, (h, w) = sample_scene(rng, min_shapes)
    while first == "relation" and not extremes(shapes, (h, w)):  # rare: 3-4 shapes with none beyond all the others
        shapes, (h, w) = sample_scene(rng, min_shapes)
    image = draw_scene(rng, shapes, h, w)
    questions = _questions(shapes, (h, w), rng, first)
    order = [int(i) for i in rng.permutation(len(questions))]
    questions = [questions[i] for i in order]
    if first is not None:
        questions.sort(key=lambda q: q.kind != first)  # stable: the rest keep their seeded order
    return Sample(seed, image, tuple(shapes), questions)


def _questions(shapes: list[Shape], hw: tuple[int, int], rng: np.random.Generator, first: str | None) -> list[Question]:
    """One binding question per shape (its colour, or which shape has its colour: never both, so no
    answer can be copied from another turn), the count, and with two shapes or more the largest
    and, where ``extremes`` finds one, the colour of the shape beyond all others on a seeded side."""
    kinds = ["color" if rng.integers(2) else "shape" for _ in shapes]
    if first in ("color", "shape"):
        kinds[int(rng.integers(len(shapes)))] = first
    out = [Question("color", f"What color is the {s.kind}?", s.color) if k == "color"
           else Question("shape", f"Which shape is {s.color}?", s.kind) for s, k in zip(shapes, kinds)]
    out.append(Question("count", "How many shapes are there?", str(len(shapes))))
    if len(shapes) >= 2:
        largest = max(shapes, key=lambda s: s.area)
        out.append(Question("largest", "Which shape is the largest?", largest.kind))
        beyond = extremes(shapes, hw)
        if beyond:
            word = list(beyond)[int(rng.integers(len(beyond)))]
            out.append(spatial_question(word, beyond[word]))
    return out


def split_samples(split: str, n: int, start: int = 0) -> list[tuple[int, str]]:
    """(seed, question type) for ``n`` samples of ``split``: types cycle so each gets n/5 questions."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if start + n > SPLIT_SIZE:
        raise ValueError(f"split {split!r} holds {SPLIT_SIZE} samples; asked for {start}..{start + n}")
    base = SPLITS[split]
    return [(base + i, QUESTION_TYPES[i % len(QUESTION_TYPES)]) for i in range(start, start + n)]


EXTREMES = ("leftmost", "rightmost", "topmost", "bottommost")
EXTREME_MARGIN = 0.05  # the gap an extreme shape must keep to every other, as a fraction of the picture's width / height


def spatial_question(word: str, shape: Shape) -> Question:
    """"What color is the <word> shape?" about ``shape``, the scene's EXTREMES ``word`` one."""
    return Question("relation", f"What color is the {word} shape?", shape.color)


def extremes(shapes, hw: tuple[int, int]) -> dict[str, Shape]:
    """{word: shape} for each side of EXTREMES where one shape's box lies wholly beyond every other
    shape's box (x1 + margin < every other x0 for "leftmost"), in EXTREMES order; {} for a single shape."""
    if len(shapes) < 2:
        return {}
    mx, my = EXTREME_MARGIN * hw[1], EXTREME_MARGIN * hw[0]
    tests = (lambda a, b: a.x1 + mx < b.x0, lambda a, b: a.x0 > b.x1 + mx,
             lambda a, b: a.y1 + my < b.y0, lambda a, b: a.y0 > b.y1 + my)
    out = {}
    for word, beyond in zip(EXTREMES, tests):
        for a in shapes:
            if all(beyond(a, b) for b in shapes if b is not a):
                out[word] = a
    return out


def describe(sample: Sample, kind_first: bool = False) -> Question:
    """The caption turn: every shape as "colour kind", left to right (a training-only target); with
    ``kind_first`` as "the kind is colour" — each colour then read off its named shape, as "What color
    is the star?" asks (the plain form reads each kind off its named colour, as "Which shape is red?")."""
    shapes = sorted(sample.shapes, key=lambda s: s.x0 + s.x1)
    parts = [f"the {s.kind} is {s.color}" if kind_first else f"{s.color} {s.kind}" for s in shapes]
    return Question("describe", DESCRIBE, ", ".join(parts))


def other_sides(sample: Sample, asked: list[Question]) -> list[Question]:
    """Training-only turns: "What color is the <side> shape?" for every side ``extremes`` finds that
    ``asked`` does not already ask, in a seeded order (a stream of its own: the sample stays as it is)."""
    beyond = extremes(sample.shapes, sample.image.shape[:2])
    out = [q for q in (spatial_question(w, s) for w, s in beyond.items()) if q not in asked]
    order = np.random.default_rng([sample.seed, 11]).permutation(len(out))
    return [out[int(i)] for i in order]


BANDS = 4  # locate(): the picture cut into this many equal columns / rows


def locate(sample: Sample, n: int) -> list[Question]:
    """Training-only grounding turns: "Which column/row is the <kind> in?" → the band (1..BANDS) of
    the picture holding the shape's centre, for ``n`` (shape, axis) pairs drawn from the seed. They
    teach the language model to read where a shape is — what left/right/above/below compare."""
    if n <= 0:
        return []
    h, w = sample.image.shape[:2]
    rng = np.random.default_rng([sample.seed, 7])  # a stream of its own: the sample's questions stay as they are
    pairs = [(s, axis) for s in sample.shapes for axis in ("column", "row")]
    out = []
    for i in rng.permutation(len(pairs))[:n]:
        s, axis = pairs[int(i)]
        centre, size = ((s.x0 + s.x1) / 2, w) if axis == "column" else ((s.y0 + s.y1) / 2, h)
        band = min(int(centre * BANDS / size), BANDS - 1) + 1
        out.append(Question("locate", f"Which {axis} is the {s.kind} in?", str(band)))
    return out


def all_texts(grounding: bool = False, kind_first: bool = False) -> list[str]:
    """Every question and answer the task can produce, each once (the tokenizer's training text);
    ``grounding`` adds locate()'s questions, ``kind_first`` the "the star is orange" captions."""
    texts = ["How many shapes are there?", "Which shape is the largest?", DESCRIBE]
    texts += [f"What color is the {s}?" for s in SHAPES] + [f"Which shape is {c}?" for c in COLORS]
    texts += [f"What color is the {word} shape?" for word in EXTREMES]
    texts += [f"Which {axis} is the {s} in?" for s in SHAPES for axis in ("column", "row")] if grounding else []
    answers = list(COLORS) + list(SHAPES) + ["1", "2", "3", "4", "yes", "no"]  # yes / no: the tokenizer the checkpoint was trained with
    captions = [f" {c} {s}, {c} {s}" for c in COLORS for s in SHAPES]
    captions += [f" the {s} is {c}, the {s} is {c}" for c in COLORS for s in SHAPES] if kind_first else []
    return [prompt_for(t) for t in texts] + [f" {a}" for a in answers] + captions
