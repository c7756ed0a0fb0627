"""INT8 KV cache (``quantize --kv-cache int8``): the append-layout LLM graph keeps its keys and
values as int8, one float32 scale per (token, head) — off by default, for long contexts.

Per cache input (layer i's key or value), the rewrite of the llm graph is:

    past_key_values.i.key        (b, kv, past, D) int8      was float
    past_key_values.i.key_scale  (b, kv, past, 1) float32   new input
        → Cast · scale (→ the graph's float type) feeds what read the float past before

    new.i.key        (b, kv, s, D) int8       s = amax(|k|, D) / 127, q = round(k / s)
    new.i.key_scale  (b, kv, s, 1) float32
        and the step's own attention reads dequant(q) · s, not k: a token attends to the same
        keys whether they came in its own chunk or from the cache, so chunked prefill, one-shot
        prefill and decode agree

The cache is then D + 4 bytes per (token, head) instead of 4·D (64-wide heads: 68 against 256,
3.8× smaller; against FP16's 128, 1.9×). Symmetric per-vector scales follow llama.cpp's q8_0
cache type (one scale per 32 values) and KIVI's per-token values; keys' outlier channels make
per-token keys the coarser half, which ``vlmforge verify`` measures (README: precision table).

Where the bytes go on ONNX Runtime's CPU kernels: the dequantised cache of one layer is a
transient float tensor (the arena reuses it layer after layer), so peak memory follows the int8
cache, but a decode step still reads the int8 cache and writes + reads a float copy — this is a
memory format, not a speed-up, on CPU. Only the append layout: a concat graph would re-quantise
the whole cache every step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import onnx_io
from .dynamic_int8 import opset, round_rows
from .precision import QuantizationError

METHOD = "vlmforge.calibration.kv_int8"
SCALE_SUFFIX = "_scale"


def quantize_kv_cache(src: Path, dst: Path) -> dict:
    """Write ``src`` (an append-layout llm graph, any weight precision) with an int8 cache to
    ``dst``; returns the record for the manifest's llm quantization entry."""
    model = onnx_io.load(src)
    count = rewrite_cache(model)
    onnx_io.save(model, dst)
    return {"method": METHOD, "granularity": "one symmetric scale per token per KV head", "num_cache_inputs": count}


def rewrite_cache(model) -> int:
    """In place; returns the number of cache inputs rewritten (2 per layer)."""
    from onnx import TensorProto

    graph = model.graph
    past = [v for v in graph.input if v.name.startswith("past_key_values.")]
    new = {v.name: v for v in graph.output if v.name.startswith("new.")}
    if not past or len(new) != len(past):
        found = "present.* outputs (the concat layout)" if any(o.name.startswith("present.") for o in graph.output) \
            else "no cache inputs"
        raise QuantizationError(f"--kv-cache int8 needs an append-layout llm graph (past_key_values.* in, new.* out); "
                                f"this one has {found}: re-export with --kv-layout append (the default where the "
                                "model allows it)")
    graph.initializer.extend(_constants())
    axes_input = opset(model) >= 18  # ReduceMax takes its axes as an input from opset 18
    renames, first, after = {}, [], {}  # after: producer output → the nodes that go right behind it
    for value in past:
        elem = value.type.tensor_type.elem_type
        renames[value.name] = f"{value.name}_dequant"
        first += _dequantise(value.name, f"{value.name}{SCALE_SUFFIX}", renames[value.name], elem)
        graph.input.append(_scale_info(value, f"{value.name}{SCALE_SUFFIX}"))
        value.type.tensor_type.elem_type = TensorProto.INT8
    for name, value in new.items():
        elem = value.type.tensor_type.elem_type
        renames[name] = f"{name}_dequant"
        after[f"{name}_float"] = (_quantise(f"{name}_float", name, f"{name}{SCALE_SUFFIX}", elem, axes_input)
                                  + _dequantise(name, f"{name}{SCALE_SUFFIX}", renames[name], elem))
        graph.output.append(_scale_info(value, f"{name}{SCALE_SUFFIX}"))
        value.type.tensor_type.elem_type = TensorProto.INT8
    nodes = list(first)  # they read graph inputs only
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x in renames:
                node.input[i] = renames[x]
        for i, y in enumerate(node.output):
            if y in new:  # the float new keys/values: quantised right after, read only through dequant
                node.output[i] = f"{y}_float"
        nodes.append(node)
        for y in node.output:
            nodes += after.pop(y, [])
    if after:
        raise QuantizationError(f"--kv-cache int8: no node of the llm graph writes {sorted(after)[0][:-6]} "
                                "(a graph input passed straight through?); re-export the model")
    del graph.node[:]
    graph.node.extend(nodes)
    return len(past)


def _dequantise(q: str, scale: str, out: str, elem: int) -> list:
    """q (…, D) int8, scale (…, 1) float32 → out (…, D) in the graph's float type ``elem``."""
    from onnx import TensorProto, helper

    f32 = f"{out}_f32" if elem != TensorProto.FLOAT else out
    nodes = [helper.make_node("Cast", [q], [f"{out}_cast"], to=TensorProto.FLOAT, name=f"{out}_Cast"),
             helper.make_node("Mul", [f"{out}_cast", scale], [f32], name=f"{out}_Mul")]
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [f32], [out], to=elem, name=f"{out}_CastBack"))
    return nodes


def _quantise(x: str, q: str, scale: str, elem: int, axes_input: bool = True) -> list:
    """x (…, D) float → q (…, D) int8 = round(x / s), s (…, 1) float32 = max(|x|) / 127 (≥ 1e-12)."""
    from onnx import TensorProto, helper

    x32 = x if elem == TensorProto.FLOAT else f"{x}_f32"
    cast = [] if elem == TensorProto.FLOAT else [helper.make_node("Cast", [x], [x32], name=f"{x32}_Cast", to=TensorProto.FLOAT)]
    return cast + round_rows(x32, f"{q}_rounded", scale, "kv8_", axes_input) + [
        helper.make_node("Cast", [f"{q}_rounded"], [q], name=f"{q}_Cast", to=TensorProto.INT8)]


def _scale_info(value, name: str):
    """(…, D) value info → (…, 1) float32 one named ``name``."""
    from onnx import TensorProto, helper

    dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [*dims[:-1], 1])


def _constants() -> list:
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.array([-1], np.int64), "kv8_last_axis"),
            numpy_helper.from_array(np.array(1 / 127, np.float32), "kv8_inv127"),
            numpy_helper.from_array(np.array(1e-12, np.float32), "kv8_tiny")]
