"""Measure the trained default model and write its MODEL_CARD.md (recipe, seed, data, accuracy).

    python -m vlmforge.examples.model_card [--model examples/default_model] [--n 500]

Runs transformers on ``n`` held-out test questions, exports the checkpoint and runs the FP32
pipeline on the same questions (answer-by-answer parity), and the blank / shuffled picture
controls; the card quotes those numbers and ``training_log.json``'s recipe and timings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
from pathlib import Path

from . import DEFAULT_MODEL
from .hf_eval import evaluate_hf


def measure(model_dir: Path, n: int) -> dict:
    from ..export import export_model
    from ..runtime import Pipeline
    from .evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        export_model(model_dir, out)
        report = evaluate_hf(model_dir, n, out)
        pipe = Pipeline.load(out)
        report["controls"] = {mode: evaluate(pipe, n=n, images=mode).as_dict() for mode in ("blank", "shuffled")}
        report["text_only"] = report["controls"]["blank"]["text_only"]  # the same n questions
    return report


def _control(report: dict, mode: str, kind: str) -> float:
    control = report["controls"][mode]
    return control["accuracy"] if kind == "all" else control["per_type"][kind]


def _stage2(r: dict) -> str:
    """The recipe's stage-2 line: steps, what each training conversation holds, the optimiser."""
    text = (f"2. Whole model, {r['steps']} steps × {r['batch_size']} pictures, each a multi-turn conversation of up to "
            f"{r['turns']} questions")
    if r.get("all_sides"):
        text += ", then the colour of the extreme shape on every other side that has one,"
    text += " and a caption turn, every shape left to right"
    if r.get("kind_first"):
        text += (' ("orange star, red circle", or on odd seeds "the star is orange, the circle is red": colours '
                 'read off named shapes, as "What color is the star?" asks)')
    if r.get("first_types"):
        text += "; the pictures drawn as the test's are, each with one question type first, the types in turn"
    text += (f"; LLaVA loss (answer tokens + EOS); AdamW lr {r['lr']} (vision tower ×{r['vision_lr_scale']}), warm-up "
             f"{r['warmup_steps']} steps then cosine to ×{r['min_lr_ratio']}.")
    return textwrap.fill(text, width=116, subsequent_indent="   ", break_on_hyphens=False)


