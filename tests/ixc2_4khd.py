"""The IXC2-4KHD oracle: the IXC-2.5 oracle's own HD functions (../shared/reference/internlm-xcomposer2)
re-parametrised to 4KHD's numbers by rewriting their source, for tests only.

The published 4KHD code (``HD_transform`` / ``padding_336`` in its ixc_utils.py and
``CLIPVisionTower.forward`` in its build_mlp.py) is the oracle's code with: 336 for 560 everywhere,
24×24 patches (``N == 24 ** 2``), 12×12 merged tokens per tile (12 for 20, 144 for 400), the
centred padding the oracle keeps as a comment (``top_padding = int((tar - height)/2)``) and without
IXC-2.5's ``scale = min(np.ceil(width / 560), scale)`` cap. Every rewrite below must match the
oracle's text exactly once (else this fails: the oracle changed and the rewrite must be re-checked).
"""

from __future__ import annotations

import contextlib
import inspect
import textwrap
import types

import torch


def _rewrite(func, edits: list[tuple[str, str, int]], namespace: dict):
    """``func`` recompiled in ``namespace`` after each (old, new, expected count) replacement."""
    source = textwrap.dedent(inspect.getsource(func))
    for old, new, count in edits:
        found = source.count(old)
        assert found == count, f"{func.__name__}: {old!r} occurs {found}× in the oracle, expected {count}"
        source = source.replace(old, new)
    scope = dict(namespace)
    exec(compile(source, f"<4KHD {func.__name__}>", "exec"), scope)  # noqa: S102 - the oracle's own text
    return scope[func.__name__]


def functions(h):
    """(Image_transform, CLIPVisionTower.forward) of 4KHD, from the harness ``h``'s modules."""
    ixc = inspect.getmodule(h.mx.Image_transform)
    padding = _rewrite(ixc.padding_336, [("top_padding = 0 # int((tar - height)/2)",
                                          "top_padding = int((tar - height)/2)", 1)], vars(ixc))
    transform = _rewrite(ixc.Image_transform, [
        ("    scale = min(np.ceil(width / 560), scale)\n", "", 1),  # 4KHD has no cap
        ("padding_336(img, 560)", "padding_336(img, 336)", 1),
        ("560", "336", 1),  # new_w = int(scale * 560)
    ], {**vars(ixc), "padding_336": padding})
    forward = _rewrite(h.build_mlp.CLIPVisionTower.forward, [
        ("560", "336", 10), ("40 ** 2", "24 ** 2", 1), ("20", "12", 6), ("400", "144", 1),
    ], vars(h.build_mlp))
    return transform, forward


def tower_336(h, width: int):
    """The harness's tiny CLIP config at 336 px (4KHD's tower), ``width`` wide with 64-wide heads
    (4KHD's folder names no CLIP config, so the export reads the heads off the width)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**{**h.TINY_CLIP, "image_size": 336, "hidden_size": width, "intermediate_size": 2 * width,
                               "num_attention_heads": width // 64, "projection_dim": width})


def build_tiny_4khd(h, seed: int, clip, **overrides):
    """The harness's tiny model with a 336-px tower (its shims read the CLIP config from
    ``_TINY_CLIP_CFG``), its vit's forward replaced by 4KHD's."""
    _, forward = functions(h)
    saved = h._TINY_CLIP_CFG[0]
    h._TINY_CLIP_CFG[0] = clip
    try:
        model, config, tok = h.build_tiny(seed, **overrides)
    finally:
        h._TINY_CLIP_CFG[0] = saved
    model.vit.forward = types.MethodType(forward, model.vit)
    return model, config, tok


@contextlib.contextmanager
def transform_4khd(h):
    """encode_img tiles with 4KHD's HD_transform while inside (it looks the name up in its module)."""
    transform, _ = functions(h)
    saved = h.mx.Image_transform
    h.mx.Image_transform = transform
    try:
        with torch.no_grad():
            yield
    finally:
        h.mx.Image_transform = saved
