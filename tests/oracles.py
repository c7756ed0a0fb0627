"""The original implementations of families transformers lacks (``../shared/reference/`` from the
project root, or ``VLMFORGE_REFERENCE_DIR``), loaded as the parity oracles of their tests.

A missing oracle fails the test that needs it, with the path it looked in — never a skip."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

DEFAULT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("VLMFORGE_REFERENCE_DIR") or DEFAULT)


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
