"""ONNX Runtime on the GPU: the second GPU route, through the same ``OrtSession`` / decoder.

``onnxruntime-cuda``: CUDAExecutionProvider. ``onnxruntime-tensorrt``: TensorrtExecutionProvider
(CUDA for what TensorRT does not take), engines cached under ``<model>/ort_trt_cache`` and one
explicit optimisation profile per graph — without it ORT would rebuild the LLM engine on every
decode step, since each step's past length leaves the range seen so far. ORT's TensorRT EP
takes one profile, so the LLM's prefill and decode profiles are merged (min of mins, max of
maxes, decode's opt: it is nearly every call).
"""

from __future__ import annotations

from pathlib import Path

from .errors import VlmforgeError
from .kv_cache import OrtDecoder
from .manifest import Manifest

PROVIDERS = {
    "onnxruntime-cuda": ("CUDAExecutionProvider",),
    "onnxruntime-tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
}


def check_providers(backend: str, available: tuple[str, ...]) -> None:
    missing = [p for p in PROVIDERS[backend] if p not in available]
    if missing:
        raise VlmforgeError(
            f"backend {backend} needs ONNX Runtime's {', '.join(missing)}, but the installed onnxruntime offers only "
            f"{', '.join(available)}; pip uninstall onnxruntime && pip install onnxruntime-gpu "
            "(on Jetson: the onnxruntime-gpu wheel for your JetPack from the Jetson Zoo)"
        )


def merged_profile(profiles: list[dict]) -> dict:
    """Several profiles → one covering them all, with the last profile's opt shapes."""
    out = {}
    for name in profiles[0]:
        lows, opts, highs = zip(*(p[name] for p in profiles))
        out[name] = (tuple(map(min, zip(*lows))), opts[-1], tuple(map(max, zip(*highs))))
    return out


def provider_list(backend: str, root: Path, manifest: Manifest, graph: str) -> list:
    if backend == "onnxruntime-cuda":
        return ["CUDAExecutionProvider"]
    from ..export.tensorrt.profiles import graph_profiles, resolve_limits
    from ..export.tensorrt.trtexec import shape_spec

    tiles, context = resolve_limits(manifest, None, None)
    profile = merged_profile(graph_profiles(manifest, graph, tiles, context))
    precision = manifest.graphs[graph].precision
    options = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(root / "ort_trt_cache"),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": precision in ("fp32", "fp16"),
        "trt_int8_enable": precision == "int8",  # explicit Q/DQ only: no calibration table is given
        "trt_profile_min_shapes": shape_spec(profile, 0),
        "trt_profile_opt_shapes": shape_spec(profile, 1),
        "trt_profile_max_shapes": shape_spec(profile, 2),
    }
    return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]


class OrtGpuDecoder(OrtDecoder):
    """OrtDecoder whose present.* outputs stay on the GPU and feed the next step's past inputs.

    An append-layout export (manifest ``llm.cache_layout``) keeps its cache in host arrays here —
    each step copies it to the device: correct, not fast. For ONNX Runtime on a GPU export with
    ``--kv-layout concat``, or use the TensorRT backend, whose decoder keeps the append cache on
    the device (runtime/tensorrt_decoder.py)."""

    cache_device = "cuda"  # (1, kv_heads, total, head_dim) device-resident between steps
