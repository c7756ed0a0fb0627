"""Calibration and quantisation (issue #5): FP16, calibrated INT8 and weight-only INT8/INT4,
per graph, with a fidelity report. Offline producer: it writes quantised graphs and records
them in the manifest; the runtime only consumes what the manifest declares.

    calibrate(model, images, prompts)        → MODEL/calibration.json (ranges, maxima, INT8 SQNR per GEMM input)
    quantize_model(model, out, "vision=int8,connector=fp16,llm=w4")
    verify_model(out, model)                 → FidelityReport (cosine, max error, KL, greedy agreement)

Needs the ``[export]`` extra (onnx); ONNX Runtime's own tools do the calibration, QDQ and
MatMulNBits work.
"""

from .calibrate import CalibrationResult, calibrate
from .fidelity import FidelityReport
from .precision import QuantizationError, parse_precision
from .quantize import quantize_model
from .verify import verify_model

__all__ = ["CalibrationResult", "FidelityReport", "QuantizationError", "calibrate", "parse_precision",
           "quantize_model", "verify_model"]
