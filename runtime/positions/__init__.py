"""Position ids for the LLM graph, as the manifest declares them (``llm.positions``).

Each scheme is a small module that turns a prepared prompt (and the token grid of each image)
into the prefill's position_ids and says where decoding continues; the decode loop only calls
``Positions.prefill`` and ``Positions.decode`` and never knows which scheme it runs.
"""

from __future__ import annotations

from ..manifest import PositionSpec
from . import consecutive, mrope, shared_span
from .base import Positions

_SCHEMES = {"consecutive": consecutive.plan, "mrope": mrope.plan, "shared_span": shared_span.plan}


def plan_positions(spec: PositionSpec, seq_len: int, image_slots: list[tuple[int, int]],
                   token_grids: list[tuple[int, int, int]], time_steps: list[float] | None = None) -> Positions:
    """``image_slots``: (first position, count) per image or video in prompt order; ``token_grids``:
    its (t, rows, cols) of LLM tokens; ``time_steps``: its temporal position step (1 for an image)."""
    steps = time_steps if time_steps is not None else [1.0] * len(token_grids)
    return _SCHEMES[spec.scheme](seq_len, image_slots, token_grids, steps, spec)


__all__ = ["Positions", "plan_positions"]
