"""The original implementations of families transformers lacks (``../shared/reference/`` from the
project root — or from the checkout a clean clone came from — or ``VLMFORGE_REFERENCE_DIR``),
loaded as the parity oracles of their tests.

A missing oracle fails the test that needs it, with the path it looked in — never a skip."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _origin() -> pathlib.Path | None:
    """The checkout this one was cloned from, when that is a local folder (a clean clone in /tmp)."""
    import subprocess

    try:
        url = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = pathlib.Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path if path is not None and path.is_dir() else None


def reference_dir() -> pathlib.Path:
    """VLMFORGE_REFERENCE_DIR, else ../shared/reference beside this project, else beside the checkout
    it was cloned from; the first that exists (the project's own place when none does)."""
    if os.environ.get("VLMFORGE_REFERENCE_DIR"):
        return pathlib.Path(os.environ["VLMFORGE_REFERENCE_DIR"])
    places = [ROOT.parent / "shared" / "reference"]
    origin = _origin()
    if origin is not None:
        places.append(origin.resolve().parent / "shared" / "reference")
    return next((p for p in places if (p / "_oracle_env.py").is_file()), places[0])


def load_harness(family: str):
    """``<reference>/<family>/run_oracle.py`` through the folder's ``_oracle_env``."""
    root = reference_dir()
    if not (root / "_oracle_env.py").is_file() or not (root / family / "run_oracle.py").is_file():
        pytest.fail(f"the {family} oracle is not at {root / family}: put the reference implementations at "
                    "../shared/reference next to the project (or set VLMFORGE_REFERENCE_DIR)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import _oracle_env

    return _oracle_env.load_harness(family)
