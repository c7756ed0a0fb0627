"""Worked examples shipped with vlmforge: the shapes task and the small VLM trained on it
(``examples/default_model/``), which ``vlmforge demo`` and ``vlmforge eval`` use."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"  # the bundled checkpoint (package data)
