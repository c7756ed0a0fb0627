"""TensorRT engines behind the session protocol (``run(feeds) -> outputs``).

Follows NVIDIA's Python samples (samples/python/common_runtime.py): ``trt.Runtime`` →
``deserialize_cuda_engine`` → ``create_execution_context``; named I/O through
``engine.num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``; per call
``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` on a cuda-python stream.
``tensorrt`` and ``cuda`` are imported inside functions: ``import vlmforge.runtime`` loads neither.

Before any engine is deserialised the manifest's build fingerprint is compared with this
machine (``engines.check_fingerprint``) and each plan's size and SHA-256 are checked.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from .engines import BuildFingerprint, EngineSpec, check_fingerprint
from .errors import ManifestError, VlmforgeError
from .manifest import GraphSpec, Manifest, sha256_file

INSTALL_HINT = "pip install tensorrt (x86_64), or on Jetson the JetPack package python3-libnvinfer (apt install python3-libnvinfer)"


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise VlmforgeError(f"the tensorrt backend needs TensorRT's Python package, which is not installed; {INSTALL_HINT}") from None
    return trt


def current_fingerprint(device: int = 0) -> BuildFingerprint:
    """This machine's TensorRT version, GPU name and compute capability."""
    from .cuda import device_name_and_capability

    version = require_tensorrt().__version__  # first: a missing TensorRT is the likelier problem
    name, capability = device_name_and_capability(device)
    return BuildFingerprint(tensorrt_version=version, gpu_name=name, compute_capability=capability)


def check_engines_usable(root: Path, manifest: Manifest, verify: bool = True) -> None:
    """Refuse stale or modified engines before anything runs; warn when only the GPU model differs."""
    if manifest.engines is None:
        raise ManifestError(f"{root} has no TensorRT engines; build them first: vlmforge build {root} --backend tensorrt")
    for note in check_fingerprint(manifest.engines.fingerprint, current_fingerprint(), str(root)):
        warnings.warn(note, stacklevel=3)
    for graph, spec in manifest.engines.graphs.items():
        path = root / spec.path
        if not path.is_file() or path.stat().st_size != spec.bytes:
            raise ManifestError(f"engine {spec.path} for {graph} is missing or truncated; rebuild: vlmforge build {root} --backend tensorrt")
        if verify and sha256_file(path) != spec.sha256:
            raise ManifestError(f"engine {spec.path} does not match its SHA-256 in the manifest; rebuild: vlmforge build {root} --backend tensorrt")


def deserialize(root: Path, spec: EngineSpec, graph: GraphSpec):
    """Plan file → ICudaEngine whose I/O names are the graph's."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine((root / spec.path).read_bytes())
    if engine is None:
        raise ManifestError(f"TensorRT could not deserialise {spec.path} (see its log above); rebuild: vlmforge build {root} --backend tensorrt")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if sorted(names) != sorted(graph.input_names + graph.output_names):
        raise ManifestError(f"engine {spec.path} has tensors {names} but the manifest's graph declares "
                            f"{graph.input_names + graph.output_names}; rebuild the engines")
    return engine


def tensor_dtype(engine, name: str) -> np.dtype:
    trt = require_tensorrt()
    return np.dtype(trt.nptype(engine.get_tensor_dtype(name)))


def set_shape(context, name: str, shape, engine, profile: int = 0) -> None:
    if not context.set_input_shape(name, tuple(int(d) for d in shape)):
        lo, _, hi = engine.get_tensor_profile_shape(name, profile)
        raise VlmforgeError(f"input {name} of shape {tuple(shape)} is outside the engine's profile {tuple(lo)}..{tuple(hi)}; "
                            "rebuild with larger --max-tiles / --max-context")


class TrtSession:
    """One engine with one profile (vision, connector): NumPy in, NumPy out, buffers grown on demand."""

    accepts_device_arrays = True  # feeds may be cuda.DeviceArray: bound in place, no copy

    def __init__(self, root: Path, spec: GraphSpec, engine_spec: EngineSpec):
        from .cuda import EventTimer, Stream

        self.spec = spec
        self.engine = deserialize(root, engine_spec, spec)
        self.context = self.engine.create_execution_context()
        self.stream = Stream()
        self.timer = EventTimer(self.stream)
        self.last_gpu_s = 0.0  # GPU time of the last call's engine run (CUDA events)
        self.buffers = {}  # name → DeviceBuffer, grown when a call needs more

    def _buffer(self, name: str, nbytes: int) -> int:
        from .cuda import DeviceBuffer

        if name not in self.buffers or self.buffers[name].nbytes < nbytes:
            self.buffers[name] = DeviceBuffer(nbytes)
        return self.buffers[name].ptr

    def input_dtype(self, name: str) -> np.dtype:
        return tensor_dtype(self.engine, name)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .cuda import DeviceArray

        staged = []  # host arrays must outlive the async copies
        for name in self.spec.input_names:
            if isinstance(feeds[name], DeviceArray):
                self._bind_device(name, feeds[name])
                continue
            host = np.ascontiguousarray(feeds[name], dtype=tensor_dtype(self.engine, name))
            set_shape(self.context, name, host.shape, self.engine)
            ptr = self._buffer(name, host.nbytes)
            self.stream.copy_to_device(ptr, host)
            self.context.set_tensor_address(name, ptr)
            staged.append(host)
        outputs = {}
        for name in self.spec.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=tensor_dtype(self.engine, name))
            self.context.set_tensor_address(name, self._buffer(name, outputs[name].nbytes))
        self.timer.start()
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT failed to run {self.spec.path} (see its log above)")
        self.timer.stop()
        for name, host in outputs.items():
            self.stream.copy_to_host(host, self.buffers[name].ptr)
        self.stream.synchronize()
        self.last_gpu_s = self.timer.elapsed_s()
        return outputs

    def _bind_device(self, name: str, array) -> None:
        if np.dtype(array.dtype) != tensor_dtype(self.engine, name):
            raise VlmforgeError(f"input {name} is {tensor_dtype(self.engine, name)} in the engine but the device array is {np.dtype(array.dtype)}")
        set_shape(self.context, name, array.shape, self.engine)
        self.context.set_tensor_address(name, array.ptr)
