"""CUDA path of the preprocessing kernels: ``resample.cu`` (one thread per output element:
Pillow-exact separable resample from fixed-point coefficient tables + LUT normalise, written
straight into the device output) compiled at run time with NVRTC and launched through the CUDA
driver API. The NumPy kernels are the reference (tests/test_kernels_cuda.py).

Importing this package needs nothing; cuda-python is imported when a kernel is first built.
"""

from .driver import SOURCE, CudaKernels, DeviceBuffer, ResizeArgs, compile_cubin
from .run import CudaTiler, tile_and_patchify_cuda

__all__ = ["SOURCE", "CudaKernels", "DeviceBuffer", "ResizeArgs", "compile_cubin", "CudaTiler", "tile_and_patchify_cuda"]
