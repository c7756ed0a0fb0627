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


def card(model_dir: Path, report: dict) -> str:
    log = json.loads((model_dir / "training_log.json").read_text())
    r, hf, pipe = log["recipe"], report["transformers"], report["pipeline"]
    rows = "\n".join(f"| {k} | {hf[k]:.3f} | {pipe[k]:.3f} | {_control(report, 'blank', k):.3f} | "
                     f"{_control(report, 'shuffled', k):.3f} |" for k in hf)
    minutes = (log.get("vision_seconds", 0) + log["train_seconds"]) / 60
    bins = r.get("position_bins", 0)
    position = (f", and which of {bins} column and row bands of the picture holds it (loss weight "
                f"{r['position_weight']})") if bins else ""
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
colour, how many shapes, left/right/above/below (yes/no), the largest shape. Seeds 0… train, 1,000,000… validation,
2,000,000… test (disjoint; every sample is a pure function of its seed).

## Recipe
1. Vision tower alone, {r['vision_steps']} steps × {r['vision_batch_size']} pictures, AdamW lr {r['vision_lr']}: every patch
   token of every tile is classified, by linear heads thrown away afterwards, as the shape kind, the colour and
   "part of the largest shape" under its centre{position} — a stand-in for the pretrained CLIP tower real LLaVA models
   start from.
2. Whole model, {r['steps']} steps × {r['batch_size']} pictures, each a multi-turn conversation of up to {r['turns']}
   questions and a caption turn; LLaVA loss (answer tokens + EOS); AdamW lr {r['lr']} (vision tower ×{r['vision_lr_scale']}),
   warm-up {r['warmup_steps']} steps then cosine to ×{r['min_lr_ratio']}.

## Accuracy ({report['n']} held-out test questions, greedy exact match)
| type | transformers | vlmforge FP32 pipeline | blank pictures | shuffled pictures |
|---|---|---|---|---|
{rows}

The exported FP32 pipeline gave a different answer from transformers on {report['num_differ']} of {report['n']}
questions. Blank or shuffled pictures drop the accuracy towards the text-only baseline
({report['text_only'].get('all', float('nan')):.3f} on these questions: the most frequent training answer to each question text).

## Known limitation
Left/right/above/below questions are answered at chance. Three measured attempts at teaching them,
none adopted (each is a recipe option, off): per-patch column/row labels in stage 1
(`position_bins`: relation 0.54); per-shape relation bits on the base view in stage 1
(`relation_weight`: bits recalled at 0.37, relation 0.54, colour binding slowed to 0.50 after 3000
steps); grounding turns "Which column/row is the star in?" in stage 2 (`locate`: answered at 0.41
against 0.25 chance, relation 0.56). Fine-tuning this checkpoint on relation questions alone
(500 steps) did not move them either. The grid tiles' features know only their place inside a
tile, and only the 3×3-token base view knows the picture as a whole: this checkpoint cannot tell
two shapes' left-to-right order at all (`python -m vlmforge.examples.position_probe`: its own
caption is likelier in the true order than reversed on 0.55 of two-shape pictures). Trained on
pictures whose backgrounds drift in hue with position (±30 grey levels, red→blue across and
magenta→green down, so every tile can tell where it lies), the same recipe does read the order
(0.94), yet its relation questions stayed at chance (0.44 after 3000 steps), and so did questions
reworded to point at a shape ("Which is further left, the star or the circle?": 0.42 after 1000
steps from scratch; 0.48–0.57 after 6000 more fine-tuning steps of that model on a GPU, also with
every pair's question added), while every other type reached 0.97–1.0. Nor did a larger language
model help: fresh 8-layer LMs 256 and 512 wide (7.9 M / 27 M parameters) on that vision tower
answered relation at 0.47–0.56 after 2300 GPU steps, the other types at 0.95–0.99. Nor did asking
for one shape by direction ("Which shape is the leftmost / rightmost / highest / lowest?", 2–4
shapes, chance about 0.35) on the hue-drift pictures: 0.24 after 3000 steps (shape binding reached
only 0.54 in that run); with stage 1 also teaching each base-view patch whether its shape is the
leftmost / rightmost / highest / lowest (recalled on 0.87 of those patches), 0.40 after 2000 steps;
with those labels on every patch of every tile, as "largest" is taught (recalled on 0.72), 0.28
after 2000 steps while shape binding reached 0.86; with the grounding turns added, 0.18 after 1000
steps. Nor did answers that scan first (hue-drift pictures, 3000 steps, 100 test questions): "Is the
cross left of the star?" answered by naming the shapes along the axis, left to right or top to
bottom, up to the first of the two, then yes or no ("circle cross yes"). The first of the two was
named right on 0.93 of the questions, but the yes/no — which must flip for "right of" and "below" —
on 0.53: 0.39 exact (naming only the shapes clearly before it: 0.86, 0.49, 0.37). Scanning from the
side the relation names instead, so that yes means the subject comes first: the yes/no then always
followed the scan, but scans from the right or from the bottom, which no caption shows, found the
first shape on 0.52: 0.42 exact (0.40 with three relation questions per picture; 0.38 with caption
turns from all four sides, "Describe the picture from the right.", the first shape found on 0.46).
Shape binding stayed near 0.5 in these five runs. So the language model orders its own caption from left to
right, yet answers no question about position — in any wording tried here, at these sizes and step
budgets. Nor did naming the shapes by colour ("Is the red shape left of the blue shape?") with every base-view
patch learning the scene's whole colour-pair layout table in stage 1 (0.94 of its bits right): relation 0.56 /
0.50 after 3000 steps, and a linear probe of the language model's state at the answer position, at every layer,
found the answer no better than the majority rate. What did move them — not adopted yet, as it changes the
question: asking for a single shape, "What color is the leftmost / rightmost / topmost / bottommost shape?",
where one shape's box lies beyond every other by at least 5% of the picture (so the gap survives the 48 px base
view), with stage 1 flagging the base-view patches of each side's extreme shape (weight 1.0) — the look-up that
"Which shape is the largest?" already makes. Validation (250 questions) after the unchanged 1500 + 3000 steps:
seed 2 all 0.916, relation 0.68 (colour 0.94, shape 1.0, count 0.98, largest 0.98; 32 min); seed 0 0.888,
relation 0.54; without the margin 0.924, relation 0.72; with 2000 + 3800 steps (over 40 min) relation 0.82 to
0.86 but "Which shape is red?" never learned (0.46; without the margin neither binding question did, relation
0.20). On the 500 test questions with transformers (`python -m vlmforge.examples.hf_eval --model DIR`), the
seed-2 run answers 0.904 of its questions (relation 0.67, colour 0.99, shape 0.96, count 0.94, largest 0.96);
this checkpoint answers 0.882 of the pairwise ones.

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
