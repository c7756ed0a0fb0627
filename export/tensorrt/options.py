"""What ``vlmforge build`` was asked for, and how each graph is built to honour it (pure host logic).

Precision: the request names the engine's precision per graph; the graph must already carry
whatever the builder cannot invent. TensorRT turns an FP32 graph into FP16 on its own (the
weakly typed FP16 flag), but INT8 comes only from explicit Q/DQ nodes in the graph (no
calibrator) and weight-only INT8/INT4 only from DequantizeLinear on blocked weights feeding
MatMul — both written offline by ``vlmforge.calibration``, which sets the graph's precision
in the manifest. Everything the graph carries itself is built STRONGLY_TYPED: the ONNX types
are the truth, which is also the only mode TensorRT 11 keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...runtime.errors import VlmforgeError
from ..per_graph import parse_per_graph
from ...runtime.manifest import GraphSpec, Manifest

PRECISIONS = ("fp32", "fp16", "int8", "int8-weight", "int4-weight")
# request → the graph precisions (manifest) it can be built from
BUILDABLE_FROM = {
    "fp32": ("fp32",),
    "fp16": ("fp32", "fp16"),
    "int8": ("int8",),  # Q/DQ on activations and weights
    "int8-weight": ("int8-weight",),  # DequantizeLinear on int8 blocked weights
    "int4-weight": ("int4-weight",),
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GraphPlan:
    """How one graph is built: its engine precision, network mode and builder flags."""

    precision: str
    strongly_typed: bool
    flags: tuple[str, ...] = ()  # trt.BuilderFlag names: "FP16", "INT8", "GPU_FALLBACK"


@dataclass
class BuildOptions:
    precision: dict[str, str] = field(default_factory=dict)  # graph → requested precision
    max_tiles: int | None = None  # default: what the preprocessing spec can produce
    max_context: int | None = None  # default: the manifest's llm.max_context
    workspace_gb: float = 4.0
    timing_cache: str | None = None
    dla_graphs: tuple[str, ...] = ()
    dla_core: int = 0


def parse_precision(text: str | None, graph_names: list[str]) -> dict[str, str]:
    """``"fp16"`` (every graph) or ``"vision=fp16,connector=fp16,llm=int8"`` → {graph: precision}."""
    if not text:
        return {}
    return parse_per_graph(text, graph_names, _check_precision, VlmforgeError, "vision=fp16,connector=fp16,llm=fp16")


def _check_precision(value: str, where: str) -> str:
    if value not in PRECISIONS:
        raise VlmforgeError(f"unknown precision {value!r} for {where}; choose one of {', '.join(PRECISIONS)}")
    return value


def float_dtype(spec: GraphSpec) -> str:
    """The graph's floating type: that of its first floating-point input."""
    for t in spec.inputs:
        if t.dtype in FLOAT_DTYPES:
            return t.dtype
    return "float32"


def plan_graph(name: str, spec: GraphSpec, requested: str | None, on_dla: bool = False) -> GraphPlan:
    """Decide network mode and flags for one graph, or say what the graph is missing."""
    carried = spec.precision
    if carried == "int8-dynamic":
        raise VlmforgeError(
            f"the {name} graph is w8a8 (int8-dynamic: MatMulInteger with activations quantised at run time), which "
            f"runs on ONNX Runtime only; for TensorRT quantise the fp32 export's {name} graph with --precision "
            f"{name}=int8 or {name}=w8 --target tensorrt"
        )
    if (spec.quantization or {}).get("kv_cache"):
        raise VlmforgeError(
            f"the {name} graph keeps an int8 KV cache (quantize --kv-cache int8), which runs on ONNX Runtime only; "
            "build TensorRT engines from an export quantised without --kv-cache int8"
        )
    if carried not in PRECISIONS:
        raise VlmforgeError(
            f"the {name} graph's precision in the manifest is {carried!r}, which the TensorRT builder does not "
            f"know; known: {', '.join(PRECISIONS)}. Re-export or re-quantise the model with this vlmforge version"
        )
    wanted = requested or (carried if carried != "fp32" else "fp16")
    if carried not in BUILDABLE_FROM[wanted]:
        raise VlmforgeError(_mismatch(name, wanted, carried))
    if on_dla and wanted not in ("fp16", "int8"):
        raise VlmforgeError(f"DLA runs FP16 or INT8 only; build the {name} graph with --precision {name}=fp16 or drop --dla {name}")
    fallback = ("GPU_FALLBACK",) if on_dla else ()
    if wanted == "fp16" and carried == "fp32":
        return GraphPlan(wanted, strongly_typed=False, flags=("FP16",) + fallback)
    if wanted == "int8" and float_dtype(spec) == "float32":
        # Q/DQ layers run INT8; FP16 lets the layers between them leave FP32 (trtexec --fp16 --int8)
        return GraphPlan(wanted, strongly_typed=False, flags=("FP16", "INT8") + fallback)
    return GraphPlan(wanted, strongly_typed=True, flags=fallback)


def _mismatch(name: str, wanted: str, carried: str) -> str:
    if wanted in ("int8", "int8-weight", "int4-weight"):
        return (
            f"cannot build the {name} graph as {wanted}: its graph is {carried} and TensorRT takes INT8/INT4 only from "
            f"explicit quantisation in the graph (no calibrator). Quantise it first with vlmforge.calibration, "
            f"or build it as {' or '.join(p for p, src in BUILDABLE_FROM.items() if carried in src)}"
        )
    return (
        f"cannot build the {name} graph as {wanted}: its graph is already {carried}; "
        f"build it as {carried} (--precision {name}={carried}) or re-export the float model"
    )


def plan_build(manifest: Manifest, options: BuildOptions) -> dict[str, GraphPlan]:
    unknown = set(options.precision) - set(manifest.graphs) | set(options.dla_graphs) - set(manifest.graphs)
    if unknown:
        raise VlmforgeError(f"unknown graph(s) {sorted(unknown)}; this model has {', '.join(manifest.graphs)}")
    return {
        name: plan_graph(name, spec, options.precision.get(name), on_dla=name in options.dla_graphs)
        for name, spec in manifest.graphs.items()
    }
