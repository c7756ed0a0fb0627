"""The compiled CPU kernel: ``resample.c`` built with the machine's C compiler at first use
(``build.py``) and driven from the NumPy geometry (``run.py``). Byte-identical to the NumPy
reference; ``tile_and_patchify(backend="auto")`` uses it whenever it builds."""

from __future__ import annotations

from .build import KernelBuildError

__all__ = ["KernelBuildError", "available"]


def available() -> bool:
    """True when the library is compiled (or compiles now) and loads."""
    from .run import library

    try:
        library()
    except KernelBuildError:
        return False
    return True
