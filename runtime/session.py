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
    """ONNX Runtime, CPU execution provider by default."""

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None, providers=None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.log_severity_level = 3
        self.spec = spec
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self._check_io()

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
