"""W8A8 with dynamic activations (``--precision w8a8``, manifest ``int8-dynamic``, ONNX Runtime only).

Every MatMul with a constant 2-D weight becomes an integer GEMM: the weight is stored int8, one
symmetric scale per output channel (the bytes of ``w8``); the activation is quantised at run
time, one symmetric scale per token (row), so no calibration is needed:

    s = max(|x|, axis=-1) / 127                    (..., 1)   per token
    xq = uint8(round(x / s) + 128)                  (..., K)   zero point 128 (symmetric int8, shifted)
    y = float(MatMulInteger(xq, Wq, 128)) · s · w_scale        (..., N)

uint8 × int8 is the form ONNX Runtime's integer GEMM (MLAS, AVX-512 VNNI / AVX-VNNI / Arm
SDOT-I8MM) runs fastest; int8 × int8 takes a slow path. Measured on one K=896 × N=9728 GEMM of
600 rows (2-core Zen 4, ORT 1.32): fp32 MatMul 48 ms, MatMulNBits w4/w8 (accuracy level 4)
29 / 27 ms, this 16 ms; one row (a decode step) 0.08 ms against w8's 0.07 and w4's 0.11.

The cost is accuracy: one scale per token lets an outlier channel coarsen the whole row (the
reason LLM W8A8 schemes smooth activations first); ``vlmforge verify`` measures it against the
float export, and the README's precision table reports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import onnx_io
from .weight_only import constant_matmuls, per_channel_int8

METHOD = "vlmforge.calibration.dynamic_int8"


def quantize_dynamic_int8(src: Path, dst: Path) -> dict:
    """Write the W8A8 version of ``src`` to ``dst``; returns the manifest's quantization record."""
    model = onnx_io.load(src)
    count = rewrite_matmuls(model)
    onnx_io.save(model, dst)
    return {
        "method": METHOD,
        "weight_form": "matmulinteger",
        "bits": 8,
        "symmetric": True,
        "granularity": "weights per output channel; activations per token, at run time",
        "num_quantized_matmuls": count,
    }


def rewrite_matmuls(model) -> int:
    """In place: each constant-weight MatMul → per-token quantisation + MatMulInteger + rescale.
    An activation feeding several MatMuls is quantised once; a shared weight is stored once."""
    from onnx import helper, numpy_helper

    weights = {n.input[1] for n, _ in constant_matmuls(model)}
    inits = {i.name: i for i in model.graph.initializer}
    _constants(model)
    nodes, quantised, stored, count = [], {}, set(), 0
    reduce_axes = opset(model) >= 18  # ReduceMax takes its axes as an input from opset 18
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x, w = node.input[0], node.input[1]
        if x not in quantised:
            nodes += _quantise_rows(x, reduce_axes)
            quantised[x] = (f"{x}_q8", f"{x}_q8_scale")
        xq, xs = quantised[x]
        if w not in stored:
            stored.add(w)
            q, scale = per_channel_int8(numpy_helper.to_array(inits[w]))
            model.graph.initializer.remove(inits[w])
            model.graph.initializer.extend([numpy_helper.from_array(q, f"{w}_int8"), numpy_helper.from_array(scale, f"{w}_scale")])
        y = node.output[0]
        name, count = node.name or y, count + 1
        nodes += [
            helper.make_node("MatMulInteger", [xq, f"{w}_int8", "q8_zero_point"], [f"{y}_i32"], name=f"{name}_i8"),
            helper.make_node("Cast", [f"{y}_i32"], [f"{y}_f32"], to=1, name=f"{name}_i8_cast"),
            helper.make_node("Mul", [f"{y}_f32", xs], [f"{y}_row"], name=f"{name}_i8_rows"),
            helper.make_node("Mul", [f"{y}_row", f"{w}_scale"], [y], name=f"{name}_i8_channels"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def _quantise_rows(x: str, reduce_axes_input: bool) -> list:
    """x (..., K) float → ``{x}_q8`` (..., K) uint8 and ``{x}_q8_scale`` (..., 1) float32."""
    from onnx import helper

    return round_rows(x, f"{x}_rounded", f"{x}_q8_scale", "q8_", reduce_axes_input) + [
        helper.make_node("Add", [f"{x}_rounded", "q8_shift"], [f"{x}_shifted"], name=f"{x}_shifted_Add"),  # [1, 255]
        helper.make_node("Cast", [f"{x}_shifted"], [f"{x}_q8"], name=f"{x}_q8_Cast", to=2),  # uint8
    ]


def round_rows(x: str, rounded: str, scale: str, constants: str, reduce_axes_input: bool) -> list:
    """x (..., K) float32 → ``rounded`` (..., K) = round(x / s) in [-127, 127] (still float) and
    ``scale`` s (..., 1) = max(|x|) / 127, at least 1e-12 (an all-zero row keeps a positive scale).
    ``constants``: the prefix of the graph's ``last_axis`` / ``inv127`` / ``tiny`` initializers."""
    from onnx import helper

    n = lambda op, ins, out, **kw: helper.make_node(op, ins, [out], name=f"{out}_{op}", **kw)  # noqa: E731
    amax = (n("ReduceMax", [f"{rounded}_abs", f"{constants}last_axis"], f"{rounded}_amax", keepdims=1)
            if reduce_axes_input else n("ReduceMax", [f"{rounded}_abs"], f"{rounded}_amax", keepdims=1, axes=[-1]))
    return [
        n("Abs", [x], f"{rounded}_abs"),
        amax,
        n("Mul", [f"{rounded}_amax", f"{constants}inv127"], f"{rounded}_s0"),
        n("Max", [f"{rounded}_s0", f"{constants}tiny"], scale),
        n("Div", [x, scale], f"{rounded}_scaled"),
        n("Round", [f"{rounded}_scaled"], rounded),
    ]


def opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _constants(model) -> None:
    from onnx import numpy_helper

    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "q8_last_axis"),
        numpy_helper.from_array(np.array(1 / 127, np.float32), "q8_inv127"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "q8_tiny"),
        numpy_helper.from_array(np.array(128, np.float32), "q8_shift"),
        numpy_helper.from_array(np.array(128, np.uint8), "q8_zero_point"),
    ])  # fmt: skip
