"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python.

Imported lazily by ``tensorrt_session.py`` only (never by ``vlmforge.runtime``). Every call
returns ``(err, *values)``; ``call`` turns a failure into an error that names the call.
Pointers are plain ints, which is what ``context.set_tensor_address`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VlmforgeError

INSTALL_HINT = "pip install cuda-python (it provides cuda.bindings)"


def cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            raise VlmforgeError(f"the TensorRT backend needs cuda-python, which is not installed; {INSTALL_HINT}") from None
    return runtime


def call(result):
    """``(err, *values)`` → values (one value unwrapped); raise on an error code."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, text = rt.cudaGetErrorString(err)
        raise RuntimeError(f"CUDA error {err}: {text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_count() -> int:
    """Number of visible CUDA devices; 0 without a driver or GPU (never raises for that)."""
    try:
        rt = cudart()
    except VlmforgeError:
        return 0
    err, count = rt.cudaGetDeviceCount()
    return int(count) if err == rt.cudaError_t.cudaSuccess else 0


def device_name_and_capability(device: int = 0) -> tuple[str, str]:
    props = call(cudart().cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return name, f"{props.major}.{props.minor}"


@dataclass(frozen=True)
class DeviceArray:
    """A C-contiguous tensor already in device memory (the GPU preprocessing's tile batch): a
    TensorRT session binds ``ptr`` as the input instead of copying a host array."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype


class DeviceBuffer:
    """``nbytes`` of device memory, freed with the object."""

    def __init__(self, nbytes: int):
        self.rt = cudart()  # kept: __del__ may run while the interpreter is tearing modules down
        self.nbytes = max(int(nbytes), 1)  # cudaMalloc(0) returns no usable pointer
        self.ptr = int(call(self.rt.cudaMalloc(self.nbytes)))

    def __del__(self):
        if getattr(self, "ptr", 0):
            self.rt.cudaFree(self.ptr)
            self.ptr = 0


class PinnedArray:
    """A NumPy array in page-locked host memory: device→host copies run asynchronously at full speed."""

    def __init__(self, shape, dtype):
        import ctypes

        self.rt = cudart()
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        self.ptr = int(call(self.rt.cudaMallocHost(max(count * dtype.itemsize, 1))))
        raw = ctypes.cast(self.ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))
        self.array = np.ctypeslib.as_array(raw, (count,)).reshape(shape)

    def __del__(self):
        if getattr(self, "ptr", 0):
            self.array = None
            self.rt.cudaFreeHost(self.ptr)
            self.ptr = 0


class Stream:
    def __init__(self):
        self.rt = cudart()
        self.handle = call(self.rt.cudaStreamCreate())

    def copy_to_device(self, dst_ptr: int, host: np.ndarray) -> None:
        """Host array → device. ``host`` must stay alive until the stream is synchronised."""
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        call(rt.cudaMemcpyAsync(dst_ptr, host.ctypes.data, host.nbytes, kind, self.handle))

    def copy_to_host(self, host: np.ndarray, src_ptr: int) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(rt.cudaMemcpyAsync(host.ctypes.data, src_ptr, host.nbytes, kind, self.handle))

    def copy_2d(self, dst_ptr: int, dst_pitch: int, src_ptr: int, src_pitch: int, width: int, height: int) -> None:
        """Device → device: ``height`` rows of ``width`` bytes, each ``*_pitch`` bytes after the last
        (one KV head per row: a cache's columns written or moved without touching the others)."""
        if width and height:
            rt = cudart()
            kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            call(rt.cudaMemcpy2DAsync(dst_ptr, dst_pitch, src_ptr, src_pitch, width, height, kind, self.handle))

    def zero(self, ptr: int, nbytes: int) -> None:
        """Device memory ← zeros (cudaMalloc leaves it undefined: NaN bit patterns read back as NaN)."""
        call(cudart().cudaMemsetAsync(ptr, 0, nbytes, self.handle))

    def synchronize(self) -> None:
        call(cudart().cudaStreamSynchronize(self.handle))

    def __del__(self):
        if getattr(self, "handle", None) is not None:
            self.rt.cudaStreamDestroy(self.handle)
            self.handle = None


class EventTimer:
    """GPU time between two points on a stream (``start``, ``stop``, then ``elapsed_s``)."""

    def __init__(self, stream: Stream):
        rt = cudart()
        self.stream = stream
        self.begin, self.end = call(rt.cudaEventCreate()), call(rt.cudaEventCreate())

    def start(self) -> None:
        call(cudart().cudaEventRecord(self.begin, self.stream.handle))

    def stop(self) -> None:
        call(cudart().cudaEventRecord(self.end, self.stream.handle))

    def elapsed_s(self) -> float:
        call(cudart().cudaEventSynchronize(self.end))
        return float(call(cudart().cudaEventElapsedTime(self.begin, self.end))) / 1e3


def memory_used_bytes(device: int = 0) -> dict:
    """Device memory now in use (total − free, every process on the GPU) and the total, in bytes.

    On Jetson the GPU shares the system memory, so "used" includes what the CPU side holds."""
    rt = cudart()
    call(rt.cudaSetDevice(device))
    free, total = call(rt.cudaMemGetInfo())
    return {"gpu_used_bytes": int(total - free), "gpu_total_bytes": int(total)}
