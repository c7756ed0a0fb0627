"""Stage 1 of the recipe: pretrain the vision tower on the shapes pictures with dense patch labels.

Real LLaVA models start from a pretrained CLIP tower; here the tower starts from random weights,
and learning shapes only through the answers (one label per question) is slow: a from-scratch
ViT sees a shape's kind only in its edge patches. So first every patch token of every tile (the
layer the projector reads) is trained to name the shape kind and colour under its centre, whether
that shape is the largest, and which band of the picture (column, row) the patch lies in, and on
the base view whether its shape is the leftmost / rightmost / topmost / bottommost one, with
linear heads that are thrown away afterwards. Stage 2 then trains the whole model with the
LLaVA loss.
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels import PreprocessSpec, tile_and_patchify
from ..kernels.anyres import patch_output_size, select_best_resolution
from .shapes_data import COLORS, EXTREMES, SHAPES, Sample, extremes, make_sample, split_samples
from .shapes_scene import label_map

IGNORE_INDEX = -100  # patches of the grid's zero padding


def patch_centres(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Picture coordinates (y, x) of every patch centre, each (tiles, P·P) float, as anyres lays
    tiles out: the base view stretches the picture to tile²; the grid fits it (aspect kept) into the
    best pinpoint, centred on padding. Centres in the padding fall outside [0, h) × [0, w)."""
    h, w = image_hw
    t, p = spec.tile_size, spec.patch_size
    per = t // p
    centre = (np.arange(per) + 0.5) * p  # (P,) within a tile
    cy, cx = np.meshgrid(centre, centre, indexing="ij")  # (P, P)
    ys, xs = [cy * h / t], [cx * w / t]  # the base view
    bh, bw = select_best_resolution(h, w, spec.grid_pinpoints)
    nh, nw = patch_output_size(h, w, (bh, bw))
    top, left = (bh - nh) // 2, (bw - nw) // 2
    for r in range(bh // t):
        for c in range(bw // t):
            ys.append((r * t + cy - top) * h / nh)
            xs.append((c * t + cx - left) * w / nw)
    return np.stack(ys).reshape(len(ys), -1), np.stack(xs).reshape(len(xs), -1)


def patch_targets(sample: Sample, spec: PreprocessSpec, bins: int = 8) -> tuple[np.ndarray, ...]:
    """(kind, colour, largest, column, row) class of every patch, each (tiles, P·P) int64: kind /
    colour 0 for background, i + 1 for SHAPES[i] / the i-th colour; largest 1 on the scene's largest
    shape, else 0; column / row: which of ``bins`` equal bands of the picture holds the patch centre
    (so a patch token knows where in the picture it is, whichever tile it comes from: what
    left/right/above/below questions compare); IGNORE_INDEX in the grid's padding."""
    h, w = sample.image.shape[:2]
    labels = label_map(sample.shapes, h, w)  # (h, w): 0 background, shape index + 1
    ys, xs = patch_centres((h, w), spec)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    which = labels[np.clip(ys, 0, h - 1).astype(int), np.clip(xs, 0, w - 1).astype(int)]
    kind_of = np.array([0] + [SHAPES.index(s.kind) + 1 for s in sample.shapes])
    color_of = np.array([0] + [list(COLORS).index(s.color) + 1 for s in sample.shapes])
    biggest = 1 + max(range(len(sample.shapes)), key=lambda i: sample.shapes[i].area)
    targets = [kind_of[which], color_of[which], (which == biggest).astype(np.int64),
               np.clip(xs * bins / w, 0, bins - 1).astype(np.int64), np.clip(ys * bins / h, 0, bins - 1).astype(np.int64)]
    for t in targets:
        t[~inside] = IGNORE_INDEX
    return tuple(t.astype(np.int64) for t in targets)


def base_view_owners(sample: Sample, spec: PreprocessSpec) -> np.ndarray:
    """(P·P,) int64: the shape each base-view patch stands for — the one under its centre, or, for a
    shape no centre hits, the background patch holding that shape's own centre — else -1."""
    h, w = sample.image.shape[:2]
    t, p = spec.tile_size, spec.patch_size
    per = t // p
    ys, xs = patch_centres((h, w), spec)
    which = label_map(sample.shapes, h, w)[np.clip(ys[0], 0, h - 1).astype(int), np.clip(xs[0], 0, w - 1).astype(int)]
    owner = which.astype(np.int64) - 1
    for i, s in enumerate(sample.shapes):
        if not (owner == i).any():
            cell = min(int((s.y0 + s.y1) / 2 * t / h) // p, per - 1) * per + min(int((s.x0 + s.x1) / 2 * t / w) // p, per - 1)
            if owner[cell] < 0:
                owner[cell] = i
    return owner


def extreme_targets(sample: Sample, spec: PreprocessSpec, num_tiles: int) -> np.ndarray:
    """(num_tiles, P·P, 4) float32: on the base view, bit d of a patch is 1 when the shape it stands for
    (``base_view_owners``) is the scene's EXTREMES[d] shape (its box wholly beyond every other's), else 0;
    grid-tile patches -1 (ignored: a tile sees only its part of the picture). Stage 2 then answers
    "What color is the leftmost shape?" as it answers "Which shape is the largest?": one look-up of the
    patch that carries the flag."""
    per = spec.tile_size // spec.patch_size
    beyond = extremes(sample.shapes, sample.image.shape[:2])
    owner = base_view_owners(sample, spec)
    out = np.full((num_tiles, per * per, len(EXTREMES)), -1.0, dtype=np.float32)
    out[0] = 0.0
    for d, word in enumerate(EXTREMES):
        if word in beyond:
            out[0, owner == sample.shapes.index(beyond[word]), d] = 1.0
    return out


def layout_targets(sample: Sample, spec: PreprocessSpec, num_tiles: int) -> np.ndarray:
    """(num_tiles, P·P, 4) int64: on every base-view patch, the colour index (in COLORS) of the scene's
    EXTREMES[d] shape for each side d — IGNORE_INDEX where no shape lies beyond all others there —
    and IGNORE_INDEX on the grid tiles. The same scene-wide answer on all 9 base-view tokens: stage 2
    reads "What color is the leftmost shape?" off any of them, a look-up that needs no binding."""
    per = spec.tile_size // spec.patch_size
    beyond = extremes(sample.shapes, sample.image.shape[:2])
    names = list(COLORS)
    table = [names.index(beyond[w].color) if w in beyond else IGNORE_INDEX for w in EXTREMES]
    out = np.full((num_tiles, per * per, len(EXTREMES)), IGNORE_INDEX, dtype=np.int64)
    out[0] = table
    return out


def vision_batch(spec: PreprocessSpec, seeds: list[int], bins: int, extreme: bool,
                 layout: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """All tiles of the pictures of ``seeds`` (tiles, 3, t, t) and their patch labels: 5 × (tiles, P·P)
    classes, then with ``extreme`` the extreme-shape flags (tiles, P·P, 4), then with ``layout`` the
    extreme shapes' colours (tiles, P·P, 4)."""
    pixels, targets = [], []
    for seed in seeds:
        sample = make_sample(seed)
        tiles, _ = tile_and_patchify(sample.image, spec)
        pixels.append(tiles)
        extra = (extreme_targets(sample, spec, len(tiles)),) if extreme else ()
        extra += (layout_targets(sample, spec, len(tiles)),) if layout else ()
        targets.append(patch_targets(sample, spec, bins) + extra)
    return (torch.from_numpy(np.concatenate(pixels)),
            [torch.from_numpy(np.concatenate(column)) for column in zip(*targets)])


def pretrain_vision(model, spec: PreprocessSpec, recipe, lr_at, log) -> list[float]:
    """``recipe.vision_steps`` steps on the train split (seeds after stage 2's); returns the losses."""
    tower = model.model.vision_tower
    hidden = tower.config.hidden_size
    classes = (len(SHAPES) + 1, len(COLORS) + 1, 2) + (recipe.position_bins,) * (2 if recipe.position_bins else 0)
    weights = (1.0, 1.0, 1.0, recipe.position_weight, recipe.position_weight)
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, n) for n in classes])
    params = list(tower.parameters()) + list(heads.parameters())
    if recipe.extreme_weight:  # created only when used: without it the random stream is as it was
        extreme_head = torch.nn.Linear(hidden, len(EXTREMES))
        params += list(extreme_head.parameters())
    if recipe.layout_weight:
        layout_head = torch.nn.Linear(hidden, len(EXTREMES) * len(COLORS))
        params += list(layout_head.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.vision_lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)
    first = recipe.steps * recipe.batch_size  # stage 2 uses the seeds before this one
    losses, hits, extreme_hits, layout_hits = [], [], [], []  # kind accuracy on shape patches; flags found; layout right
    tower.train()
    for step in range(recipe.vision_steps):
        seeds = [s for s, _ in split_samples("train", recipe.vision_batch_size, start=first + step * recipe.vision_batch_size)]
        pixels, targets = vision_batch(spec, seeds, max(1, recipe.position_bins), extreme=bool(recipe.extreme_weight),
                                       layout=bool(recipe.layout_weight))
        layout = targets.pop() if recipe.layout_weight else None  # (tiles, P·P, 4), IGNORE_INDEX where ignored
        extreme = targets.pop() if recipe.extreme_weight else None  # (tiles, P·P, 4), -1 where ignored
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe.vision_steps) * recipe.vision_lr / recipe.lr
        out = tower(pixel_values=pixels, output_hidden_states=True)
        tokens = out.hidden_states[-1][:, 1:]  # (tiles, P·P, hidden): the layer the projector reads, CLS dropped
        logits = [head(tokens) for head in heads]  # (tiles, P·P, classes) each
        loss = sum(weight * torch.nn.functional.cross_entropy(x.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
                   for x, target, weight in zip(logits, targets, weights))  # zip: position targets unused without their heads
        if recipe.extreme_weight:
            ext_logits, known = extreme_head(tokens), extreme >= 0
            loss = loss + recipe.extreme_weight * torch.nn.functional.binary_cross_entropy_with_logits(ext_logits[known], extreme[known])
            true = extreme > 0
            extreme_hits.append(float((ext_logits[true] > 0).float().mean()) if true.any() else float("nan"))
        if recipe.layout_weight:
            x = layout_head(_upper_layers(tower, out.hidden_states, recipe.layout_layers)).unflatten(-1, (len(EXTREMES), len(COLORS)))
            loss = loss + recipe.layout_weight * torch.nn.functional.cross_entropy(x.flatten(0, 2), layout.flatten(), ignore_index=IGNORE_INDEX)
            known = layout >= 0
            layout_hits.append(float((x.argmax(-1) == layout)[known].float().mean()))
        on_shapes = targets[0] > 0
        hits.append(float((logits[0].argmax(-1) == targets[0])[on_shapes].float().mean()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0:
            log(f"vision step {step + 1}/{recipe.vision_steps} loss {np.mean(losses[-25:]):.4f} "
                f"shape-patch kind accuracy {np.mean(hits[-25:]):.3f}"
                + (f", extreme flags found {np.nanmean(extreme_hits[-25:]):.3f}" if extreme_hits else "")
                + (f", layout colours right {np.nanmean(layout_hits[-25:]):.3f}" if layout_hits else ""))
    return losses


def _upper_layers(tower, hidden_states, k: int) -> torch.Tensor:
    """(tiles, P·P, hidden): the tower's last ``k`` layers run again on layer −k−1's detached output.

    A scene-wide target trained through the whole tower slows its patch-kind learning (measured:
    kind accuracy 0.48 vs 0.92 after 1500 steps); through only the top layers the lower ones learn
    the patch labels undisturbed, and the top layers still gather the scene into every token."""
    h = hidden_states[-1 - k].detach()
    for layer in tower.encoder.layers[-k:]:
        h = layer(h, None)
    return h[:, 1:]
