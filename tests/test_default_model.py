"""The bundled default model (examples/default_model): it answers held-out questions, the exported
pipeline gives transformers' answers, and the answers come from the picture, not the question."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlmforge.examples import DEFAULT_MODEL
from vlmforge.examples.shapes_data import COLORS, QUESTION_TYPES, SHAPES, make_sample, prompt_for, split_samples

N_PARITY = 60  # the full 500 are measured in the model card; 60 keep `make test` fast
N_CONTROL = 100


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from vlmforge.export import export_model
    from vlmforge.runtime import Pipeline

    out = tmp_path_factory.mktemp("default_model") / "out"
    export_model(DEFAULT_MODEL, out)
    return Pipeline.load(out)


def test_checkpoint_is_complete_and_small():
    from transformers import AutoTokenizer, GenerationConfig

    names = {p.name for p in DEFAULT_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "generation_config.json", "MODEL_CARD.md"} <= names
    assert sum(p.stat().st_size for p in DEFAULT_MODEL.iterdir()) <= 25 * 2**20
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    assert GenerationConfig.from_pretrained(DEFAULT_MODEL).eos_token_id == tokenizer.eos_token_id
    assert tokenizer.chat_template and "<image>" in tokenizer.all_special_tokens
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes are there?"}]}],
        tokenize=False, add_generation_prompt=True)
    assert rendered == prompt_for("How many shapes are there?")  # the template renders the trained format


def test_scenes_are_deterministic_and_unambiguous():
    for seed, kind in split_samples("train", 150):
        a, b = make_sample(seed, first=kind), make_sample(seed, first=kind)
        assert np.array_equal(a.image, b.image) and a.questions == b.questions
        assert a.questions[0].kind == kind
        shapes = a.shapes
        assert len({s.kind for s in shapes}) == len(shapes) and len({s.color for s in shapes}) == len(shapes)
        for i, s in enumerate(shapes):
            assert 0 <= s.x0 and s.x1 < a.image.shape[1] and 0 <= s.y0 and s.y1 < a.image.shape[0]
            for t in shapes[i + 1 :]:  # boxes apart on at least one axis
                assert s.x1 < t.x0 or t.x1 < s.x0 or s.y1 < t.y0 or t.y1 < s.y0
        areas = sorted((s.area for s in shapes), reverse=True)
        assert len(areas) == 1 or areas[0] >= 1.6 * areas[1]
        answers = set(COLORS) | set(SHAPES) | {"1", "2", "3", "4", "yes", "no"}
        assert all(q.answer in answers for q in a.questions)
    test_seeds = {seed for seed, _ in split_samples("test", 500)}
    assert not test_seeds & {seed for seed, _ in split_samples("train", 10_000)}


def test_training_inputs_match_the_transformers_processor():
    """What the model was trained on is what transformers' processor (and the runtime) feeds it."""
    from vlmforge.examples.hf_eval import load_hf
    from vlmforge.examples.shapes_batches import IGNORE_INDEX, ShapesEncoder
    from vlmforge.export.families.llava_next import preprocess_spec

    model, processor = load_hf(DEFAULT_MODEL)
    encoder = ShapesEncoder(processor.tokenizer, preprocess_spec(DEFAULT_MODEL, model.config))
    for seed, kind in split_samples("validation", 10):
        sample = make_sample(seed, first=kind)
        q = sample.questions[0]
        ref = processor(images=[sample.image], text=prompt_for(q.text), return_tensors="pt")
        enc = encoder.encode(sample, [q])
        n = ref["input_ids"].shape[1]
        assert enc.input_ids[:n].tolist() == ref["input_ids"][0].tolist()
        assert (enc.labels[:n] == IGNORE_INDEX).all() and (enc.labels[n:] == enc.input_ids[n:]).all()
        assert enc.input_ids[-1] == processor.tokenizer.eos_token_id
        pixels = ref["pixel_values"][0, : len(enc.pixels)].numpy()
        np.testing.assert_allclose(enc.pixels, pixels, atol=1e-5)


