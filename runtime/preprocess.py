"""Which preprocessing a pipeline runs: the NumPy kernel, or the CUDA kernel writing the tile batch
straight into device memory that the first engine (vision, or the connector where patches are the
features) reads in place — TensorRT only, the one backend whose sessions take device arrays.

Nothing here imports CUDA until the GPU path is chosen."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ..kernels import PreprocessSpec, tile_and_patchify
from .errors import VlmforgeError

MODES = ("auto", "cpu", "gpu")


def choose_preprocess(spec: PreprocessSpec, consumer, mode: str = "auto") -> Callable:
    """rgb (H, W, 3) uint8 → (pixels, layout). ``mode``: "cpu" (NumPy), "gpu" (CUDA, or an error
    saying why not), "auto" (GPU when ``consumer`` takes device arrays and the kernels compile)."""
    if mode not in MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose one of {', '.join(MODES)}")
    cpu = lambda rgb: tile_and_patchify(rgb, spec)  # noqa: E731
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
        warnings.warn(f"GPU preprocessing unavailable ({e}); using the NumPy kernel", stacklevel=3)
        return cpu


class GpuPreprocess:
    """The CUDA tiler writing into its own device buffer; returns a ``DeviceArray`` (valid until the
    next call), which a TensorRT session binds without a copy."""

    device = "cuda"  # reported in the profile's environment

    def __init__(self, spec: PreprocessSpec, dtype: np.dtype):
        from ..kernels.cuda import CudaTiler

        self.dtype = np.dtype(dtype)
        self.tiler = CudaTiler(spec, self.dtype)  # ValueError for a dtype other than float32 / float16

    @property
    def last_gpu_s(self) -> float:
        """GPU time of the last call's kernels (what the profile reports as preprocess GPU time)."""
        return self.tiler.last_gpu_s

    def __call__(self, rgb: np.ndarray):
        from .cuda import DeviceArray

        ptr, shape, layout = self.tiler.on_device(rgb)  # synchronised: ready for any stream
        return DeviceArray(ptr, shape, self.dtype), layout
