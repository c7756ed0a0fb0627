"""Stand-ins for ``tensorrt`` and ``cuda.bindings.runtime`` so the TensorRT backend's own logic
(buffers, profile choice, ping-pong cache, shape checks) runs on a CPU-only machine.

"Device" memory is host memory (pointers are real addresses, copies are memmoves) and an
"engine" is the graph's ONNX file run by ONNX Runtime: the TensorRT backend must then give
exactly ONNX Runtime's numbers. This checks our code, not TensorRT's or CUDA's behaviour.

``install(monkeypatch, real_cuda=True)`` keeps the real ``cuda.bindings.runtime`` (on a GPU
machine without TensorRT): buffers, pinned memory, streams and events are then CUDA's own, and the
fake engine copies its inputs from and its outputs to device memory around the ONNX Runtime call.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import types
from enum import Enum

import numpy as np

DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}


class _Err(Enum):
    cudaSuccess = 0


def make_cudart() -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = _Err
    rt.cudaMemcpyKind = Enum("cudaMemcpyKind", "cudaMemcpyHostToDevice cudaMemcpyDeviceToHost cudaMemcpyDeviceToDevice")
    held = {}  # address → numpy block keeping the memory alive

    def malloc(n):
        block = np.full(n, 0xFF, np.uint8)  # as undefined as cudaMalloc's: float NaN, int -1 until written
        held[block.ctypes.data] = block
        return _Err.cudaSuccess, block.ctypes.data

    props = types.SimpleNamespace(name=b"Fake GPU", major=8, minor=7)
    ok = lambda *values: (_Err.cudaSuccess, *values)  # noqa: E731
    rt.cudaGetErrorString = lambda err: ok(b"fake")
    rt.cudaGetDeviceCount = lambda: ok(1)
    rt.cudaGetDeviceProperties = lambda device: ok(props)
    rt.cudaMalloc = rt.cudaMallocHost = malloc
    rt.cudaFree = rt.cudaFreeHost = lambda ptr: (held.pop(ptr, None), ok())[1]
    rt.cudaStreamCreate = rt.cudaEventCreate = lambda: ok(object())
    rt.cudaStreamSynchronize = rt.cudaStreamDestroy = rt.cudaEventSynchronize = lambda handle: ok()
    rt.cudaEventRecord = lambda event, stream: ok()
    rt.cudaEventElapsedTime = lambda start, end: ok(0.5)
    rt.cudaSetDevice = lambda device: ok()
    rt.cudaMemGetInfo = lambda: ok(6 * 2**30, 8 * 2**30)  # free, total
    rt.cudaMemcpyAsync = lambda dst, src, n, kind, stream: (ctypes.memmove(dst, src, n), ok())[1]

    def memcpy_2d(dst, dpitch, src, spitch, width, height, kind, stream):
        assert width <= min(dpitch, spitch), "cudaMemcpy2D: a row wider than its pitch"
        for r in range(height):
            ctypes.memmove(dst + r * dpitch, src + r * spitch, width)
        return ok()

    rt.cudaMemcpy2DAsync = memcpy_2d
    rt.cudaMemsetAsync = lambda ptr, value, n, stream: (ctypes.memset(ptr, value, n), ok())[1]
    return rt


class FakeEngine:
    def __init__(self, plan: dict):
        import onnxruntime as ort

        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.profiles = plan["profiles"]
        self.io = [(t.name, t.type) for t in self.session.get_inputs() + self.session.get_outputs()]
        self.inputs = {t.name for t in self.session.get_inputs()}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_dtype(self, name):
        kind = dict(self.io)[name]
        return {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}[kind]

    def get_tensor_profile_shape(self, name, profile):
        r = self.profiles[profile][name]
        return r["min"], r["opt"], r["max"]

    def create_execution_context(self):
        return FakeContext(self)


class HostMemory:
    """Fake cudart's "device" memory: pointers are host addresses."""

    @staticmethod
    def read(ptr: int, out: np.ndarray) -> np.ndarray:
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    @staticmethod
    def write(ptr: int, value: np.ndarray) -> None:
        ctypes.memmove(ptr, value.ctypes.data, value.nbytes)


class CudaMemory:
    """Real device memory through cudaMemcpy (legacy default stream: it waits for the runtime's
    blocking streams, so the backend's queued uploads have landed before the engine reads)."""

    @staticmethod
    def _copy(dst: int, src: int, nbytes: int, kind: str) -> None:
        from cuda.bindings import runtime as rt

        (err,) = rt.cudaMemcpy(dst, src, nbytes, getattr(rt.cudaMemcpyKind, kind))
        assert err == rt.cudaError_t.cudaSuccess, err

    @classmethod
    def read(cls, ptr: int, out: np.ndarray) -> np.ndarray:
        cls._copy(out.ctypes.data, ptr, out.nbytes, "cudaMemcpyDeviceToHost")
        return out

    @classmethod
    def write(cls, ptr: int, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        cls._copy(ptr, value.ctypes.data, value.nbytes, "cudaMemcpyHostToDevice")


class FakeContext:
    memory = HostMemory

    def __init__(self, engine: FakeEngine):
        self.engine, self.profile, self.shapes, self.addresses, self.results = engine, 0, {}, {}, None

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        r = self.engine.profiles[self.profile][name]
        fits = all(lo <= d <= hi for lo, d, hi in zip(r["min"], shape, r["max"]))
        self.shapes[name], self.results = tuple(shape), None
        return fits

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def _run(self):
        if self.results is None:
            feeds = {n: self._read(n, self.shapes[n]) for n in self.engine.inputs}
            names = [n for n, _ in self.engine.io if n not in self.engine.inputs]
            self.results = dict(zip(names, self.engine.session.run(names, feeds)))
        return self.results

    def _read(self, name, shape):
        dtype = np.dtype(DTYPES[self.engine.get_tensor_dtype(name)])
        return self.memory.read(self.addresses[name], np.empty(shape, dtype))

    def get_tensor_shape(self, name):
        return self._run()[name].shape

    def execute_async_v3(self, stream):
        for name, value in self._run().items():
            self.memory.write(self.addresses[name], value)
        self.results = None  # next call reads its inputs afresh
        return True


def make_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.99.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, blob: FakeEngine(json.loads(blob))})
    trt.nptype = lambda dtype: DTYPES[dtype]
    return trt


def install(monkeypatch, real_cuda: bool = False) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt())
    if real_cuda:
        monkeypatch.setattr(FakeContext, "memory", CudaMemory)
        return
    rt = make_cudart()
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    # the driver API and NVRTC hidden too: on a GPU machine the CUDA preprocessing would otherwise
    # write the tile batch to real device memory, which the fake engine reads as host memory
    for name in ("cuda.bindings.driver", "cuda.bindings.nvrtc"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # the fake package has no submodules to find
    for name, module in {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}.items():
        monkeypatch.setitem(sys.modules, name, module)


def write_fake_engines(folder, manifest, build_plan) -> None:
    """``<graph>.engine`` files the fake runtime understands: the ONNX path and the profiles."""
    from vlmforge.export.tensorrt.profiles import profiles_to_json

    for name, spec in manifest.graphs.items():
        plan = {"onnx": str(folder / spec.path), "profiles": profiles_to_json(build_plan.profiles[name])}
        (folder / f"{name}.engine").write_text(json.dumps(plan))
