"""Calibrated INT8: ONNX Runtime's ``quantize_static`` in QDQ format with the cached ranges.

Symmetric everywhere (zero point 0): INT8 weights per output channel, INT8 activations per
tensor — what TensorRT's explicit-quantisation builder requires. Q/DQ go only on the inputs
of GEMM-like nodes with constant weights (MatMul, Gemm, Conv; listed explicitly as
``nodes_to_quantize``), the placement TensorRT fuses without reformatting. LayerNorm, Softmax,
residual adds and the attention products of activations (Q·Kᵀ, P·V, hence the KV cache) stay
float. A GEMM whose activation input measured an INT8 SQNR below ``min_sqnr_db`` on the
calibration data stays float too; the manifest lists each such node and its measurement.

On ONNX Runtime's x86 CPU provider (measured, ORT 1.32) a GEMM whose INT8 input is shared with
other GEMMs is not fused into an integer kernel: its weights are dequantised on every call.
The exporter merges q/k/v and gate/up into one GEMM each (``export/merge_matmuls.py``), so
every GEMM has its own input and all of them fuse (``MatMulIntegerToFloat``): on the
CLIP-L + Qwen2-0.5B-like benchmark INT8 decodes at 6.2× transformers FP32 and vision + prefill
take 0.33–0.37 of its time (README). Weight-only ``w8``/``w4`` (MatMulNBits) decodes faster still
on CPU; this QDQ form is also the one TensorRT builds.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

from . import onnx_io
from .cache import GraphCalibration, ort_method, write_ort_cache
from .measure import GEMM_OPS, gemm_activation_inputs
from .precision import QuantizationError

DEFAULT_MIN_SQNR_DB = 20.0
QDQ_OPTIONS = {
    "ActivationSymmetric": True,  # zero point 0
    "WeightSymmetric": True,
    "DedicatedQDQPair": True,  # ORT fuses a Q/DQ group only when its DQ feeds one node
    "OpTypesToExcludeOutputQuantization": list(GEMM_OPS),  # Q/DQ on GEMM inputs only: TensorRT's placement
}


@contextlib.contextmanager
def quiet_root_logger():
    """quantize_static logs advice ("consider pre-processing") on the root logger; silence it while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def sensitive_nodes(structure, entry: GraphCalibration, min_sqnr_db: float) -> dict[str, str]:
    """GEMM node → why it stays float (its input's measured SQNR)."""
    out = {}
    for tensor, nodes in gemm_activation_inputs(structure).items():
        db = entry.sqnr_db.get(tensor)
        if db is not None and db < min_sqnr_db:
            for node in nodes:
                out[node] = f"input {tensor}: INT8 SQNR {db:.1f} dB < {min_sqnr_db:g} dB"
    return out


def quantize_int8(src: Path, dst: Path, entry: GraphCalibration, method: str, min_sqnr_db: float) -> dict:
    """Write the QDQ INT8 version of ``src`` to ``dst``; returns the manifest's quantization record."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    structure = onnx.load(str(src), load_external_data=False)
    excluded = sensitive_nodes(structure, entry, min_sqnr_db)
    # explicit list: QDQ mode ignores MatMulConstBOnly and would quantise Q·Kᵀ and P·V too
    chosen = [n for nodes in gemm_activation_inputs(structure).values() for n in nodes if n not in excluded]
    if not chosen:
        raise QuantizationError(
            f"every GEMM of {src.name} measured an INT8 SQNR below {min_sqnr_db:g} dB, so INT8 would leave it float; "
            "lower --min-sqnr or choose fp16 / a weight-only precision for this graph"
        )
    with onnx_io.staged(src) as staged, tempfile.TemporaryDirectory(prefix="vlmforge-int8-") as tmp, quiet_root_logger():
        cache = write_ort_cache(entry, method, Path(tmp) / "ranges.json")
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(staged), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(GEMM_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=chosen,
            use_external_data_format=onnx_io.is_large(src),
            calibrate_method=ort_method(method),
            calibration_cache_path=str(cache),
            extra_options=QDQ_OPTIONS,
        )
        model = onnx_io.load(out)
    onnx_io.save(model, dst)
    return {
        "method": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "activations": "int8, symmetric, per tensor",
        "weights": "int8, symmetric, per output channel",
        "calibration": method,
        "op_types": list(GEMM_OPS),
        "num_quantized_nodes": len(chosen),
        "min_sqnr_db": min_sqnr_db,
        "fp32_nodes": excluded,
    }
