"""Measurements on one graph over its calibration feeds.

``tensor_ranges`` drives ONNX Runtime's own calibrators (MinMax / Percentile / Entropy),
one feed at a time so histograms merge incrementally instead of holding every activation of
every sample. ``activation_sqnr`` measures how much INT8 would cost each GEMM activation
input: SQNR = 10·log10(Σx² / Σ(x − dq(q(x)))²) with the symmetric per-tensor scale the
quantiser will use (max(|lo|, |hi|) / 127).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import onnx_io
from .cache import ort_method

GEMM_OPS = ("MatMul", "Gemm", "Conv")
HISTOGRAM_OPTIONS = {"percentile": {"percentile": 99.999, "symmetric": True}, "entropy": {"symmetric": True}}


class _OneFeed:
    """The CalibrationDataReader protocol over a single feed dict."""

    def __init__(self, feeds: dict):
        self._items = [feeds]

    def get_next(self):
        return self._items.pop() if self._items else None


def tensor_ranges(path: Path, feeds: list[dict], method: str, op_types=None) -> dict[str, list[float]]:
    """tensor → [lowest, highest] over ``feeds`` (``op_types`` None: every float tensor)."""
    from onnxruntime.quantization.calibrate import create_calibrator

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    with (onnx_io.staged(path) as model, tempfile.TemporaryDirectory(prefix="vlmforge-aug-") as tmp,
          contextlib.redirect_stdout(io.StringIO())):  # the histogram calibrators print progress
        cal = create_calibrator(
            model, op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method(method), use_external_data_format=onnx_io.is_large(path),
            extra_options=HISTOGRAM_OPTIONS.get(method, {}),
        )
        for feed in feeds:  # one at a time: histogram calibrators otherwise keep every activation
            cal.collect_data(_OneFeed(feed))
        data = cal.compute_data()
        del cal
    return {name: [float(np.min(t.range_value[0])), float(np.max(t.range_value[1]))] for name, t in data.items()}


def gemm_activation_inputs(model) -> dict[str, list[str]]:
    """activation tensor → the GEMM nodes that read it (constant weights, i.e. the quantisable ones)."""
    weights = {i.name for i in model.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in GEMM_OPS and len(node.input) > 1 and node.input[1] in weights:
            out.setdefault(node.input[0], []).append(node.name)
    return out


def activation_sqnr(path: Path, feeds: list[dict], ranges: dict[str, list[float]]) -> dict[str, float]:
    """GEMM activation input → INT8 SQNR in dB over ``feeds``, with the calibrated symmetric scale."""
    import onnx
    import onnxruntime as ort

    structure = onnx.load(str(path), load_external_data=False)
    tensors = [t for t in gemm_activation_inputs(structure) if t in ranges]
    graph_inputs = {i.name for i in structure.graph.input}
    extra = [t for t in tensors if t not in graph_inputs]
    structure.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in extra)
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    with onnx_io.staged(path) as model:
        probe = model.with_name("probe.onnx")
        onnx.save(structure, str(probe))  # external data (if any) stays referenced, linked beside it
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(probe), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for feed in feeds:
            values = dict(zip(names, session.run(None, feed)))
            values.update({k: v for k, v in feed.items() if k in signal})
            for t in tensors:
                s, n = _energy(values[t], ranges[t])
                signal[t] += s
                noise[t] += n
        del session
    return {t: float(10 * np.log10(max(signal[t], 1e-30) / max(noise[t], 1e-30))) for t in tensors}


def _energy(x: np.ndarray, rng: list[float]) -> tuple[float, float]:
    """(Σx², Σ(x − dq(q(x)))²) for symmetric INT8 with scale max|range| / 127 (ORT's symmetric qmax)."""
    x = x.astype(np.float64, copy=False)
    scale = max(abs(rng[0]), abs(rng[1])) / 127.0 or 1.0
    q = np.clip(np.rint(x / scale), -127, 127) * scale
    return float(np.sum(x * x)), float(np.sum((x - q) ** 2))
