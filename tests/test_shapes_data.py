"""The shapes task (issue #4's data): deterministic from a seed, disjoint splits, answerable questions."""

from __future__ import annotations

import numpy as np
import pytest

from vlmforge.examples.shapes_data import COLORS, QUESTION_TYPES, SHAPES, make_sample, split_samples
from vlmforge.examples.shapes_scene import Shape


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


def test_relation_questions_ask_for_the_shape_beyond_all_others():
    """"What color is the leftmost shape?": that shape's box lies wholly left of every other box (so
    the answer is never a judgement call), and a picture with no such shape on any side gets none."""
    from vlmforge.examples.shapes_data import EXTREMES, extremes

    asked = set()
    for seed in range(2_000_200, 2_000_260):
        sample = make_sample(seed, first="relation")
        q = sample.questions[0]
        word = q.text.split()[-2]
        target = next(s for s in sample.shapes if s.color == q.answer)
        others = [s for s in sample.shapes if s is not target]
        beyond = {"leftmost": lambda o: target.x1 < o.x0, "rightmost": lambda o: target.x0 > o.x1,
                  "topmost": lambda o: target.y1 < o.y0, "bottommost": lambda o: target.y0 > o.y1}[word]
        assert q.kind == "relation" and others and all(beyond(o) for o in others), (seed, q)
        asked.add(word)
    assert asked == set(EXTREMES)
    boxes = [(0, 0, 40, 40), (30, 50, 70, 90), (60, 0, 100, 40), (0, 60, 25, 100)]  # overlapping spans on both axes
    shapes = [Shape(k, c, *b) for k, c, b in zip(SHAPES, COLORS, boxes)]
    assert extremes(shapes, (100, 100)) == {} and extremes(shapes[:1], (100, 100)) == {}
    assert extremes(shapes[:2], (100, 100)) == {"topmost": shapes[0], "bottommost": shapes[1]}  # their x spans overlap
    assert extremes([shapes[0], shapes[2]], (100, 100)) == {"leftmost": shapes[0], "rightmost": shapes[2]}


def test_extreme_flags_agree_with_the_relation_answers():
    """Stage 1's flags (vision_pretrain.extreme_targets) mark, on the base view only, the patches that
    stand for the shape the relation question asks about — and no other patch."""
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.shapes_data import EXTREMES
    from vlmforge.examples.vision_pretrain import base_view_owners, extreme_targets
    from vlmforge.kernels import PreprocessSpec

    recipe = Recipe()
    spec = PreprocessSpec(scheme="anyres", resize="none", size=[recipe.tile], tile_size=recipe.tile, patch_size=recipe.patch,
                          grid_pinpoints=recipe.grid_pinpoints, mean=[0.5] * 3, std=[0.5] * 3)
    for seed in range(2_000_200, 2_000_230):
        sample = make_sample(seed, first="relation")
        q = sample.questions[0]
        flags = extreme_targets(sample, spec, num_tiles=5)  # (tiles, P·P, 4)
        assert (flags[1:] == -1).all() and set(np.unique(flags[0])) <= {0.0, 1.0}
        bit = flags[0, :, EXTREMES.index(q.text.split()[-2])]
        owner = next(i for i, s in enumerate(sample.shapes) if s.color == q.answer)
        np.testing.assert_array_equal(bit, (base_view_owners(sample, spec) == owner).astype(np.float32))
        assert bit.any(), seed  # every shape stands for at least one base-view patch


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


