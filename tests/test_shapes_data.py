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


def test_relation_labels_agree_with_the_relation_answers():
    """Stage 1's relation bits (vision_pretrain.relation_targets) say what the yes/no questions say:
    on the base-view patch of the question's second shape, the bit "first shape <relation> it"."""
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.vision_pretrain import RELATION_WORDS, base_view_owners, relation_targets
    from vlmforge.kernels import PreprocessSpec

    recipe = Recipe()
    spec = PreprocessSpec(scheme="anyres", resize="none", size=[recipe.tile], tile_size=recipe.tile, patch_size=recipe.patch,
                          grid_pinpoints=recipe.grid_pinpoints, mean=[0.5] * 3, std=[0.5] * 3)
    checked = 0
    for seed in range(2_000_200, 2_000_230):
        sample = make_sample(seed, first="relation")
        bits = relation_targets(sample, spec, num_tiles=5)  # (tiles, P·P, 4·len(SHAPES))
        owners = base_view_owners(sample, spec)
        assert (bits[1:] == -1).all() and set(np.unique(bits)) <= {-1.0, 0.0, 1.0}
        for q in (q for q in sample.questions if q.kind == "relation"):
            words = q.text[len("Is the "):-1].split()  # "<a> <relation …> the <b>"
            a, b, rel = words[0], words[-1], " ".join(words[1:-2])
            owner = next(i for i, s in enumerate(sample.shapes) if s.kind == b)
            cells = [c for c in range(bits.shape[1]) if bits[0, c, 0] >= 0 and owners[c] == owner]
            for c in cells:
                bit = bits[0, c, RELATION_WORDS.index(rel) * len(SHAPES) + SHAPES.index(a)]
                assert bit == (1.0 if q.answer == "yes" else 0.0), (seed, q)
                checked += 1
    assert checked > 20


def test_grounding_turns_name_the_band_of_each_shape_centre():
    from vlmforge.examples.shapes_data import BANDS, locate

    sample = make_sample(2_000_300, first="relation")
    turns = locate(sample, 2 * len(sample.shapes))
    assert len(turns) == 2 * len(sample.shapes) and locate(sample, 0) == []
    assert turns == locate(sample, 2 * len(sample.shapes))  # deterministic
    h, w = sample.image.shape[:2]
    for q in turns:
        axis, kind = q.text.split()[1], q.text.split()[-2]
        s = next(s for s in sample.shapes if s.kind == kind)
        centre, size = ((s.x0 + s.x1) / 2, w) if axis == "column" else ((s.y0 + s.y1) / 2, h)
        assert int(q.answer) - 1 == min(int(centre * BANDS / size), BANDS - 1)
    assert sample.questions == make_sample(2_000_300, first="relation").questions  # own random stream
