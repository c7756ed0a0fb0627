"""Run the resampling GEMMs on one BLAS thread.

The passes issue hundreds of small sgemm calls (one per block of 32 outputs). Multi-threaded
OpenBLAS synchronises its threads on every call; on a busy machine one descheduled thread stalls
each call for a scheduler quantum — measured: 0.14 s single-threaded vs 3.1 s with 2 threads on a
2-core machine with one core taken. One thread per call is the robust choice; callers that want
parallelism process several images at once.
"""

from __future__ import annotations

import ctypes
import glob
import os
from contextlib import contextmanager

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")


def _find_openblas():
    """(set_num_threads, get_num_threads) of the OpenBLAS bundled with numpy, or None."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libs, "*openblas*")):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: same handle
        except OSError:
            continue
        for set_name, get_name in zip(_SETTERS, _GETTERS):
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                return getattr(lib, set_name), getattr(lib, get_name)
    return None


_OPENBLAS = _find_openblas()


@contextmanager
def single_thread_blas():
    """Limit numpy's OpenBLAS to one thread inside the block (no-op for other BLAS builds)."""
    if _OPENBLAS is None:
        yield
        return
    set_threads, get_threads = _OPENBLAS
    previous = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(previous)