def test_layout_targets_put_the_extreme_colours_on_every_base_view_patch():
    """The layout option's targets: each side's extreme colour on all base-view patches, ignored on grid tiles
    and on sides where no shape lies beyond the others."""
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.shapes_data import EXTREMES, extremes
    from vlmforge.examples.vision_pretrain import IGNORE_INDEX, layout_targets
    from vlmforge.kernels import PreprocessSpec

    recipe = Recipe()
    spec = PreprocessSpec(scheme="anyres", resize="none", size=[recipe.tile], tile_size=recipe.tile, patch_size=recipe.patch,
                          grid_pinpoints=recipe.grid_pinpoints, mean=[0.5] * 3, std=[0.5] * 3)
    for seed in range(2_000_300, 2_000_320):
        sample = make_sample(seed)
        table = layout_targets(sample, spec, num_tiles=3)  # (tiles, P·P, 4)
        assert (table[1:] == IGNORE_INDEX).all() and (table[0] == table[0, :1]).all()
        beyond = extremes(sample.shapes, sample.image.shape[:2])
        expected = [list(COLORS).index(beyond[w].color) if w in beyond else IGNORE_INDEX for w in EXTREMES]
        assert table[0, 0].tolist() == expected


def test_recipe_trains_deterministically_with_every_stage_one_head(tmp_path):
    """Two tiny runs of the real recipe (extreme flags and the layout option on) write identical checkpoints."""
    torch = pytest.importorskip("torch")
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.train_default_model import train

    recipe = Recipe(vision_steps=2, vision_batch_size=2, steps=2, batch_size=2, num_val=5, eval_every=2, layout_weight=1.0)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        logs = [train(recipe, tmp_path / name, log=lambda m: None) for name in ("a", "b")]
    finally:  # train() sets both for the process; later tests keep theirs
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert logs[0]["loss"] == logs[1]["loss"] and logs[0]["vision_loss"] == logs[1]["vision_loss"]
    assert all(np.isfinite(logs[0]["vision_loss"])) and logs[0]["validation"][-1]["step"] == 2
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_training_conversations_ask_every_side_once_and_caption_last():
    """Recipe.all_sides adds the spatial questions of the sides the sample does not ask (each side once,
    the answers the extreme shapes' colours); the caption stays the last turn."""
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.shapes_data import DESCRIBE, extremes
    from vlmforge.examples.train_default_model import conversation

    for seed in range(300, 320):
        sample = make_sample(seed, first="relation")
        plain, every = conversation(sample, Recipe(all_sides=0)), conversation(sample, Recipe(all_sides=1))
        assert plain == sample.questions[:8] + [plain[-1]] and every[-1] == plain[-1] and every[-1].text == DESCRIBE
        beyond = extremes(sample.shapes, sample.image.shape[:2])
        spatial = {q.text: q.answer for q in every if q.kind == "relation"}
        assert spatial == {f"What color is the {w} shape?": s.color for w, s in beyond.items()}
        assert sum(q.kind == "relation" for q in every) == len(beyond)  # no side twice
        assert every[: len(plain) - 1] == plain[:-1]  # the sample's own questions first, as they were


def test_first_types_draws_training_pictures_as_the_evaluation_does():
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.train_default_model import training_samples

    plain, typed = training_samples(Recipe(batch_size=10, first_types=0), 3), training_samples(Recipe(batch_size=10, first_types=1), 3)
    assert [s.seed for s in plain] == [s.seed for s in typed] == list(range(30, 40))
    assert all(s.questions == make_sample(s.seed).questions for s in plain)
    assert [s.questions[0].kind for s in typed] == [QUESTION_TYPES[i % 5] for i in range(30, 40)]


def test_kind_first_captions_name_each_shape_then_its_colour_on_odd_seeds():
    from vlmforge.examples.model_recipe import Recipe
    from vlmforge.examples.shapes_data import describe
    from vlmforge.examples.train_default_model import conversation

    odd, even = make_sample(303), make_sample(302)
    plain, named = describe(odd), describe(odd, kind_first=True)
    assert named.text == plain.text and len(odd.shapes) >= 2
    assert named.answer == ", ".join(f"the {p.split()[1]} is {p.split()[0]}" for p in plain.answer.split(", "))
    assert conversation(odd, Recipe(kind_first=1))[-1] == named and conversation(odd, Recipe(kind_first=0))[-1] == plain
    assert conversation(even, Recipe(kind_first=1))[-1] == describe(even)
