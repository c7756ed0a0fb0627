"""``vlmforge demo``: build a model, export it, run it on generated pictures, print the profile.

Until the bundled trained model lands, the model is a tiny random LLaVA (so its answers are
noise): the demo shows the whole path — checkpoint → ONNX + manifest → runtime — and where
the time goes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def demo_picture(seed: int, size=(240, 320)) -> np.ndarray:
    """A procedural scene: coloured shapes on a striped background, (H, W, 3) uint8."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    img = Image.new("RGB", (w, h), (235, 235, 225))
    draw = ImageDraw.Draw(img)
    for y in range(0, h, 12):
        draw.rectangle([0, y, w, y + 5], fill=(220, 222, 210))
    for _ in range(int(rng.integers(1, 4))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        s = int(rng.integers(30, 60))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + s, y0 + s], fill=color)
    return np.asarray(img)


def run_demo(out: str | None = None) -> int:
    from .export import export_model
    from .export.tiny import make_tiny_llava
    from .runtime import Pipeline
    from .runtime.profile import profile

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_llava(Path(tmp) / "tiny-llava", image_size=336, patch_size=14, max_positions=1024)
        out_dir = Path(out) if out else Path(tmp) / "export"
        print(f"exporting a tiny random LLaVA (CLIP 336/14 + Llama) to {out_dir} …")
        export_model(model_dir, out_dir, overwrite=True)
        pipe = Pipeline.load(out_dir)
        prompt = "USER: <image>\nWhat is in the picture? ASSISTANT:"
        for seed in range(2):
            result = pipe.generate(prompt, images=[demo_picture(seed)], max_new_tokens=24)
            print(f"\nQ: What is in the picture?  (picture {seed})\nA: {result.text!r}  "
                  f"[random weights: the answer is noise]")
        print("\nper-stage profile (5 runs, 24 new tokens):")
        print(profile(pipe, prompt, [demo_picture(0)], runs=5, warmup=1, max_new_tokens=24).table())
    return 0
