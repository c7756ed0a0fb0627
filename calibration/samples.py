"""Calibration and evaluation inputs: image + prompt pairs.

Images come from a folder (unreadable files are reported and skipped; none readable is an
error) or from ``synthetic_images`` (deterministic drawings, for tests and for ``verify``
when no images are given). Prompts come one per line from a text file; a line with the
image placeholder is used as written, any other line is wrapped as one user turn with one
image through the model's own chat template — the chat format stays in the family's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.errors import ImageError
from ..runtime.images import load_image
from .precision import QuantizationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

DEFAULT_PROMPTS = [
    "What is in the picture?",
    "Describe the image.",
    "How many shapes are there?",
    "Which shape is red?",
    "What colour is the background?",
    "Is there a circle in the image?",
    "Describe the largest shape.",
    "What is left of the triangle?",
]


@dataclass
class Sample:
    name: str  # file name or "synthetic-<i>"
    image: np.ndarray  # (H, W, 3) uint8 RGB
    prompt: str  # with the image placeholder, or plain text to wrap with the chat template


@dataclass
class SampleSet:
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)  # "file: reason" for every unreadable image
    source: str = ""  # where the images came from, for reports


def read_images(folder: str | Path) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Every readable image in ``folder`` (sorted by name) and the reasons others were skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; pass a folder of PNG/JPEG files with --images")
    images, skipped = [], []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            images.append((path.name, load_image(path)))
        except ImageError as e:
            skipped.append(f"{path.name}: {e}")
    if not images:
        raise QuantizationError(
            f"no readable image in {root} ({len(skipped)} file(s) skipped as unreadable); "
            f"add PNG/JPEG files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return images, skipped


def read_prompts(path: str | Path | None) -> list[str]:
    """One prompt per non-empty line (``\\n`` written as two characters becomes a newline)."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {p} does not exist; pass a text file with one prompt per line")
    prompts = [line.replace("\\n", "\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise QuantizationError(f"prompt file {p} holds no prompt; write one prompt per line")
    return prompts


def synthetic_images(count: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> list[tuple[str, np.ndarray]]:
    """Deterministic pictures: a tinted background with a few filled shapes, varying in size and aspect."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h = int(size[0] * rng.uniform(0.6, 1.6))
        w = int(size[1] * rng.uniform(0.6, 1.6))
        img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            x1, y1 = x0 + int(rng.integers(6, max(7, w // 2))), y0 + int(rng.integers(6, max(7, h // 2)))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = ("rectangle", "ellipse", "polygon")[int(rng.integers(0, 3))]
            if shape == "polygon":
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
            else:
                getattr(draw, shape)([x0, y0, x1, y1], fill=fill)
        out.append((f"synthetic-{seed}-{i}", np.asarray(img, dtype=np.uint8)))
    return out


def pair_samples(images, prompts: list[str], num_samples: int | None, skipped=(), source: str = "") -> SampleSet:
    """``num_samples`` pairs (default: as many as the longer list), cycling images and prompts.

    Prompts advance once per pass over the images, so every image meets several prompts.
    """
    n = max(len(images), len(prompts)) if num_samples is None else int(num_samples)
    if n < 1:
        raise QuantizationError(f"--samples must be at least 1, got {n}")
    samples = []
    for i in range(n):
        name, rgb = images[i % len(images)]
        prompt = prompts[(i + i // len(images)) % len(prompts)]
        samples.append(Sample(name, rgb, prompt))
    return SampleSet(samples, list(skipped), source)


def load_samples(images: str | Path | None, prompts: str | Path | None, num_samples: int | None, seed: int = 0) -> SampleSet:
    """Pairs from an image folder and prompt file, or synthetic pictures and built-in prompts."""
    if images is None:
        count = num_samples or len(DEFAULT_PROMPTS)
        return pair_samples(synthetic_images(count, seed), read_prompts(prompts), num_samples, source=f"synthetic (seed {seed})")
    found, skipped = read_images(images)
    return pair_samples(found, read_prompts(prompts), num_samples, skipped, source=str(images))
