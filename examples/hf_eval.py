"""The default model measured with transformers (the reference the exported pipeline must match).

    python -m vlmforge.examples.hf_eval [--model examples/default_model] [--n 500] [--pipeline OUT]

prints greedy exact match per question type on the held-out test split, with transformers'
own ``LlavaNextProcessor`` (PIL image processor) making the inputs; with ``--pipeline`` it also
runs an exported folder on the same questions and counts the answers that differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from . import DEFAULT_MODEL
from .shapes_data import make_sample, prompt_for, split_samples


def per_type(kinds: list[str], correct: list[bool]) -> dict[str, float]:
    """{"all": accuracy, <type>: accuracy, ...} in first-seen type order."""
    out = {"all": float(np.mean(correct))}
    for kind in dict.fromkeys(kinds):
        out[kind] = float(np.mean([c for k, c in zip(kinds, correct) if k == kind]))
    return out


@torch.no_grad()
def teacher_forced_accuracy(model, encoded: list, kinds: list[str], pad_id: int, max_tiles: int, batch_size: int = 50) -> dict:
    """Exact match with the answer fed in: correct iff every labelled token is the argmax."""
    from .shapes_batches import IGNORE_INDEX, collate

    model.eval()
    correct = []
    for i in range(0, len(encoded), batch_size):
        batch = collate(encoded[i : i + batch_size], pad_id, max_tiles)
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (B, seq, vocab)
        predicted, target = logits[:, :-1].argmax(-1), labels[:, 1:]
        wrong = (predicted != target) & (target != IGNORE_INDEX)
        correct += (~wrong.any(dim=1)).tolist()
    return per_type(kinds, correct)


def load_hf(model_dir: Path, attn_implementation: str | None = None):
    """A LLaVA-NeXT checkpoint and its processor with the PIL image backend (no torchvision needed)."""
    from transformers import AutoTokenizer, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    model = LlavaNextForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attn_implementation).eval()
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil.from_pretrained(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


@torch.no_grad()
def hf_answer(model, processor, image: np.ndarray, question: str, max_new_tokens: int = 8) -> str:
    """Greedy transformers answer to one question about one picture."""
    inputs = processor(images=[image], text=prompt_for(question), return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def evaluate_hf(model_dir: Path, n: int, pipeline_dir: Path | None = None) -> dict:
    """Greedy exact match of transformers (and optionally an exported pipeline) on ``n`` test questions."""
    torch.set_num_threads(2)
    model, processor = load_hf(model_dir)
    pipe = None
    if pipeline_dir is not None:
        from ..runtime import Pipeline

        pipe = Pipeline.load(pipeline_dir)
    kinds, hf_ok, pipe_ok, differ = [], [], [], []
    for seed, kind in split_samples("test", n):
        sample = make_sample(seed, first=kind)
        q = sample.questions[0]
        answer = hf_answer(model, processor, sample.image, q.text)
        kinds.append(kind)
        hf_ok.append(answer == q.answer)
        if pipe is not None:
            ours = pipe.generate(prompt_for(q.text), images=[sample.image], max_new_tokens=8).text.strip()
            pipe_ok.append(ours == q.answer)
            if ours != answer:
                differ.append({"seed": seed, "question": q.text, "transformers": answer, "pipeline": ours})
    report = {"n": n, "transformers": per_type(kinds, hf_ok)}
    if pipe is not None:
        report.update(pipeline=per_type(kinds, pipe_ok), num_differ=len(differ), differ=differ)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="Hugging Face checkpoint folder")
    p.add_argument("--n", type=int, default=500, help="test questions (types cycle, n/5 each)")
    p.add_argument("--pipeline", type=Path, help="an exported folder to compare answer by answer")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    report = evaluate_hf(args.model, args.n, args.pipeline)
    print(json.dumps({k: v for k, v in report.items() if k != "differ"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
