"""The shapes task (issue #4's data): deterministic from a seed, disjoint splits, answerable questions."""

from __future__ import annotations

import numpy as np
import pytest

from vlmforge.examples.shapes_data import COLORS, QUESTION_TYPES, SHAPES, make_sample, split_samples


def test_samples_are_a_pure_function_of_the_seed():
    a, b = make_sample(2_000_017), make_sample(2_000_017)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.questions == b.questions and a.image.dtype == np.uint8 and a.image.ndim == 3
    assert not np.array_equal(make_sample(2_000_018).image, a.image) or a.image.shape != make_sample(2_000_018).image.shape


def test_splits_are_disjoint_and_cover_every_question_type():
    seeds = {split: {s for s, _ in split_samples(split, 50)} for split in ("train", "validation", "test")}
    assert not (seeds["train"] & seeds["test"]) and not (seeds["validation"] & seeds["test"])
    assert {t for _, t in split_samples("test", 10)} == set(QUESTION_TYPES)
    with pytest.raises(ValueError, match="unknown split"):
        split_samples("dev", 3)


@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_first_question_has_the_asked_type_and_a_short_answer(kind):
    sample = make_sample(2_000_100, first=kind)
    q = sample.questions[0]
    assert q.kind == kind and len(q.answer.split()) == 1
    vocab = set(COLORS) | set(SHAPES) | {"yes", "no"} | {str(i) for i in range(1, 5)}
    assert q.answer in vocab
