"""Checks on a checkpoint folder before anything is loaded from it.

vlmforge loads weights from safetensors: a pickled ``pytorch_model.bin`` can run arbitrary code
when unpickled, so a folder that has only pickles is refused before any is opened, with the
one-line conversion to do where the checkpoint is trusted. The one exception is a family whose
original checkpoints exist only as state-dict pickles (MiniGPT-4's ``.pth``): it declares
``WEIGHTS_ONLY_PICKLE`` and loads them with ``torch.load(weights_only=True)``, which refuses
anything but tensors and containers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..runtime.errors import VlmforgeError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
CONVERT_HINT = ("convert it once where you trust it: python -c \"import transformers as t; "
                "t.AutoModelForImageTextToText.from_pretrained('DIR').save_pretrained('DIR-safetensors')\"")


class CheckpointError(VlmforgeError):
    """The checkpoint folder lacks something export needs, or holds only what it will not load."""


def check_weights(model_dir: Path, folders: tuple[str, ...] = ("",), weights_only_pickle: bool = False) -> None:
    """Every ``folders`` entry (relative to ``model_dir``) must hold safetensors weights (or, with
    ``weights_only_pickle``, state-dict pickles), and a sharded index must name only shards that are present."""
    for sub in folders:
        folder = Path(model_dir) / sub
        where = folder if sub else model_dir
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            _check_index(index)
            continue
        if any(folder.glob("*.safetensors")):
            continue
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles and weights_only_pickle:
            continue
        if pickles:
            raise CheckpointError(f"{where} has only pickled weights ({', '.join(pickles[:3])}); vlmforge never "
                                  f"unpickles a checkpoint (a pickle can run code) — {CONVERT_HINT}")
        raise CheckpointError(f"{where} has a config but no weights (no *.safetensors); copy model.safetensors "
                              "(or its shards and model.safetensors.index.json) next to config.json")


def _check_index(index: Path) -> None:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{index} is not a safetensors index (no weight_map); re-save the checkpoint") from None
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise CheckpointError(f"{index.parent} is missing weight shard(s) {', '.join(missing[:3])} named in "
                              f"{index.name}; copy every shard")
