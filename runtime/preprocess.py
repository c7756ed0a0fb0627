"""Which preprocessing a pipeline runs: the CPU kernel (C when a compiler is present, else NumPy)
writing into a host buffer reused from image to image, or the CUDA kernel writing the tile batch
straight into device memory that the first engine (vision, or the connector where patches are the
features) reads in place — TensorRT only, the one backend whose sessions take device arrays.

Nothing here imports CUDA until the GPU path is chosen."""

from __future__ import annotations

import threading
import warnings
from typing import Callable

import numpy as np

from ..kernels import PreprocessSpec, prepare_image, resolve_backend, tile_and_patchify, tile_output_shape
from .errors import VlmforgeError

MODES = ("auto", "cpu", "gpu")


def choose_preprocess(spec: PreprocessSpec, consumer, mode: str = "auto") -> Callable:
    """rgb (H, W, 3) uint8 → (pixels, layout). ``mode``: "cpu" (the C or NumPy kernel), "gpu" (CUDA,
    or an error saying why not), "auto" (GPU when ``consumer`` takes device arrays and the kernels compile).
    ``consumer``: the engine that reads the pixels (None: they are the image embeddings themselves,
    so each call gets its own array)."""
    if mode not in MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose one of {', '.join(MODES)}")
    cpu = CpuPreprocess(spec, reuse=consumer is not None)
    if mode == "cpu":
        return cpu
    if not getattr(consumer, "accepts_device_arrays", False):
        if mode == "gpu":
            raise VlmforgeError("GPU preprocessing writes into the vision engine's device memory, which only the tensorrt "
                                "backend reads; load with backend='tensorrt' or use preprocess='cpu'")
        return cpu
    try:
        return GpuPreprocess(spec, consumer.input_dtype(consumer.spec.input_names[0]))
    except (RuntimeError, ValueError) as e:  # no cuda-python / NVRTC, or an engine input the kernel cannot write
        if mode == "gpu":
            raise VlmforgeError(f"GPU preprocessing is unavailable: {e}; use preprocess='cpu'") from e
        warnings.warn(f"GPU preprocessing unavailable ({e}); using the CPU kernel", stacklevel=3)
        return cpu


class CpuPreprocess:
    """The CPU kernel. With ``reuse`` it writes into one buffer per thread, kept per output shape, and
    returns it: valid until that thread's next call — the engine reads it at once — and a 30 MB HD
    batch then costs no fresh pages (measured: ~3 ms of kernel page zeroing per call otherwise,
    benchmarks/bench_kernels.py). Per thread: requests prepared at once in several threads (a
    server's) must not write into the pixels another is still encoding."""

    device = "cpu"

    def __init__(self, spec: PreprocessSpec, reuse: bool = True):
        self.spec, self.reuse = spec, reuse
        self.kernel = resolve_backend("auto")  # "c" or "numpy", reported in the profile's environment
        self._local = threading.local()  # .buffer: this thread's (tiles, 3, H, W) float32 or None

    def __call__(self, rgb: np.ndarray, spec: PreprocessSpec | None = None):
        """``spec``: this call's variant of the export's (a smaller image-token budget)."""
        spec = spec or self.spec
        if not self.reuse:
            return tile_and_patchify(rgb, spec, backend=self.kernel)
        rgb = prepare_image(rgb, spec.max_input_pixels)
        shape = tile_output_shape(rgb.shape[:2], spec)
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.shape != shape:
            buffer = self._local.buffer = np.empty(shape, dtype=np.float32)
        return tile_and_patchify(rgb, spec, backend=self.kernel, out=buffer)


class GpuPreprocess:
    """The CUDA tiler writing into its own device buffer; returns a ``DeviceArray`` (valid until the
    next call), which a TensorRT session binds without a copy."""

    device = "cuda"  # reported in the profile's environment
    kernel = "cuda"

    def __init__(self, spec: PreprocessSpec, dtype: np.dtype):
        from ..kernels.cuda import CudaTiler

        self.dtype = np.dtype(dtype)
        self.tiler = CudaTiler(spec, self.dtype)  # ValueError for a dtype other than float32 / float16

    @property
    def last_gpu_s(self) -> float:
        """GPU time of the last call's kernels (what the profile reports as preprocess GPU time)."""
        return self.tiler.last_gpu_s

    def __call__(self, rgb: np.ndarray, spec: PreprocessSpec | None = None):
        from .cuda import DeviceArray

        if spec is not None and spec != self.tiler.spec:
            raise VlmforgeError("a per-call preprocessing variant (a max_pixels= budget, or the base-only views "
                                "some models give the pictures of a multi-image prompt) runs on the CPU kernel "
                                "only for now; load with preprocess='cpu'")
        ptr, shape, layout = self.tiler.on_device(rgb)  # synchronised: ready for any stream
        return DeviceArray(ptr, shape, self.dtype), layout
