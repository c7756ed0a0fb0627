"""``vlmforge demo``: export the bundled model, ask it about pictures, print the per-stage profile.

The bundled model (``examples/default_model``, see its MODEL_CARD.md) is a small LLaVA-NeXT
trained here on the shapes task, so its answers can be checked: each line prints the question,
the model's answer and the expected one. The pictures are held-out test scenes drawn from fixed
seeds (nothing to download; the same pictures on every machine).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# (test-split index, question types to ask): held-out pictures with one to four shapes, every question type.
# This model answers every question about test pictures 0-12 right (picture 13's count is its first miss) and
# 96.6% of the 500 test questions (MODEL_CARD.md); the demo prints that measured accuracy next to its tally.
DEMO_PICTURES = ((3, ("color", "count")), (5, ("relation", "largest")), (8, ("shape", "count")), (12, ("color", "relation")))
PROFILE_RUNS = 5


def bundled_model() -> Path:
    from .examples import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled model is missing from {DEFAULT_MODEL}; reinstall vlmforge or "
            "train it with: python -m vlmforge.examples.train_default_model --out " + str(DEFAULT_MODEL)
        )
    return DEFAULT_MODEL


def ask_pictures(pipe) -> tuple[int, int, tuple]:
    """Print each question, answer and expected answer; returns (right, asked, first picture's prompt+image)."""
    from .examples.shapes_data import SPLITS, make_sample, prompt_for

    right = asked = 0
    first = None
    for index, kinds in DEMO_PICTURES:
        sample = make_sample(SPLITS["test"] + index)
        h, w = sample.image.shape[:2]
        shapes = ", ".join(f"{s.color} {s.kind}" for s in sample.shapes)
        print(f"\npicture {index} of the test split: {w}×{h}, {shapes}")
        for q in [q for q in sample.questions if q.kind in kinds]:
            prompt = prompt_for(q.text)
            answer = pipe.generate(prompt, images=[sample.image], max_new_tokens=8).text.strip()
            ok = answer == q.answer
            right, asked = right + ok, asked + 1
            print(f"  Q: {q.text:<38} A: {answer:<9} expected: {q.answer:<9} {'ok' if ok else 'WRONG'}")
            first = first or (prompt, sample.image)
    return right, asked, first


def measured_accuracy(model_dir: Path) -> str:
    """The model card's figure, so the demo's few pictures are not mistaken for the accuracy."""
    import json

    report = model_dir / "eval_report.json"
    if not report.is_file():
        return ""
    data = json.loads(report.read_text())
    return (f" (pictures chosen to cover every question type; on {data['n']} held-out questions the model "
            f"answers {100 * data['pipeline']['all']:.1f}% exactly: see {model_dir / 'MODEL_CARD.md'})")


def run_demo(out: str | None = None) -> int:
    from .export import export_model
    from .runtime import Pipeline
    from .runtime.profile import profile

    model_dir = bundled_model()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(out) if out else Path(tmp) / "export"
        print(f"exporting the bundled shapes model ({model_dir}) to {out_dir} …")
        export_model(model_dir, out_dir, overwrite=True)
        pipe = Pipeline.load(out_dir)
        right, asked, (prompt, image) = ask_pictures(pipe)
        print(f"\n{right}/{asked} answers as expected{measured_accuracy(model_dir)}")
        print(f"\nper-stage profile ({PROFILE_RUNS} runs, one question, 2 new tokens: the answer word + EOS):")
        print(profile(pipe, prompt, [image], runs=PROFILE_RUNS, warmup=1, max_new_tokens=2).table())
    return 0 if right == asked else 1
