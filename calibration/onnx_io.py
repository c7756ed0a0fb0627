"""ONNX files with or without external data: load, save, and stage them in a scratch folder.

ONNX Runtime's quantisation tools write helper files (``*-inferred.onnx``, augmented models)
next to the model they read; staging links the graph and its external data into a scratch
folder so the exported folder's own files are never written to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

EXTERNAL_DATA_BYTES = 1_800_000_000  # same limit as the exporter: protobuf stops at 2 GiB


def external_files(path: Path) -> list[str]:
    """Relative locations of the external data files ``path`` refers to."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found = []
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            loc = next(e.value for e in init.external_data if e.key == "location")
            if loc not in found:
                found.append(loc)
    return found


def load(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=True)


def weight_bytes(model) -> int:
    """Bytes of the initializers (raw data, as they would be stored)."""
    return sum(len(t.raw_data) if t.raw_data else 4 * _numel(t) for t in model.graph.initializer)


def _numel(t) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def save(model, path: Path) -> None:
    """Write ``model`` to ``path``; weights go to ``<name>.data`` beside it when over protobuf's limit."""
    import onnx

    path = Path(path)
    large = weight_bytes(model) > EXTERNAL_DATA_BYTES
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if large:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(model, str(path))


@contextlib.contextmanager
def staged(path: Path):
    """Yield ``path`` as seen from a scratch folder: the graph file linked, its external data copied
    (onnx refuses external data behind symbolic or hard links). Nothing is written beside the model."""
    path = Path(path).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="vlmforge-cal-"))
    try:
        os.symlink(path, tmp / path.name)
        for rel in external_files(path):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.parent / rel, target)
        yield tmp / path.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_large(path: Path) -> bool:
    return bool(external_files(path))
