"""Calibration and quantisation (issue #5): FP16, calibrated INT8 and weight-only INT8/INT4,
per graph, with a fidelity report. Offline producer: it writes quantised graphs and records
them in the manifest; the runtime only consumes what the manifest declares.

    calibrate(model, images, prompts)        → MODEL/calibration.json (ranges, maxima, INT8 SQNR per GEMM input)
    quantize_model(model, out, "vision=int8,connector=fp16,llm=w4")
    verify_model(out, model)                 → FidelityReport (cosine, max error, KL, greedy agreement)

Needs the ``[export]`` extra (onnx); ONNX Runtime's own tools do the calibration, QDQ and
MatMulNBits work.
"""

import importlib

# name → submodule; imported on first use so that ``vlmforge.calibration.commands`` (the CLI side)
# loads on a runtime-only install and only running a command needs onnx
_EXPORTS = {
    "CalibrationResult": "calibrator", "calibrate": "calibrator", "FidelityReport": "fidelity",
    "QuantizationError": "precision", "parse_precision": "precision", "quantize_model": "quantize",
    "verify_model": "verify",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
