"""Train the default model from scratch on the shapes task (CPU, deterministic, one torch thread).

    python -m vlmforge.examples.train_default_model --out examples/default_model

Stage 1 (``vision_pretrain.py``) trains the vision tower alone to name the shape under every patch;
stage 2 trains the whole model with the LLaVA loss. In stage 2 every step draws ``batch_size``
fresh training pictures (seeds step·B … step·B + B − 1 of the train split), each with up to
``turns`` questions, the other sides' spatial questions and a caption as one conversation
(``conversation``); the loss is the standard LLaVA one (cross-entropy on answer tokens and EOS
only). Validation is teacher-forced exact match on held-apart validation seeds, which equals
greedy exact match: greedy decoding reproduces the answer iff every answer token and the EOS are
the argmax given the correct prefix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..export.families.llava_next import preprocess_spec
from .hf_eval import teacher_forced_accuracy
from .model_recipe import Recipe, build_model, build_tokenizer, max_tiles, save_processor
from .shapes_batches import ShapesEncoder, collate
from .shapes_data import describe, locate, make_sample, other_sides, split_samples
from .vision_pretrain import pretrain_vision


def lr_at(recipe: Recipe, step: int, total: int | None = None, warmup: int | None = None) -> float:
    """Linear warm-up, then cosine decay to lr × min_lr_ratio at step ``total`` (default: stage 2's)."""
    total = recipe.steps if total is None else total
    warmup = recipe.warmup_steps if warmup is None else warmup
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW; matrices decay, norms and biases do not; the (stage-1 pretrained) vision tower learns
    at ``vision_lr_scale`` × the rate, so the LLaVA loss refines its features instead of washing
    them out while the projector and the LM are still random."""
    tower = {id(p) for p in model.model.vision_tower.parameters()}
    groups = []
    for in_tower, scale in ((True, recipe.vision_lr_scale), (False, 1.0)):
        params = [p for p in model.parameters() if (id(p) in tower) == in_tower]
        groups += [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay, "scale": scale},
                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "scale": scale}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98), eps=1e-8)


def training_samples(recipe: Recipe, step: int) -> list:
    """Stage 2's pictures for ``step``: the next ``batch_size`` train seeds (``Recipe.first_types``)."""
    items = split_samples("train", recipe.batch_size, start=step * recipe.batch_size)
    return [make_sample(seed, first=kind if recipe.first_types else None) for seed, kind in items]


def train_batch(encoder: ShapesEncoder, recipe: Recipe, step: int, pad_id: int) -> dict:
    encoded = [encoder.encode(s, conversation(s, recipe)) for s in training_samples(recipe, step)]
    return collate(encoded, pad_id, max_tiles(recipe))


def conversation(sample, recipe: Recipe) -> list:
    """One training conversation: the sample's first ``turns`` questions, then the training-only turns
    (other sides' spatial questions, grounding), then the caption — last, as earlier turns could copy
    their answers from it (and from grounding turns placed before them; neither exists at inference)."""
    asked = sample.questions[: recipe.turns]
    extra = other_sides(sample, asked) if recipe.all_sides else []
    caption = describe(sample, kind_first=bool(recipe.kind_first and sample.seed % 2))
    return asked + extra + locate(sample, recipe.locate) + [caption] * recipe.describe


def validation_set(encoder: ShapesEncoder, recipe: Recipe) -> tuple[list, list[str]]:
    """Single-turn encodings of the first ``num_val`` validation questions (types cycle)."""
    items = split_samples("validation", recipe.num_val)
    encoded = []
    for seed, kind in items:
        sample = make_sample(seed, first=kind)
        encoded.append(encoder.encode(sample, sample.questions[:1]))
    return encoded, [kind for _, kind in items]


def train(recipe: Recipe, out: Path, log=print) -> dict:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(recipe)
    save_processor(recipe, out)
    model = build_model(recipe, tokenizer)
    encoder = ShapesEncoder(tokenizer, preprocess_spec(out, model.config))
    val_encoded, val_kinds = validation_set(encoder, recipe)
    num_params = sum(p.numel() for p in model.parameters())
    log(f"model: {num_params / 1e6:.2f} M parameters, vocab {len(tokenizer)}; recipe {json.dumps(recipe.to_dict())}")
    start = time.perf_counter()
    vision_losses = pretrain_vision(model, encoder.spec, recipe, lambda s, n: lr_at(recipe, s, n, recipe.vision_warmup_steps), log)
    vision_seconds = time.perf_counter() - start
    history = _loop(model, encoder, recipe, tokenizer.pad_token_id, (val_encoded, val_kinds), log)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"recipe": recipe.to_dict(), "num_parameters": num_params, "vision_seconds": vision_seconds,
              "vision_loss": vision_losses[::25], **history}
    (out / "training_log.json").write_text(json.dumps(record, indent=1))
    return record


def _loop(model, encoder, recipe: Recipe, pad_id: int, val, log) -> dict:
    opt = make_optimizer(model, recipe)
    start, losses, evals = time.perf_counter(), [], []
    for step in range(recipe.steps):
        model.train()
        batch = train_batch(encoder, recipe, step, pad_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, step) * group["scale"]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0:
            elapsed = time.perf_counter() - start
            log(f"step {step + 1}/{recipe.steps} loss {np.mean(losses[-25:]):.4f} lr {lr_at(recipe, step):.2e} "
                f"{elapsed / (step + 1):.2f} s/step, {elapsed / 60:.1f} min")
        if (step + 1) % recipe.eval_every == 0 or step + 1 == recipe.steps:
            acc = teacher_forced_accuracy(model, *val, pad_id, max_tiles(recipe))
            evals.append({"step": step + 1, **acc})
            log(f"validation @ {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return {"train_seconds": time.perf_counter() - start, "loss": losses[::25], "validation": evals}


def parse_recipe(argv=None) -> tuple[Recipe, Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    for f in dataclasses.fields(Recipe):
        if f.type in ("int", "float"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.type == "int" else float, default=None)
    args = p.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
                 if getattr(args, f.name, None) is not None}
    return Recipe(**overrides), Path(args.out)


def main(argv=None) -> int:
    recipe, out = parse_recipe(argv)
    record = train(recipe, out, log=lambda m: print(m, flush=True))
    print(f"trained in {record['train_seconds'] / 60:.1f} min; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
