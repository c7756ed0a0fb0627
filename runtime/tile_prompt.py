"""Tiled pictures whose tiles are separate runs of slots amid text (Idefics3 / SmolVLM).

The manifest's ``image.tile_prompt`` says what text stands around each tile's run; here each
image placeholder of the prompt becomes that text for its picture's tile grid — one placeholder
per tile — and each picture's embeddings are cut into one item per tile, so the prompt builder
expands every tile's placeholder to its own ``tokens_per_tile`` slots, as the model's processor
lays them out (``<fake_token_around_image><row_1_col_1><image>×n…\\n\\n<fake_token_around_image>
<global-img><image>×n<fake_token_around_image>``).
"""

from __future__ import annotations

import dataclasses

from .errors import PromptError
from .manifest import TilePromptSpec
from .media import Media


def render_tiles(spec: TilePromptSpec, grid: tuple[int, int], image_token: str) -> str:
    """The text of one picture with a (rows, cols) grid of local tiles: ``image_token`` once per tile,
    local tiles row-major (``separator`` between them), then the global view (before them when
    ``global_first``); (0, 0): ``single`` alone."""
    rows, cols = grid
    if rows == 0 and cols == 0:
        return spec.single.replace("{image}", image_token)
    rows_text = []
    for r in range(1, rows + 1):
        tiles = [spec.tile.replace("{row}", str(r)).replace("{col}", str(c)).replace("{image}", image_token)
                 for c in range(1, cols + 1)]
        rows_text.append(spec.separator.join(tiles) + spec.row_end)
    local, whole = spec.separator.join(rows_text), spec.global_view.replace("{image}", image_token)
    return whole + local if spec.global_first else local + whole


def expand_tiled_images(text: str, spec: TilePromptSpec, image_token: str, grids: list[tuple[int, int]]) -> str:
    """Each image placeholder of ``text`` → ``render_tiles`` of the next picture's grid."""
    pieces = text.split(image_token)
    if len(pieces) - 1 != len(grids):
        raise PromptError(f"the prompt has {len(pieces) - 1} image placeholder(s) but {len(grids)} image(s) were "
                          f"given; put one {image_token} where each image belongs")
    return pieces[0] + "".join(render_tiles(spec, g, image_token) + rest for g, rest in zip(grids, pieces[1:]))


def tile_runs(media: Media) -> list[Media]:
    """A picture's (tiles · tokens_per_tile, d) embeddings → one item per tile, in tile order."""
    n = media.layout.num_tiles
    per = media.embeds.shape[0] // n
    assert per * n == media.embeds.shape[0], (media.embeds.shape, media.layout)
    one = dataclasses.replace(media.layout, num_tiles=1, num_image_tokens=per)
    return [Media(media.embeds[i * per : (i + 1) * per], one, media.time_step, key=f"{media.key}#tile{i}",
                  size=media.size) for i in range(n)]
