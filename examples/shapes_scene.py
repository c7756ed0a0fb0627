"""Scene geometry and drawing for the shapes task: which shapes go where, and the picture itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# saturated colours, far from each other and from the grey backgrounds
COLORS = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (35, 165, 60),
    "blue": (35, 75, 215),
    "purple": (140, 50, 185),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# picture aspect ratios (w, h): 2:1 and 1:2 select a 1×2 / 2×1 AnyRes grid, the others 2×2
ASPECTS = ((1, 2), (2, 3), (3, 4), (1, 1), (4, 3), (3, 2), (2, 1))
MIN_AREA_RATIO = 1.6  # the largest shape's area over any other's
SIZE_RANGE = (0.3, 0.5)  # bounding-box side as a fraction of the picture's short side
GAP = 3  # pixels between bounding boxes
COLOR_JITTER = 12


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    x0: int  # bounding box in pixels, inclusive
    y0: int
    x1: int
    y1: int

    @property
    def side(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def area(self) -> float:
        if self.kind == "circle":
            return math.pi * (self.side / 2) ** 2
        return _polygon_area(outline(self.kind, self.x0, self.y0, self.side))


def outline(kind: str, x0: float, y0: float, s: float) -> list[tuple[float, float]]:
    """Polygon vertices of a non-circle shape inside the square box (x0, y0, side s)."""
    if kind == "square":
        return [(x0, y0), (x0 + s - 1, y0), (x0 + s - 1, y0 + s - 1), (x0, y0 + s - 1)]
    if kind == "triangle":  # pointing up, base = height = s
        return [(x0 + (s - 1) / 2, y0), (x0 + s - 1, y0 + s - 1), (x0, y0 + s - 1)]
    cx, cy, r = x0 + (s - 1) / 2, y0 + (s - 1) / 2, (s - 1) / 2
    if kind == "star":  # five points, inner radius 0.45 of the outer
        return [
            (cx + rr * math.sin(k * math.pi / 5), cy - rr * math.cos(k * math.pi / 5))
            for k in range(10)
            for rr in [r if k % 2 == 0 else 0.45 * r]
        ]
    if kind == "cross":  # a plus sign, arms one third of the side wide
        a = r / 3
        return [(cx + x, cy + y) for x, y in [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
                                              (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]]
    raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPES)}")


def _polygon_area(points) -> float:
    xs, ys = np.array(points).T
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def sample_scene(rng: np.random.Generator, min_shapes: int = 1) -> tuple[list[Shape], tuple[int, int]]:
    """Shapes (distinct kinds and colours, non-touching, a clear largest) and the picture (h, w)."""
    n = int(rng.integers(min_shapes, 5))
    aw, ah = ASPECTS[int(rng.integers(len(ASPECTS)))]
    short = int(rng.integers(72, 161))
    h, w = (short, short * aw // ah) if aw >= ah else (short * ah // aw, short)
    kinds = [SHAPES[int(i)] for i in rng.choice(len(SHAPES), n, replace=False)]
    names = list(COLORS)
    colors = [names[int(i)] for i in rng.choice(len(names), n, replace=False)]
    while True:  # rejection sampling: a few tries at most, even for four shapes
        sides = [int(round(short * rng.uniform(*SIZE_RANGE))) for _ in range(n)]
        boxes = _place(rng, sides, h, w)
        if boxes is None:
            continue
        shapes = [Shape(k, c, x, y, x + s - 1, y + s - 1) for k, c, (x, y), s in zip(kinds, colors, boxes, sides)]
        if _clear_largest(shapes):
            return shapes, (h, w)


def _place(rng, sides: list[int], h: int, w: int) -> list[tuple[int, int]] | None:
    """Top-left corners with GAP pixels between boxes, or None when a shape finds no room."""
    placed: list[tuple[int, int, int]] = []
    for s in sides:
        for _ in range(100):
            x, y = int(rng.integers(2, w - s - 1)), int(rng.integers(2, h - s - 1))
            if all(x + s + GAP <= px or px + ps + GAP <= x or y + s + GAP <= py or py + ps + GAP <= y
                   for px, py, ps in placed):
                placed.append((x, y, s))
                break
        else:
            return None
    return [(x, y) for x, y, _ in placed]


def _clear_largest(shapes: list[Shape]) -> bool:
    areas = sorted((s.area for s in shapes), reverse=True)
    return len(areas) < 2 or areas[0] >= MIN_AREA_RATIO * areas[1]


def draw_scene(rng: np.random.Generator, shapes: list[Shape], h: int, w: int) -> np.ndarray:
    """The picture: a textured grey background with the shapes drawn on it, (h, w, 3) uint8."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(rng, h, w))
    draw = ImageDraw.Draw(img)
    for s in shapes:
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3)
        _draw_shape(draw, s, tuple(int(v) for v in np.clip(np.array(COLORS[s.color]) + jitter, 0, 255)))
    return np.asarray(img)


def label_map(shapes: tuple[Shape, ...], h: int, w: int) -> np.ndarray:
    """(h, w) uint8: 0 for background, i + 1 where shape i is drawn (the same pixels as draw_scene)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for i, s in enumerate(shapes):
        _draw_shape(draw, s, i + 1)
    return np.asarray(img)


def _draw_shape(draw, s: Shape, fill) -> None:
    if s.kind == "circle":
        draw.ellipse([s.x0, s.y0, s.x1, s.y1], fill=fill)
    else:
        draw.polygon(outline(s.kind, s.x0, s.y0, s.side), fill=fill)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes (four angles), a checkerboard or plain noise, in a slightly tinted grey, (h, w, 3) uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        angle = [0.0, 45.0, 90.0, 135.0][int(rng.integers(4))] * math.pi / 180
        period = rng.uniform(5, 14)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0
    elif kind == 1:
        cell = int(rng.integers(4, 13))
        wave = ((yy // cell + xx // cell) % 2) > 0
    else:
        wave = np.zeros((h, w), dtype=bool)
    contrast = rng.uniform(10, 28)
    grey = rng.uniform(115, 215) + rng.uniform(-8, 8, 3)  # (3,) per-channel tint
    noise = rng.normal(0, rng.uniform(2, 10), (h, w, 1))
    rgb = grey[None, None, :] + contrast * (wave[..., None] - 0.5) + noise
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
