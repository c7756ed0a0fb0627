"""The ``split`` scheme (Idefics3, SmolVLM / SmolVLM2): resize by the longest edge, cut square tiles, add a global view.

Mirrors ``Idefics3ImageProcessorPil`` (``SmolVLMImageProcessorPil`` is the same code) in transformers 5.24:

* resize so the longest edge is ``size[0]`` (size.longest_edge; small pictures are enlarged), the
  other edge ``int(long / aspect)`` rounded up to even, then, if either edge passes 4096, shrunk
  under it (``_resize_output_size_scale_below_upper_bound``);
* with ``split_image`` (do_image_splitting): resize again so both edges are multiples of
  ``tile_size`` (max_image_size.longest_edge; ``resize_for_vision_encoder``), cut it row-major into
  tile_size² tiles and append that image resized to tile_size² (the global view) — unless it is a
  single tile already, then it is the only frame and the grid is (0, 0);
* without: the first resize, then a resize to tile_size² (grid (0, 0)).

Every resize is Pillow's on uint8 (the processor rescales after resizing), so the chain's
intermediate pictures are rounded to uint8 in between: the first one or two resizes make the
``source`` picture here (``split_source``, NumPy or C), and the tiles and global view are
``Placement``s on it — crops of it and one resize. Each frame is ``tokens_per_tile`` tokens.
"""

from __future__ import annotations

import math

import numpy as np

from .plan import Placement, Tile, normalise_lut, run_placement
from .spec import PreprocessSpec, TileLayout

MAX_IMAGE_SIZE = 4096  # the processors' absolute bound on the resized picture's edges


def longest_edge_size(h: int, w: int, longest: int) -> tuple[int, int]:
    """(h, w) after ``_resize_output_size_rescale_to_max_len`` then ``…_scale_below_upper_bound(4096)``."""
    aspect = w / h
    if w >= h:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        h, w = longest, int(longest * aspect)
        w += w % 2
    h, w = max(h, 1), max(w, 1)
    aspect = w / h
    if w >= h and w > MAX_IMAGE_SIZE:
        w, h = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif h > w and h > MAX_IMAGE_SIZE:
        h, w = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(h, 1), max(w, 1)


def tile_multiple_size(h: int, w: int, t: int) -> tuple[int, int]:
    """(h, w) after ``resize_for_vision_encoder``: both edges rounded up to multiples of ``t``."""
    aspect = w / h
    if w >= h:
        w = math.ceil(w / t) * t
        h = math.ceil(int(w / aspect) / t) * t
    else:
        h = math.ceil(h / t) * t
        w = math.ceil(int(h * aspect) / t) * t
    return h, w


def split_sizes(image_hw: tuple[int, int], spec: PreprocessSpec) -> list[tuple[int, int]]:
    """The sizes the picture is resized through before tiles are cut: [first] or [first, tile multiple]."""
    first = longest_edge_size(*image_hw, spec.size[0])
    return [first, tile_multiple_size(*first, spec.tile_size)] if spec.split_image else [first]


def split_grid(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """(rows, cols) of local tiles; (0, 0) when the picture is one global frame only."""
    h, w = split_sizes(image_hw, spec)[-1]
    t = spec.tile_size
    if not spec.split_image or (h <= t and w <= t):
        return 0, 0
    return (h - t) // t + 1, (w - t) // t + 1


def split_plan(source_hw: tuple[int, int], grid: tuple[int, int], spec: PreprocessSpec) -> list[Placement]:
    """Placements on the source picture: the local tiles (crops, no resize) 0 … rows·cols − 1
    row-major, then the global view (the source resized to tile_size²) at index rows·cols."""
    rows, cols = grid
    t = spec.tile_size
    tiles = tuple(Tile(r * cols + c, r * t, c * t, t, t) for r in range(rows) for c in range(cols))
    full = Placement((t, t), (0, 0), (Tile(rows * cols, 0, 0, t, t),))
    return [Placement(tuple(source_hw), (0, 0), tiles), full] if tiles else [full]


def split_source(image: np.ndarray, spec: PreprocessSpec, backend: str = "numpy") -> np.ndarray:
    """(h, w, 3) uint8: the picture after the chain's resizes, each rounded to uint8 as Pillow does."""
    for size in split_sizes(image.shape[:2], spec):
        if image.shape[:2] == size:
            continue  # Pillow's resize to the same size is a copy
        if backend == "c":
            from .cpu.run import resize_hcw as resize_c

            hcw = resize_c(image, size[0], size[1], spec.resample)
        else:
            from .resample import resize_hcw

            hcw = resize_hcw(image, size[0], size[1], spec.resample)
        image = np.ascontiguousarray(hcw.transpose(0, 2, 1))
    return image


def split_layout(image_hw: tuple[int, int], spec: PreprocessSpec) -> TileLayout:
    rows, cols = split_grid(image_hw, spec)
    n = rows * cols + 1
    t = spec.tile_size
    return TileLayout(n, (t, t), n * spec.tokens_per_tile, (rows, cols))


def split_output_shape(image_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int, int, int]:
    return (split_layout(image_hw, spec).num_tiles, 3, spec.tile_size, spec.tile_size)


def source_grid(source_hw: tuple[int, int], spec: PreprocessSpec) -> tuple[int, int]:
    """``split_grid`` read off the source picture (``split_source``'s output) instead of the input."""
    h, w = source_hw
    t = spec.tile_size
    if not spec.split_image or (h <= t and w <= t):
        return 0, 0
    return h // t, w // t


def split_source_plan(source_hw: tuple[int, int], spec: PreprocessSpec):
    """(placements, output shape, layout) on a source picture — what the CUDA kernel runs after the
    host has made the source (its chain of uint8 resizes is not one placement)."""
    rows, cols = source_grid(source_hw, spec)
    n, t = rows * cols + 1, spec.tile_size
    layout = TileLayout(n, (t, t), n * spec.tokens_per_tile, (rows, cols))
    return split_plan(source_hw, (rows, cols), spec), (n, 3, t, t), layout


def split_tiles(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray, backend: str = "numpy") -> TileLayout:
    """Write the local tiles, then the global view, into ``out`` (num_tiles, 3, t, t)."""
    layout = split_layout(image.shape[:2], spec)
    source = split_source(image, spec, backend)
    lut = normalise_lut(spec, out.dtype)
    for pl in split_plan(source.shape[:2], layout.grid, spec):
        run_placement(source, pl, spec, out, lut, backend)
    return layout
