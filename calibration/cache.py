"""The calibration cache (``calibration.json``): what ``calibrate`` measured, for ``quantize``.

Per graph: the activation ranges of the chosen method (ONNX Runtime's calibrators), the
absolute maximum of every float tensor (MinMax; decides where FP16 would overflow), and the
INT8 signal-to-quantisation-noise ratio of every GEMM activation input under those ranges
(decides which nodes stay in float). Each graph's entry records the SHA-256 of the graph it
was measured on, so a cache is never applied to another model.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kernels.spec import from_dict
from .precision import QuantizationError

FORMAT = "vlmforge-calibration"
VERSION = 1
CACHE_NAME = "calibration.json"
METHODS = ("minmax", "percentile", "entropy")


@dataclass
class GraphCalibration:
    sha256: str  # of the graph file the numbers were measured on
    ranges: dict[str, list[float]]  # tensor → [lowest, highest] from the chosen method
    absmax: dict[str, float]  # tensor → max |x| over all calibration feeds (every float tensor)
    sqnr_db: dict[str, float] = field(default_factory=dict)  # GEMM activation input → INT8 SQNR (dB)
    num_feeds: int = 0


@dataclass
class CalibrationCache:
    method: str
    graphs: dict[str, GraphCalibration]
    samples: list[str] = field(default_factory=list)  # "image | prompt" per sample
    skipped_images: list[str] = field(default_factory=list)
    decode_steps: int = 0
    source: str = ""
    format: str = FORMAT
    version: int = VERSION

    def __post_init__(self):
        if self.format != FORMAT or self.version != VERSION:
            raise QuantizationError(
                f"not a vlmforge calibration cache version {VERSION} (format={self.format!r}, "
                f"version={self.version}); re-run vlmforge calibrate"
            )
        self.graphs = {k: v if isinstance(v, GraphCalibration) else from_dict(GraphCalibration, v)
                       for k, v in self.graphs.items()}

    def save(self, path: Path) -> None:
        """Atomic write: a reader never sees half a cache."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, path)

    def for_graph(self, name: str, sha256: str) -> GraphCalibration:
        if name not in self.graphs:
            raise QuantizationError(
                f"the calibration cache has no ranges for the {name} graph (it has {', '.join(self.graphs) or 'none'}); "
                "re-run vlmforge calibrate on this model"
            )
        entry = self.graphs[name]
        if entry.sha256 != sha256:
            raise QuantizationError(
                f"the calibration cache's {name} ranges were measured on another graph (SHA-256 differs); "
                "re-run vlmforge calibrate on this model"
            )
        return entry


def default_cache_path(model_dir: Path) -> Path:
    return Path(model_dir) / CACHE_NAME


def load_cache(path: Path) -> CalibrationCache:
    path = Path(path)
    if not path.is_file():
        raise QuantizationError(
            f"no calibration cache at {path}; INT8 needs activation ranges: run "
            "vlmforge calibrate MODEL --images DIR --prompts FILE first (or pass --calibration PATH)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise QuantizationError(f"{path} is not valid JSON ({e}); re-run vlmforge calibrate") from None
    return from_dict(CalibrationCache, data)


def write_ort_cache(entry: GraphCalibration, method: str, path: Path) -> Path:
    """The graph's ranges as ONNX Runtime's own cache file, which ``quantize_static`` reads instead of calibrating."""
    import numpy as np
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in entry.ranges.items()}
    save_tensors_data(TensorsData(ort_method(method), data), path)
    return path


def ort_method(method: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod

    if method not in METHODS:
        raise QuantizationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]
