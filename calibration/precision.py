"""Precision words: what users type (``int8``, ``w4`` …) and what the manifest records.

The manifest's names are the TensorRT builder's (``export/tensorrt/options.py``): ``fp32``,
``fp16``, ``int8`` (Q/DQ on activations and weights), ``int8-weight`` and ``int4-weight``
(weight-only); ``int8-dynamic`` (W8A8, activations quantised per token at run time) is ONNX
Runtime's alone. Users may type either spelling; ``parse_precision`` returns manifest names.
"""

from __future__ import annotations

from ..export.per_graph import parse_per_graph
from ..runtime.errors import VlmforgeError

GRAPHS = ("vision", "connector", "llm")
# user word → manifest precision
ALIASES = {
    "fp32": "fp32",
    "fp16": "fp16",
    "int8": "int8",
    "w8": "int8-weight",
    "int8-weight": "int8-weight",
    "w4": "int4-weight",
    "int4-weight": "int4-weight",
    "w8a8": "int8-dynamic",
    "int8-dynamic": "int8-dynamic",
}
WEIGHT_ONLY_BITS = {"int8-weight": 8, "int4-weight": 4}
DYNAMIC_INT8 = "int8-dynamic"  # int8 weights per channel, activations per token at run time (ONNX Runtime)
TARGETS = ("onnxruntime", "tensorrt")


class QuantizationError(VlmforgeError):
    """A quantisation request that cannot be honoured; the message says why and what to do."""


def parse_precision(text: str, graph_names=GRAPHS) -> dict[str, str]:
    """``"fp16"`` (every graph) or ``"vision=int8,connector=fp16,llm=w4"`` → {graph: manifest precision}.

    Graphs not named keep fp32.
    """
    if not text or not text.strip():
        raise QuantizationError("--precision is empty; e.g. --precision int8 or --precision vision=int8,llm=w4")
    chosen = parse_per_graph(text, graph_names, _word, QuantizationError, "vision=int8,connector=fp16,llm=w4")
    return {name: chosen.get(name, "fp32") for name in graph_names}


def _word(value: str, where: str) -> str:
    if value not in ALIASES:
        raise QuantizationError(
            f"unknown precision {value!r} for {where}; choose one of fp32, fp16, int8, w8 (int8-weight), w4 (int4-weight), "
            "w8a8 (int8-dynamic)"
        )
    return ALIASES[value]


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise QuantizationError(f"unknown --target {target!r}; choose one of {', '.join(TARGETS)}")
    return target
