"""Shared fixtures: tiny random checkpoints built from transformers configs, exported once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# the load cache (verified hashes, optimised graphs: runtime/load_cache.py) is off in the tests: nearly
# every load is a fresh export's first, which the cache makes slower (it saves each optimised graph);
# tests/test_load_cache.py turns it on. Its place is this test process's own, never ~/.cache
os.environ.setdefault("VLMFORGE_LOAD_CACHE", "0")
if "VLMFORGE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["VLMFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="vlmforge-test-cache-")
    atexit.register(shutil.rmtree, os.environ["VLMFORGE_CACHE_DIR"], ignore_errors=True)
# several xdist workers share the cores: each takes its share for torch, ONNX Runtime and the C
# kernel, instead of every worker's thread pools spinning on all of them (make test: ~24 % faster)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("OMP_NUM_THREADS", "VLMFORGE_THREADS", "VLMFORGE_KERNEL_THREADS"):
        os.environ.setdefault(_name, _SHARE)


def pytest_configure(config):
    import logging

    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny LLaVA (CLIP + Llama, GQA) and its export: (model_dir, export_dir)."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny import make_tiny_llava

    root = tmp_path_factory.mktemp("tiny_llava")
    model_dir = make_tiny_llava(root / "hf", text="llama", kv_heads=2)
    export_model(model_dir, root / "out")
    return model_dir, root / "out"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_images(rng, sizes):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
