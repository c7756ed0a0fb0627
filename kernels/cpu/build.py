"""Compile ``resample.c`` + ``tiles.c`` (+ ``common.h``) with the machine's C compiler at first use and load it with ctypes.

The library is built for the host CPU (``-march=native``: AVX-512 here, NEON on a Jetson) and
cached per source, compiler, flags and CPU under ``$VLMFORGE_CACHE_DIR`` (default
``~/.cache/vlmforge``), so later processes only load it. The compile writes to a temporary file
and renames it, so concurrent first uses never load a half-written library.
``-ffp-contract=off`` keeps the normalisation's float operations those of transformers (no FMA).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
SOURCES = [HERE / "resample.c", HERE / "tiles.c"]
HEADERS = [HERE / "common.h"]
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-strict-aliasing", "-shared", "-fPIC", "-pthread"]
X86_FLAGS = ["-mprefer-vector-width=512"]  # use AVX-512 registers where the CPU has them (GCC defaults to 256)
_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_ssize_t
SIGNATURES = {
    "vf_hpass": [_P, _L, _I, _I, _P, _P, _P, _I, _I, _P, _L, _I],
    "vf_vpass": [_P, _L, _I, _P, _P, _P, _I, _I, _P, _L, _I],
    "vf_resize": [_P, _L, _I, _I, _P, _P, _P, _I, _I, _P, _P, _P, _I, _I, _I, _P, _L, _I],
    "vf_write_tiles": [_P, _I, _I, _I, _I, _P, _I, _I, _I, _P, ctypes.c_double, _P, _P, _P, _I],
    "vf_bicubic_view": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _I, _P, _P, _P, _I],
    "vf_write_patches": [_P, _L, _L, _L, _I, _I, _I, _I, _I, _I, _I, _I, _I, _P, _P, _P, _I],
}


class KernelBuildError(RuntimeError):
    """The C kernel could not be compiled or loaded (no compiler, a compile error)."""


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc / gcc / clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def cache_dir() -> Path:
    root = os.environ.get("VLMFORGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vlmforge"
    )
    return Path(root) / "kernels"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's flags (Linux) or its platform description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def flags() -> list[str]:
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    return FLAGS + X86_FLAGS if x86 else list(FLAGS)


def library_path(cc: str) -> Path:
    key = hashlib.sha256()
    parts = [f.read_bytes() for f in SOURCES + HEADERS] + [cc.encode(), " ".join(flags()).encode(), _cpu_id().encode()]
    for part in parts:
        key.update(part)
    return cache_dir() / f"vlmforge_resample_{key.hexdigest()[:16]}{'.dll' if os.name == 'nt' else '.so'}"


def build() -> Path:
    """Path of the compiled library, compiling it if not cached."""
    cc = compiler()
    if cc is None:
        raise KernelBuildError("no C compiler found (set CC, or install gcc: apt install gcc); "
                               "or use the NumPy kernel: backend='numpy' / VLMFORGE_CPU_KERNEL=numpy")
    path = library_path(cc)
    for cached in (path, _fallback_dir() / path.name):
        if cached.exists():
            return cached
    path, tmp = _temporary_beside(path)
    try:
        res = _compile(cc, flags(), tmp)
        if res.returncode != 0:  # a compiler that rejects -march=native: the portable build
            portable = [f for f in flags() if f.startswith(("-O", "-f", "-shared", "-pthread"))]
            if _compile(cc, portable, tmp).returncode != 0:
                names = " + ".join(f.name for f in SOURCES)
                raise KernelBuildError(f"{cc} failed to compile {names}:\n{res.stderr.strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"vlmforge-{os.getuid() if hasattr(os, 'getuid') else 0}" / "kernels"


def _temporary_beside(path: Path) -> tuple[Path, str]:
    """(where the library goes, a temporary file in the same folder to compile into). A cache folder
    that cannot be written (a read-only home in a container) falls back to the system's temp folder."""
    fallback = _fallback_dir()
    for folder in (path.parent, fallback):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
        except OSError:
            continue
        os.close(fd)
        return folder / path.name, tmp
    raise KernelBuildError(f"cannot write the compiled kernel to {path.parent} nor {fallback}; "
                           "set VLMFORGE_CACHE_DIR to a writable folder")


def _compile(cc: str, options: list[str], out: str) -> subprocess.CompletedProcess:
    try:
        cmd = [cc, *options, *(str(f) for f in SOURCES), "-o", out]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelBuildError(f"running {cc} failed: {e}") from e


def load() -> ctypes.CDLL:
    """The compiled library with its function signatures set."""
    path = build()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelBuildError(f"cannot load the compiled kernel {path}: {e}; delete it to rebuild") from e
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int  # the number of work chunks that ran out of memory
    return lib
