"""Choosing a backend and opening its sessions and LLM decoder.

``auto`` picks ``tensorrt`` when the manifest lists engines and TensorRT plus a CUDA GPU are
present, else ``onnxruntime`` (CPU). Any other name is taken literally, and a backend that
cannot run here is an error naming the install — never a silent fallback.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import VlmforgeError
from .kv_cache import OrtDecoder
from .manifest import Manifest
from .session import OrtSession

BACKENDS = ("auto", "onnxruntime", "tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")


@dataclass(frozen=True)
class Availability:
    """What this machine can run, probed without importing TensorRT itself."""

    tensorrt: bool
    gpu: bool
    ort_providers: tuple[str, ...]


def probe(need_gpu: bool = True) -> Availability:
    import onnxruntime as ort

    has_trt = importlib.util.find_spec("tensorrt") is not None
    gpu = False
    if need_gpu:
        from .cuda import gpu_count

        gpu = gpu_count() > 0
    return Availability(tensorrt=has_trt, gpu=gpu, ort_providers=tuple(ort.get_available_providers()))


def resolve_backend(requested: str, manifest: Manifest, available: Availability, model_dir: str = "MODEL") -> str:
    """The backend that will run, or an error saying how to make the requested one available."""
    from .ort_gpu import PROVIDERS, check_providers
    from .tensorrt_session import INSTALL_HINT

    if requested not in BACKENDS:
        raise VlmforgeError(f"unknown backend {requested!r}; available: {', '.join(BACKENDS)}")
    if requested == "auto":
        if manifest.engines is None:
            return "onnxruntime"
        if available.tensorrt and available.gpu:
            return "tensorrt"
        missing = "the tensorrt package" if not available.tensorrt else "a CUDA GPU"
        warnings.warn(f"{model_dir} has TensorRT engines but this machine lacks {missing}; running on onnxruntime (CPU)", stacklevel=2)
        return "onnxruntime"
    if requested == "tensorrt":
        if not available.tensorrt:
            raise VlmforgeError(f"backend tensorrt needs TensorRT's Python package, which is not installed; {INSTALL_HINT}")
        if not available.gpu:
            raise VlmforgeError("backend tensorrt needs a CUDA GPU and driver, and none is visible (cuda-python reports no device); "
                                "use --backend onnxruntime here")
        if manifest.engines is None:
            raise VlmforgeError(f"{model_dir} has no TensorRT engines; build them first: vlmforge build {model_dir} --backend tensorrt")
    if requested in PROVIDERS:
        check_providers(requested, available.ort_providers)
    return requested


def graph_hashes(manifest: Manifest, path: str) -> list[str] | None:
    """The manifest's SHA-256 of a graph file and of its external data (``path.data``), if recorded."""
    arts = manifest.artifacts
    if path not in arts:
        return None
    return [arts[path].sha256] + ([arts[path + ".data"].sha256] if path + ".data" in arts else [])


def open_graph(root: Path, manifest: Manifest, graph: str, backend: str, threads: int | None = None):
    """A session with ``run(feeds) -> outputs`` for ``graph`` on a resolved backend."""
    spec = manifest.graphs[graph]
    if backend == "tensorrt":
        from .tensorrt_session import TrtSession

        return TrtSession(root, spec, manifest.engines.graphs[graph])
    if backend == "onnxruntime":
        return OrtSession(root / spec.path, spec, threads=threads, artifact_hashes=graph_hashes(manifest, spec.path))
    from .ort_gpu import provider_list

    return OrtSession(root / spec.path, spec, threads=threads, providers=provider_list(backend, root, manifest, graph))


def open_decoder(root: Path, manifest: Manifest, backend: str, threads: int | None = None):
    """The LLM step with its cache: ``reset()``, ``step(embeds, positions) -> logits``."""
    if backend == "tensorrt":
        from .tensorrt_decoder import TrtDecoder

        return TrtDecoder(root, manifest)
    session = open_graph(root, manifest, "llm", backend, threads)
    if backend == "onnxruntime":
        return OrtDecoder(session, manifest.llm)
    from .ort_gpu import OrtGpuDecoder

    return OrtGpuDecoder(session, manifest.llm)


def open_backend(root: Path, manifest: Manifest, requested: str = "auto", threads: int | None = None, verify: bool = True):
    """Resolve ``requested`` and open (backend, vision, connector, decoder)."""
    needs_gpu = requested != "onnxruntime" and (requested != "auto" or manifest.engines is not None)
    backend = resolve_backend(requested, manifest, probe(need_gpu=needs_gpu), str(root))
    if backend == "tensorrt":
        from .tensorrt_session import check_engines_usable

        check_engines_usable(root, manifest, verify=verify)  # stale or modified engines stop here
    # Fuyu-style models have no vision graph: their patches go straight into the connector
    vision = open_graph(root, manifest, "vision", backend, threads) if "vision" in manifest.graphs else None
    connector = open_graph(root, manifest, "connector", backend, threads) if "connector" in manifest.graphs else None
    return backend, vision, connector, open_decoder(root, manifest, backend, threads)
