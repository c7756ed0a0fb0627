"""The image-token budget of a call: ``max_pixels=`` for native-resolution models (Qwen2-VL).

The export's ``preprocess.max_pixels`` is its bound (what the vision graph and TensorRT profiles
were sized for); a call may ask for fewer pixels — fewer image tokens, a faster first token —
never more.
"""

from __future__ import annotations

import dataclasses
import numbers

from ..kernels.spec import PreprocessSpec
from .errors import PromptError


def call_spec(spec: PreprocessSpec, max_pixels) -> PreprocessSpec:
    """The export's spec with this call's ``max_pixels`` (None: the export's own)."""
    if max_pixels is None:
        return spec
    if spec.scheme != "native":
        raise PromptError(f"max_pixels= sets a native-resolution model's image budget; this model tiles its images "
                          f"({spec.scheme!r} preprocessing) and takes none")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral):
        raise PromptError(f"max_pixels must be an integer number of pixels, got {max_pixels!r}")
    window = (spec.patch_size * spec.merge_size) ** 2
    if max_pixels < max(window, spec.min_pixels):
        raise PromptError(f"max_pixels={max_pixels} is below {max(window, spec.min_pixels)}, the smallest budget "
                          f"(one {spec.patch_size * spec.merge_size}-pixel merge window, and min_pixels "
                          f"{spec.min_pixels}); raise it")
    if max_pixels > spec.max_pixels:
        raise PromptError(f"max_pixels={max_pixels} is above this export's bound of {spec.max_pixels} pixels; "
                          f"ask for at most that, or re-export with --max-pixels {max_pixels}")
    return dataclasses.replace(spec, max_pixels=int(max_pixels))
