"""NVRTC compilation of ``resample.cu`` and the CUDA driver calls (cuda-python ≥ 12,
``cuda.bindings``; every call returns ``(error, *values)``). cuda-python is imported lazily."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("resample.cu")
FUNCTIONS = ("resample_normalise_f32", "resample_normalise_f16", "bicubic_global_f32", "bicubic_global_f16")
BLOCK = (16, 16, 1)


class ResizeArgs(ctypes.Structure):
    """Mirror of ``struct Resize`` in resample.cu (passed by value; ctypes applies the C layout)."""

    _fields_ = [
        ("src", ctypes.c_uint64), ("src_h", ctypes.c_int), ("src_w", ctypes.c_int), ("src_stride", ctypes.c_longlong),
        ("src_top", ctypes.c_int), ("src_left", ctypes.c_int),
        ("ystart", ctypes.c_uint64), ("yweight", ctypes.c_uint64), ("ky", ctypes.c_int),
        ("xstart", ctypes.c_uint64), ("xweight", ctypes.c_uint64), ("kx", ctypes.c_int),
        ("rh", ctypes.c_int), ("rw", ctypes.c_int), ("vertical_first", ctypes.c_int),
        ("bg", ctypes.c_uint64),
    ]  # fmt: skip


def _bindings():
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError as e:
        raise RuntimeError("the CUDA kernels need cuda-python: pip install 'cuda-python>=12'") from e
    return driver, nvrtc


def _check(result):
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err!r}")
    return values[0] if len(values) == 1 else tuple(values)


def compile_cubin(arch: str) -> bytes:
    """NVRTC-compile resample.cu for ``arch`` (e.g. "sm_90"); compile errors carry NVRTC's log."""
    _, nvrtc = _bindings()
    prog = _check(nvrtc.nvrtcCreateProgram(SOURCE.read_bytes(), b"resample.cu", 0, [], []))
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    if int(err) != 0:
        log = b" " * _check(nvrtc.nvrtcGetProgramLogSize(prog))
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise RuntimeError(f"NVRTC failed to compile {SOURCE.name} for {arch}:\n{log.decode(errors='replace')}")
    cubin = b" " * _check(nvrtc.nvrtcGetCUBINSize(prog))
    _check(nvrtc.nvrtcGetCUBIN(prog, cubin))
    _check(nvrtc.nvrtcDestroyProgram(prog))
    return cubin


_CONTEXTS: dict[int, object] = {}


def primary_context(device: int = 0):
    """Make ``device``'s primary context current (initialising the driver once) and return it.
    Everything here runs in it, so a buffer can be made before the kernels are compiled."""
    driver, _ = _bindings()
    if device not in _CONTEXTS:
        _check(driver.cuInit(0))
        _CONTEXTS[device] = _check(driver.cuDevicePrimaryCtxRetain(_check(driver.cuDeviceGet(device))))
    _check(driver.cuCtxSetCurrent(_CONTEXTS[device]))
    return _CONTEXTS[device]


class DeviceBuffer:
    """cuMemAlloc'd bytes on ``device``, freed with the object."""

    def __init__(self, nbytes: int, device: int = 0):
        self.driver, _ = _bindings()
        primary_context(device)
        self.nbytes = max(int(nbytes), 1)
        self.ptr = _check(self.driver.cuMemAlloc(self.nbytes))

    @classmethod
    def upload(cls, array: np.ndarray, device: int = 0) -> DeviceBuffer:
        return cls(np.asarray(array).nbytes, device).write(array)

    def write(self, array: np.ndarray) -> DeviceBuffer:
        """Copy a host array into the start of the buffer (synchronous)."""
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise ValueError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        if array.nbytes:
            _check(self.driver.cuMemcpyHtoD(self.ptr, array.ctypes.data, array.nbytes))
        return self

    def download(self, out: np.ndarray) -> np.ndarray:
        if not out.flags.c_contiguous or out.nbytes > self.nbytes:
            raise ValueError(f"download target must be C-contiguous and at most {self.nbytes} bytes")
        _check(self.driver.cuMemcpyDtoH(out.ctypes.data, self.ptr, out.nbytes))
        return out

    def __int__(self) -> int:
        return int(self.ptr)

    def __del__(self):
        if getattr(self, "ptr", None) is not None:
            self.driver.cuMemFree(self.ptr)


class CudaKernels:
    """The compiled module on one device (primary context)."""

    def __init__(self, device: int = 0):
        driver, _ = _bindings()
        self.driver = driver
        self.context = primary_context(device)
        dev = _check(driver.cuDeviceGet(device))
        attr = driver.CUdevice_attribute
        major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
        minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
        self._image = np.frombuffer(compile_cubin(f"sm_{major}{minor}"), dtype=np.uint8)  # kept alive
        self.module = _check(driver.cuModuleLoadData(self._image.ctypes.data))
        self.functions = {name: _check(driver.cuModuleGetFunction(self.module, name.encode())) for name in FUNCTIONS}

    def launch(self, name: str, grid: tuple[int, int, int], args: list) -> None:
        """Launch ``name`` with ctypes ``args`` (kernelParams: an array of pointers to each argument)."""
        params = np.array([ctypes.addressof(a) for a in args], dtype=np.uint64)
        stream = self.driver.CUstream(0)
        _check(self.driver.cuLaunchKernel(self.functions[name], *grid, *BLOCK, 0, stream, params.ctypes.data, 0))

    def synchronize(self) -> None:
        _check(self.driver.cuCtxSynchronize())

    def event(self):
        return _check(self.driver.cuEventCreate(0))

    def record(self, event) -> None:
        """Record ``event`` on the default stream (where ``launch`` enqueues)."""
        _check(self.driver.cuEventRecord(event, self.driver.CUstream(0)))

    def elapsed_s(self, start, end) -> float:
        """Seconds between two recorded events (both complete: call after ``synchronize``)."""
        return float(_check(self.driver.cuEventElapsedTime(start, end))) / 1e3
