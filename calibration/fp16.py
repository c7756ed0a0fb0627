"""FP16 graphs: ONNX Runtime's float16 converter, with FP32 kept where calibration measured
activations that FP16 cannot hold.

Rule (measured, per node): a node stays FP32 when any float tensor it reads or writes reached
|x| > 65504 / ``OVERFLOW_MARGIN`` on the calibration data — the margin leaves headroom for
inputs beyond the calibration set (RMSNorm's x², attention logits and residual streams with
outlier channels are what trips it in real checkpoints). Magnitudes of at least
``MASK_SENTINEL`` are additive-mask sentinels (finfo(float32).min): FP16 clamps them to
−65504, which still masks (exp underflows to 0), so they do not block a node.

I/O: pixel_values, image features, inputs_embeds and logits stay float32 (the runtime's feeds
and outputs do not change); the LLM's KV cache becomes float16 — half the cache memory — and
the manifest declares it (``llm.kv_dtype``, the past/present tensor dtypes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import onnx_io

FP16_MAX = 65504.0
OVERFLOW_MARGIN = 4.0
MASK_SENTINEL = 1e30


def overflow_nodes(model, absmax: dict[str, float]) -> dict[str, str]:
    """node name → why it stays FP32 (the tensor and its measured |x| max)."""
    limit = FP16_MAX / OVERFLOW_MARGIN
    blocked = {}
    for node in model.graph.node:
        for t in (*node.input, *node.output):
            m = absmax.get(t, 0.0)
            if limit < m < MASK_SENTINEL:
                blocked[node.name] = f"{t}: |x| reached {m:.4g} > {limit:.0f} (65504/{OVERFLOW_MARGIN:g})"
                break
    return blocked


def kv_io_names(model) -> list[str]:
    return [v.name for v in (*model.graph.input, *model.graph.output)
            if v.name.startswith(("past_key_values.", "present.", "new."))]  # new.*: the append layout


def convert_fp16(src: Path, dst: Path, absmax: dict[str, float]) -> dict:
    """Write the FP16 version of ``src`` to ``dst``; returns the manifest's quantization record."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
    structure = onnx.load(str(src), load_external_data=False)
    blocked = overflow_nodes(structure, absmax)
    kv = set(kv_io_names(structure))
    keep = [v.name for v in (*structure.graph.input, *structure.graph.output) if v.name not in kv]
    with onnx_io.staged(src) as staged:  # the converter writes a shape-inferred copy beside its input
        model = convert_float_to_float16(str(staged), keep_io_types=keep, node_block_list=list(blocked))
    onnx_io.save(model, dst)
    return {
        "method": "onnxruntime.transformers.float16",
        "fp32_nodes": blocked,
        "overflow_limit": FP16_MAX / OVERFLOW_MARGIN,
        "float32_io": keep,
        "kv_dtype": "float16" if kv else None,
    }
