"""Engine sessions: one class per backend behind one protocol, ``run(feeds) -> outputs``.

The LLM additionally needs a KV-cached step (``kv_cache.py``); ``backends.py`` picks and opens
the backend, with errors that name the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from .errors import VlmforgeError
from .manifest import GraphSpec

class EngineSession(Protocol):
    spec: GraphSpec

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def physical_cores() -> int:
    """ONNX Runtime's default intra-op threads: $VLMFORGE_THREADS, else the physical cores (a
    process sharing the machine — several test workers, other services — should set it)."""
    env = os.environ.get("VLMFORGE_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"VLMFORGE_THREADS={env!r} is not a positive integer")
        return int(env)
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


class OrtSession:
    """ONNX Runtime, CPU execution provider by default. ``artifact_hashes``: the SHA-256 of the graph
    and its external data (from the manifest): on the CPU its optimised form is cached under them
    (runtime/load_cache.py) and later loads skip ONNX Runtime's graph optimisation."""

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None, providers=None,
                 artifact_hashes: list[str] | None = None):
        self.spec = spec
        providers = providers or ["CPUExecutionProvider"]
        cacheable = artifact_hashes and providers == ["CPUExecutionProvider"]
        self.session = (self._cached(path, threads, providers, artifact_hashes) if cacheable else
                        self._open(path, threads, providers, optimise=True))
        self._check_io()

    @staticmethod
    def _open(path: Path, threads, providers, optimise: bool, save_to: Path | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        level = ort.GraphOptimizationLevel
        opts.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.log_severity_level = 3
        # no CPU arena: it keeps the high-water mark of every prefill chunk's workspace for the process's
        # life (bench model, w4, 2,400-token prompt: peak RSS 2,432 → 2,067 MB; 600: 1,781 → 1,693 MB;
        # decode steps unchanged — benchmarks/bench_long_context.py); the allocator returns freed pages
        opts.enable_cpu_mem_arena = False
        if save_to is not None:  # the optimised graph, its weights beside it in one file
            opts.optimized_model_filepath = str(save_to / "model.onnx")
            opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
            opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        return ort.InferenceSession(str(path), opts, providers=providers)

    def _cached(self, path: Path, threads, providers, artifact_hashes):
        """The cached optimised graph, or the graph optimised now and its result saved for next time."""
        from . import load_cache

        # the files' size and mtime too: loaded with verify=False the manifest's hashes are unchecked
        files = [p for p in (path, path.with_name(path.name + ".data")) if p.is_file()]
        key = load_cache.graph_key([*artifact_hashes, *(load_cache.stat_id(p) for p in files)], providers)
        cached = load_cache.optimised_graph(key)
        if cached is not None:
            try:
                return self._open(cached, threads, providers, optimise=False)
            except Exception:  # a damaged entry: drop it and optimise again
                load_cache.discard(cached.parent)
        target = load_cache.save_dir(key)
        if target is None:
            return self._open(path, threads, providers, optimise=True)
        tmp, final = target
        try:
            session = self._open(path, threads, providers, optimise=True, save_to=tmp)
        except Exception:
            load_cache.discard(tmp)
            return self._open(path, threads, providers, optimise=True)
        load_cache.commit(tmp, final)
        return session

    def _check_io(self) -> None:
        got_in = [i.name for i in self.session.get_inputs()]
        got_out = [o.name for o in self.session.get_outputs()]
        if got_in != self.spec.input_names or got_out != self.spec.output_names:
            raise VlmforgeError(
                f"graph {self.spec.path} has inputs {got_in} / outputs {got_out} but the manifest declares "
                f"{self.spec.input_names} / {self.spec.output_names}; re-export the model"
            )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.spec.output_names, dict(feeds))
        return dict(zip(self.spec.output_names, outputs))
