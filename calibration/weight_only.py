"""Weight-only INT8 / INT4: the weights of every MatMul with a constant 2-D weight are stored
in 8 or 4 bits (symmetric, block-wise along K); activations stay float. Decode reads every
weight once per token, so its speed follows the weight bytes.

Two forms, recorded in the manifest as ``weight_form``:

- ``matmulnbits`` (``--target onnxruntime``): ONNX Runtime's ``MatMulNBitsQuantizer`` →
  ``com.microsoft.MatMulNBits``, its fused kernels on CPU and CUDA.
- ``dequantizelinear`` (``--target tensorrt``): standard ONNX ``DequantizeLinear`` on the
  quantised weight feeding ``MatMul`` — TensorRT cannot parse MatMulNBits. INT4 is blocked
  (``block_size`` along K, the quantiser's QDQ mode); INT8 is per output channel (written here:
  the quantiser's QDQ mode is INT4-only, and TensorRT takes block quantisation only for INT4).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import onnx_io
from .precision import QuantizationError

BLOCK_SIZES = (32, 64, 128, 256)
# default block along K per weight width. Measured on the Qwen2-0.5B-like decoder (2-core Zen 4, ORT 1.32,
# accuracy level 4, one decode step after a 600-token prompt): blocks of 32 cost 1.6× (w8) and 1.5× (w4)
# the time of blocks of 128 — per-block scales and the activation re-quantisation per block dominate
# MatMulNBits, not the weight bytes. Fidelity on the default model: see README (precision table).
DEFAULT_BLOCK_SIZES = {8: 128, 4: 128}


def block_size_for(model, bits: int, block_size: int | None, target: str) -> int:
    """The block size asked for, else the default for ``bits`` — for TensorRT INT4 (which needs K
    divisible by the block) the largest of 128, 64, 32 that divides every K of ``model``."""
    if block_size is not None:
        return int(block_size)
    if target == "tensorrt" and bits == 4:
        ks = [k for _, (k, _) in constant_matmuls(model)]
        return next((b for b in (128, 64, 32) if all(k % b == 0 for k in ks)), 32)
    return DEFAULT_BLOCK_SIZES[bits]


def constant_matmuls(model) -> list[tuple[object, tuple[int, ...]]]:
    """(MatMul node, weight shape) for every MatMul whose B is a 2-D initializer."""
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [(n, weights[n.input[1]]) for n in model.graph.node
            if n.op_type == "MatMul" and len(weights.get(n.input[1], ())) == 2]


def check_weight_only(name: str, structure, bits: int, block_size: int | None, target: str) -> None:
    """Refuse, with the reason, what this graph cannot take."""
    block_size = block_size_for(structure, bits, block_size, target)
    if block_size not in BLOCK_SIZES:
        raise QuantizationError(f"--block-size {block_size} is not supported; choose one of {', '.join(map(str, BLOCK_SIZES))}")
    found = constant_matmuls(structure)
    if not found:
        raise QuantizationError(
            f"the {name} graph has no MatMul with a constant 2-D weight, so weight-only quantisation has nothing "
            f"to store in {bits} bits; use int8 or fp16 for {name}"
        )
    if target == "tensorrt" and bits == 4:
        ragged = [n.name for n, (k, _) in found if k % block_size]
        if ragged:
            raise QuantizationError(
                f"TensorRT's INT4 block quantisation needs K divisible by the block size, but {len(ragged)} MatMul(s) "
                f"of the {name} graph are not ({', '.join(ragged[:3])} …) with --block-size {block_size}; "
                "use --block-size 32 or --target onnxruntime"
            )


def quantize_weight_only(src: Path, dst: Path, bits: int, block_size: int | None, target: str, accuracy_level: int | None) -> dict:
    """Write the weight-only version of ``src`` to ``dst``; returns the manifest's quantization record."""
    model = onnx_io.load(src)
    block_size = block_size_for(model, bits, block_size, target)
    if target == "tensorrt" and bits == 8:
        count = dequantize_int8_per_channel(model)
        method, blocks = "vlmforge.calibration.weight_only", "per output channel"
    else:
        count = _nbits(model, bits, block_size, target, accuracy_level)
        method, blocks = "onnxruntime.quantization.matmul_nbits_quantizer", f"blocks of {block_size} along K"
    onnx_io.save(model, dst)
    form = "dequantizelinear" if target == "tensorrt" else "matmulnbits"
    record = {
        "method": method,
        "weight_form": form,
        "bits": bits,
        "symmetric": True,
        "granularity": blocks,
        "num_quantized_matmuls": count,
    }
    if form == "matmulnbits" and accuracy_level:
        record["accuracy_level"] = accuracy_level  # 4: int8 activations inside the kernel (VNNI / dp4a)
    return record


def _nbits(model, bits: int, block_size: int, target: str, accuracy_level: int | None) -> int:
    """Quantise in place with ORT's MatMulNBitsQuantizer; returns how many MatMuls changed."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    before = len(constant_matmuls(model))
    fmt = QuantFormat.QDQ if target == "tensorrt" else QuantFormat.QOperator
    quantizer = MatMulNBitsQuantizer(
        model, bits=bits, block_size=block_size, is_symmetric=True, quant_format=fmt,
        accuracy_level=accuracy_level if fmt == QuantFormat.QOperator else None, op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    result = quantizer.model.model
    if result is not model:
        model.CopyFrom(result)
    return before - len(constant_matmuls(model))


def dequantize_int8_per_channel(model) -> int:
    """MatMul(x, W) → MatMul(x, DequantizeLinear(Wq int8, scale (N,), axis=1)), in place; returns the count."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, done, count = [], set(), 0
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        dq_out = w.name + "_dequantized"
        count += 1
        if w.name in done:  # a weight shared by several MatMuls is dequantised once
            nodes.append(helper.make_node("MatMul", [node.input[0], dq_out], list(node.output), name=node.name))
            continue
        done.add(w.name)
        q, scale = per_channel_int8(numpy_helper.to_array(w))
        model.graph.initializer.remove(w)
        model.graph.initializer.extend([numpy_helper.from_array(q, w.name + "_int8"),
                                        numpy_helper.from_array(scale, w.name + "_scale")])
        nodes.append(helper.make_node("DequantizeLinear", [w.name + "_int8", w.name + "_scale"], [dq_out],
                                      name=(node.name or w.name) + "_DQ_int8", axis=1))
        nodes.append(helper.make_node("MatMul", [node.input[0], dq_out], list(node.output), name=node.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def per_channel_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) float → (K, N) int8 in [-127, 127] and (N,) float32 scales, one per output channel."""
    weight = weight.astype(np.float32)
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
    return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), scale.astype(np.float32)
