"""Cold start: what a load computes once per machine is kept, so the next load skips it.

- **Verified hashes**: an artifact whose SHA-256 matched the manifest is recorded with its size,
  mtime and inode; a later load trusts the record while all three are unchanged (as git's index
  trusts a file's stat) instead of reading the bytes again. ``Pipeline.load(verify="full")``
  re-reads everything.
- **Optimised graphs**: ONNX Runtime's graph optimisation (constant folding, fusions, layout) is
  saved once per graph (``optimized_model_filepath``) and loaded with optimisation off. The key
  is the graph's and its external data's SHA-256 (from the manifest: no extra read) and their
  size and mtime (a load without hash checks must not meet a stale entry), the
  onnxruntime version, the providers and the CPU's feature flags — an optimised graph may hold
  layouts for this CPU only. CPU execution provider only.

Everything lives under ``$VLMFORGE_CACHE_DIR`` (default ``~/.cache/vlmforge``), never in the
export folder (read-only on many devices); entries are written to a temporary name and renamed,
and a cache that cannot be written or read falls back to the plain load. ``VLMFORGE_LOAD_CACHE=0``
turns both off.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path


def enabled() -> bool:
    return os.environ.get("VLMFORGE_LOAD_CACHE", "1") != "0"


def cache_dir() -> Path:
    return Path(os.environ.get("VLMFORGE_CACHE_DIR") or Path.home() / ".cache" / "vlmforge")


# -- verified hashes ------------------------------------------------------------------------

def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def stat_id(path: Path) -> str:
    """Size and mtime, for the optimised-graph key."""
    size, mtime, _ = _stat_key(path)
    return f"{size}:{mtime}"


def _record_path() -> Path:
    return cache_dir() / "verified.json"


def verified_records() -> dict:
    """path → {stat, sha256} of the artifacts verified before: read once per load."""
    if not enabled():
        return {}
    try:
        return json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {}


def known_hash(path: Path, records: dict) -> str | None:
    """The SHA-256 recorded for ``path`` when its size, mtime and inode are the recorded ones."""
    entry = records.get(str(path.resolve()))
    try:
        return entry["sha256"] if entry and entry["stat"] == _stat_key(path) else None
    except OSError:
        return None


def remember_hashes(hashes: dict[Path, str], records: dict) -> None:
    """Record freshly verified hashes beside ``records`` (best effort: an unwritable cache just
    verifies again next time)."""
    if not enabled() or not hashes:
        return
    records = dict(records)
    for path, digest in hashes.items():
        records[str(path.resolve())] = {"stat": _stat_key(path), "sha256": digest}
    _write_atomic(_record_path(), json.dumps(records))


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


# -- optimised graphs -------------------------------------------------------------------------

def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def graph_key(artifact_hashes: list[str], providers: list[str]) -> str:
    import onnxruntime as ort

    parts = {"graph": artifact_hashes, "ort": ort.__version__, "providers": providers, "cpu": _cpu_flags(),
             "machine": platform.machine()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def optimised_graph(key: str) -> Path | None:
    """The saved optimised graph for ``key``, if a complete one is there."""
    entry = cache_dir() / "ort" / key
    return entry / "model.onnx" if enabled() and (entry / "complete").is_file() else None


def save_dir(key: str) -> tuple[Path, Path] | None:
    """(a temporary folder to let ONNX Runtime write the optimised graph into, its final place), or
    None when the cache cannot be written."""
    if not enabled():
        return None
    final = cache_dir() / "ort" / key
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=final.parent, prefix=key + ".tmp.")), final
    except OSError:
        return None


def commit(tmp: Path, final: Path) -> None:
    """The written graph into its place (another process may have put one there first: keep that)."""
    try:
        (tmp / "complete").write_text("")
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def discard(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)
