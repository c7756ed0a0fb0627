"""Boxes in an answer, as the manifest's ``image.grounding`` declares them, with coordinates 0 …
scale (1000) over the picture → ``Box`` in pixels of the original picture.

marks (Qwen-VL): ``<ref>the cat</ref><box>(x1,y1),(x2,y2)</box>``: a box follows its ``<ref>``
label, or the previous box's (several boxes for one phrase); a box with no label before it has
label None. brackets (CogVLM / CogAgent): ``the cat [[x1,y1,x2,y2]]``, several boxes of one phrase
``[[x1,y1,x2,y2;x1,y1,x2,y2]]``; the label is the text since the previous box or sentence end (None when empty).

Which picture: the latest one in the prompt (Qwen-VL's own drawing helper draws on the last
picture; CogVLM takes one), so boxes are scaled to the last image given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .manifest import GroundingSpec

_PAIR = r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)"


@dataclass(frozen=True)
class Box:
    label: str | None
    x1: float  # pixels of the original picture, left-top to right-bottom
    y1: float
    x2: float
    y2: float
    image: int  # which picture of the request (index into images=)


_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_QUAD = ",".join([_NUM] * 4)
_BRACKETS = re.compile(r"\[\[(" + _QUAD + r"(?:;" + _QUAD + r")*)\]\]")


def parse_boxes(text: str, spec: GroundingSpec, picture_sizes: list[tuple[int, int]]) -> list[Box]:
    """``picture_sizes``: (height, width) of each picture given. Malformed boxes are skipped."""
    if not picture_sizes:
        return []
    if spec.format == "brackets":
        return _bracket_boxes(text, spec, picture_sizes)
    (ro, rc), (bo, bc) = spec.ref, spec.box
    pattern = re.compile(f"{re.escape(ro)}(.*?){re.escape(rc)}|{re.escape(bo)}\\s*{_PAIR}\\s*,\\s*{_PAIR}\\s*{re.escape(bc)}",
                         re.DOTALL)
    h, w = picture_sizes[-1]
    index = len(picture_sizes) - 1
    boxes, label = [], None
    for m in pattern.finditer(text):
        if m.group(1) is not None:
            label = m.group(1).strip()
            continue
        x1, y1, x2, y2 = (float(m.group(i)) for i in range(2, 6))
        boxes.append(Box(label, _clip(x1 * w / spec.scale, w), _clip(y1 * h / spec.scale, h),
                         _clip(x2 * w / spec.scale, w), _clip(y2 * h / spec.scale, h), index))
    return boxes


def _bracket_boxes(text: str, spec: GroundingSpec, picture_sizes: list[tuple[int, int]]) -> list[Box]:
    h, w = picture_sizes[-1]
    index, boxes, cursor = len(picture_sizes) - 1, [], 0
    for m in _BRACKETS.finditer(text):
        before = re.split(r"[.!?\n]|\]\]", text[cursor : m.start()])[-1].strip(" ,:;")
        cursor = m.end()
        for quad in m.group(1).split(";"):
            x1, y1, x2, y2 = (float(v) for v in quad.split(","))
            boxes.append(Box(before or None, _clip(x1 * w / spec.scale, w), _clip(y1 * h / spec.scale, h),
                             _clip(x2 * w / spec.scale, w), _clip(y2 * h / spec.scale, h), index))
    return boxes


def _clip(v: float, limit: int) -> float:
    return min(max(v, 0.0), float(limit))