def card(model_dir: Path, report: dict) -> str:
    log = json.loads((model_dir / "training_log.json").read_text())
    r, hf, pipe = log["recipe"], report["transformers"], report["pipeline"]
    rows = "\n".join(f"| {k} | {hf[k]:.3f} | {pipe[k]:.3f} | {_control(report, 'blank', k):.3f} | "
                     f"{_control(report, 'shuffled', k):.3f} |" for k in hf)
    minutes = (log.get("vision_seconds", 0) + log["train_seconds"]) / 60
    bins = r.get("position_bins", 0)
    position = (f", and which of {bins} column and row bands of the picture holds it (loss weight "
                f"{r['position_weight']})") if bins else ""
    spatial = ""
    if r.get("extreme_weight"):
        spatial += (f"\n   On the base view (the one tile that sees the whole picture) the patches of each side's "
                    f"extreme shape are also\n   flagged as the leftmost / rightmost / topmost / bottommost one "
                    f"(weight {r['extreme_weight']}): what \"What color is the\n   leftmost shape?\" looks up, as "
                    f"\"Which shape is the largest?\" looks up its flag.")
    if r.get("layout_weight"):
        spatial += (f"\n   Every base-view patch also learns each side's extreme colour, through the tower's last "
                    f"{r['layout_layers']} layer(s) (weight {r['layout_weight']}).")
    return f"""# vlmforge default model: a small LLaVA-NeXT for the shapes task

Trained from scratch on this repository's procedural shapes task, on CPU, by
`python -m vlmforge.examples.train_default_model --out examples/default_model` (seed {r['seed']},
{minutes:.1f} min wall clock on a 2-core machine, one torch thread, `torch.use_deterministic_algorithms`).
Deterministic: the pictures, the questions, the initialisation and the batch order all follow from the seed.

## Architecture ({log['num_parameters'] / 1e6:.2f} M parameters, float32)
- `LlavaNextForConditionalGeneration`: CLIP vision tower ({r['vision_layers']} layers, width {r['vision_hidden']},
  {r['vision_heads']} heads, {r['tile']}×{r['tile']} tiles of {r['patch']}×{r['patch']} patches, position embeddings
  started from 2-D sin-cos), 2-layer GELU MLP projector, Llama decoder ({r['text_layers']} layers, width
  {r['text_hidden']}, {r['text_heads']} heads, {r['text_kv_heads']} KV heads).
- AnyRes grid pinpoints {r['grid_pinpoints']}: pictures get a 1×2, 2×1 or 2×2 grid of tiles plus the base view,
  unpadded features and `image_newline` rows.
- Byte-level BPE tokenizer ({r['vocab_size']} entries) trained with `tokenizers` on the task's text; every answer is
  one token; chat template `USER: <image>\\n{{question}} ASSISTANT:`.

## Data
`vlmforge.examples.shapes_data`: 1–4 shapes (circle, square, triangle, star, cross) in six colours on a textured
grey background, pictures 72–320 px in seven aspect ratios; questions: colour of a named shape, which shape has a
colour, how many shapes, the largest shape, and left/right/above/below as "What color is the leftmost / rightmost /
topmost / bottommost shape?" — asked only where one shape's box lies beyond every other box on that side by at least
5% of the picture's width or height, so that the answer is never a judgement call and the gap survives the 48 px
base view. Seeds 0… train, 1,000,000… validation, 2,000,000… test (disjoint; every sample is a pure function of its
seed).

## Recipe
1. Vision tower alone, {r['vision_steps']} steps × {r['vision_batch_size']} pictures, AdamW lr {r['vision_lr']}: every patch
   token of every tile is classified, by linear heads thrown away afterwards, as the shape kind, the colour and
   "part of the largest shape" under its centre{position} — a stand-in for the pretrained CLIP tower real LLaVA models
   start from.{spatial}
{_stage2(r)}

## Accuracy ({report['n']} held-out test questions, greedy exact match)
| type | transformers | vlmforge FP32 pipeline | blank pictures | shuffled pictures |
|---|---|---|---|---|
{rows}

The exported FP32 pipeline gave a different answer from transformers on {report['num_differ']} of {report['n']}
questions. Blank or shuffled pictures drop the accuracy towards the text-only baseline
({report['text_only'].get('all', float('nan')):.3f} on these questions: the most frequent training answer to each question text).

## Known limitation: the seed
Whether the two binding questions ("What color is the star?", "Which shape is red?") are learned within
{r['steps']} steps varies from seed to seed. With this recipe, on 250 validation questions (teacher-forced exact
match, 50 per type, which equals greedy): seed 4 0.976 (this checkpoint; relation 0.96), seed 2 0.904 ("Which shape is
red?" 0.82, learned late), seed 0 0.860 ("Which shape is red?" 0.56, not learned; relation 0.80) — one seed in three
reaches the 95% bar. Seed {r['seed']} is the best of the three; its validation history is in `training_log.json`.
On 1000 validation questions (greedy) this checkpoint answers 0.964; per side of the spatial questions, leftmost 1.00,
rightmost 0.96, topmost 0.91, bottommost 0.76 — bottommost is the weakest look-up left.

## What made the spatial questions work
The previous checkpoint (same architecture, 1500 + 3000 steps, 90.4% on these test questions) answered leftmost 0.91,
rightmost 0.82, topmost 0.58 and bottommost 0.33 (1000 validation questions), yet a linear probe on its tower's
base-view tokens found the four stage-1 flags equally well (recall 0.61–0.66, precision 0.74–0.78): the language model,
not the tower, was the limit. The left-to-right caption starts with the leftmost shape's colour, so that look-up was
practised on every picture, each vertical side only by the ~0.12 questions per picture that asked it. Measured
(validation as above): top-to-bottom captions (vocabulary 400) as a second caption turn, or instead of the left-to-right one on odd
seeds, lost "What color is the star?" (0.48 / 0.48) and relation stayed at 0.44 / 0.56; asking every side that has an
extreme shape in each conversation and drawing the training pictures as the test's are (`all_sides`, `first_types`;
0.49 → 0.99 spatial questions per picture) gave 0.920 / relation 0.82 (seed 2) and 0.868 (seed 4, colour binding 0.56);
adding the "the star is orange" captions on odd seeds (`kind_first`: the caption then also practises reading a colour
off a named shape) and 2000 stage-1 steps (patch-kind accuracy 0.95, flags found 0.57) gave this checkpoint.

Before that (validation = teacher-forced exact match on 250 validation questions, 50 per
type, which equals greedy). The task first asked them pairwise, "Is the cross left of the star?" (yes/no), and every
measured attempt left them at chance (0.42–0.57): per-patch column/row labels in stage 1 (0.54); per-shape relation
bits on the base view (0.54); grounding turns "Which column is the star in?" (0.56); fine-tuning on relation
questions alone; pictures whose background hue drifts with position, which let the model order its own caption
(0.94 of two-shape pictures, `python -m vlmforge.examples.position_probe`) yet left the questions at 0.44;
rewordings ("Which is further left, the star or the circle?", answers that scan the shapes along the axis first:
0.39–0.48); 8-layer language models 256 and 512 wide trained on a GPU (0.47–0.56); naming the shapes by colour with
the scene's whole colour-pair table taught to every base-view patch (0.94 of its bits right, relation 0.56 / 0.50 —
a linear probe found the answer nowhere in the language model's state at the answer position). A yes/no about two
named shapes needs two look-ups combined, and this language model, at this size and budget, only ever learned
single look-ups (colour → kind, kind → colour, the largest flag → kind). So the question became one look-up: the
colour of the shape beyond all others on one side, with stage 1 flagging that shape's base-view patches. Measured
(1500 + 3000 steps unless said): seed 2 0.916 / relation 0.68 (the previous checkpoint); seed 0 0.888 / 0.54; without the
margin 0.924 / 0.72 (seed 0) and 0.816 (seed 1, colour binding lost); 2000 + 3800 steps (over 40 min) relation
0.82–0.88 but one or both binding questions never learned. Stage 1 finds only 0.49–0.80 of the flagged patches,
which was taken for the cap on the relation answers (the language model was, as above). Teaching every base-view patch the extreme shapes' colours instead (`layout_weight`:
a scene-wide answer on all 9 tokens) is learned almost perfectly (0.99) but, trained through the whole tower, slows
the patch-kind labels (0.48 against 0.92 after 1500 steps; at weight 0.2 or on one token only, as much) and the
binding questions fail (relation 0.62–0.74, shape 0.24–0.28 at 1500 steps); started halfway through stage 1, kind 0.79 and relation 0.80 at 1000 steps but colour / shape
binding 0.56 / 0.48 at 2000; through the tower's last layer only, kind is kept (0.89) and the colours learned on
0.85, but after 3000 steps relation is 0.72 and "What color is the star?" 0.58 (all 0.848; through the last two
layers, 0.61 / 0.28 at 1000 steps, stopped).

Measured by `python -m vlmforge.examples.model_card`.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--n", type=int, default=500)
    args = p.parse_args(argv)
    report = measure(args.model, args.n)
    (args.model / "eval_report.json").write_text(json.dumps(report, indent=1))
    (args.model / "MODEL_CARD.md").write_text(card(args.model, report))
    print(json.dumps({k: report[k] for k in ("n", "transformers", "pipeline", "num_differ")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