def test_exported_pipeline_answers_like_transformers(pipe):
    from vlmforge.examples.hf_eval import hf_answer, load_hf

    model, processor = load_hf(DEFAULT_MODEL)
    right = 0
    for seed, kind in split_samples("test", N_PARITY):
        sample = make_sample(seed, first=kind)
        q = sample.questions[0]
        ours = pipe.generate(prompt_for(q.text), images=[sample.image], max_new_tokens=8).text.strip()
        assert ours == hf_answer(model, processor, sample.image, q.text), (seed, q)
        right += ours == q.answer
    assert right / N_PARITY >= 0.9  # 0.966 on all 500 (MODEL_CARD.md); spatial questions 0.91


def test_answers_depend_on_the_image(pipe):
    """Blank or someone else's picture: accuracy falls to what the question text alone gives."""
    from vlmforge.examples.evaluate import evaluate

    real = evaluate(pipe, n=N_CONTROL)
    assert real.accuracy >= 0.9 and real.per_type["relation"] >= 0.8, real.table()  # measured 0.98, relation 0.95
    assert all(real.per_type[k] >= 0.9 for k in ("color", "shape", "count", "largest")), real.table()
    for images in ("blank", "shuffled"):
        control = evaluate(pipe, n=N_CONTROL, images=images)
        assert control.accuracy <= real.text_only["all"] + 0.12, control.table()
        assert control.accuracy <= real.accuracy - 0.4, control.table()
        # the spatial answers too come from the picture (measured on these 20: 0.95 real, 0.05 blank, 0.20 shuffled)
        assert control.per_type["relation"] <= real.per_type["relation"] - 0.5, (real.table(), control.table())
    assert real.text_only["all"] < 0.5  # the baseline itself is near chance: the questions give little away


def test_demo_pictures_are_answered(pipe, capsys):
    from vlmforge.demo import DEMO_PICTURES, ask_pictures

    right, asked, _ = ask_pictures(pipe)
    out = capsys.readouterr().out
    assert asked == out.count("  Q: ") >= len(DEMO_PICTURES) and right == asked, out
    assert set(QUESTION_TYPES) <= {kind for _, kinds in DEMO_PICTURES for kind in kinds}


def test_eval_cli_writes_json(pipe, tmp_path, capsys):
    from vlmforge.cli import main

    report = tmp_path / "eval.json"
    assert main(["eval", str(pipe.root), "--suite", "shapes", "--n", "10", "--json", str(report)]) == 0
    assert "text-only" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["n"] == 10 and 0 <= data["accuracy"] <= 1
    assert set(data["per_type"]) == set(QUESTION_TYPES)
    with pytest.raises(SystemExit):  # an unknown suite: argparse lists the choices
        main(["eval", str(pipe.root), "--suite", "vqa"])


def test_position_probe_scores_true_against_reversed_captions():
    """position_probe compares each two-shape picture's caption in true and reversed order; the
    committed checkpoint prefers the true order on 111 of 120 pictures (9 of these 12; chance 6),
    the previous one, whose spatial answers were 0.67, on 67 of 120."""
    from vlmforge.examples.position_probe import order_preference

    wins, probed = order_preference(DEFAULT_MODEL, 12)
    assert probed == 12 and wins >= 8


def test_batched_answers_equal_one_at_a_time(pipe):
    """The bundled model's answers (they end on EOS) decoded eight at a time equal each alone."""
    from vlmforge.examples.shapes_data import SPLITS, make_sample, prompt_for
    from vlmforge.runtime.serving import Request

    reqs = []
    for index in (3, 5, 8, 12):
        sample = make_sample(SPLITS["test"] + index)
        reqs += [Request(prompt_for(q.text), [sample.image], max_new_tokens=8) for q in sample.questions[:2]]
    solo = [pipe.generate(**r.kwargs()) for r in reqs]
    assert any(r.finish_reason == "eos" for r in solo)
    assert [(r.token_ids, r.text) for r in pipe.generate_batch(reqs)] == [(r.token_ids, r.text) for r in solo]
