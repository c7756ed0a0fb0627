"""TensorRT engines on a real GPU against ONNX Runtime on the CPU (skipped without TensorRT + GPU).

The decoders run in lockstep, both fed the reference's greedy tokens: logits must agree within
the precision's tolerance at every step, and the argmax must agree wherever the reference's
top-2 margin is wider than that tolerance (a tiny random model has near-ties that FP16 may
legitimately flip)."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from vlmforge.runtime import Pipeline, load_manifest
from vlmforge.runtime.decode import decode_one_token, prefill
from vlmforge.runtime.stats import StageTimer


def _missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    from vlmforge.runtime.cuda import gpu_count

    return None if gpu_count() else "no CUDA GPU visible (or cuda-python missing)"


pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]
PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"


def build(tiny_llava, tmp_path, precision: str, prepare=None):
    from vlmforge.export.tensorrt import BuildOptions, build_engines, parse_precision

    folder = shutil.copytree(tiny_llava[1], tmp_path / "model")
    if prepare:
        prepare(folder)
    names = list(load_manifest(folder).graphs)
    build_engines(folder, BuildOptions(precision=parse_precision(precision, names), max_context=128, workspace_gb=1))
    return folder


def close(ours, ref, tol) -> float:
    err = float(np.abs(np.asarray(ours, np.float32) - ref).max())
    assert err <= tol * max(1.0, float(np.abs(ref).max())), f"max |trt - ort| = {err}"
    return err


def lockstep(folder, rng, tol: float, steps: int = 12):
    ref, trt = Pipeline.load(folder, backend="onnxruntime"), Pipeline.load(folder, backend="tensorrt")
    assert trt.backend == "tensorrt"
    image, timer = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), StageTimer()
    ref_rows, trt_rows = ref.encode_image(image, timer), trt.encode_image(image, timer)
    close(trt_rows, ref_rows, tol)
    prepared = ref.prepare_prompt(PROMPT, None, 1, [ref_rows.shape[0]])
    embeds = ref.merge(prepared, [ref_rows])  # the same input for both LLMs
    ref_logits, trt_logits = prefill(ref.decoder, embeds, timer), prefill(trt.decoder, embeds, timer)
    for _ in range(steps):
        close(trt_logits, ref_logits, tol)
        top2 = np.sort(ref_logits)[-2:]
        token = int(np.argmax(ref_logits))
        if top2[1] - top2[0] > 2 * tol * max(1.0, float(np.abs(ref_logits).max())):
            assert int(np.argmax(trt_logits)) == token
        ref_logits = decode_one_token(ref.decoder, ref.embed_table, token, timer)
        trt_logits = decode_one_token(trt.decoder, trt.embed_table, token, timer)
    assert trt.decoder.cache.num_tokens == ref.decoder.cache.num_tokens
    assert trt.decoder.cache.nbytes == ref.decoder.cache.nbytes
    return ref, trt


def test_fp16_engines_follow_onnxruntime(tiny_llava, tmp_path, rng):
    folder = build(tiny_llava, tmp_path, "fp16")
    engines = load_manifest(folder).engines
    assert {g.precision for g in engines.graphs.values()} == {"fp16"} and engines.max_context == 128
    ref, trt = lockstep(folder, rng, tol=3e-2)
    # end to end through generate: same plumbing, stats filled, context limited by the engine
    result = trt.generate(PROMPT, images=[rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)], max_new_tokens=6)
    assert result.stats.num_generated_tokens == len(result.token_ids) >= 1
    assert trt.decoder.last_gpu_s > 0


def test_fp32_engines_give_ort_greedy_tokens(tiny_llava, tmp_path, rng):
    folder = build(tiny_llava, tmp_path, "fp32")
    lockstep(folder, rng, tol=5e-3)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ref = Pipeline.load(folder, backend="onnxruntime").generate(PROMPT, images=[image], max_new_tokens=8)
    trt = Pipeline.load(folder, backend="tensorrt").generate(PROMPT, images=[image], max_new_tokens=8)
    assert trt.token_ids == ref.token_ids


def test_engines_from_another_tensorrt_are_refused(tiny_llava, tmp_path):
    from vlmforge.runtime.engines import StaleEngineError

    folder = build(tiny_llava, tmp_path, "vision=fp16,connector=fp16,llm=fp16")
    manifest = load_manifest(folder)
    manifest.engines.fingerprint.tensorrt_version = "9.0.0"
    (folder / "manifest.json").write_text(manifest.to_json())
    with pytest.raises(StaleEngineError, match="vlmforge build"):
        Pipeline.load(folder, backend="tensorrt")


def quantise_connector(folder):
    """Replace the connector with an INT8 Q/DQ graph (ONNX Runtime's static quantiser) in the manifest."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from vlmforge.export.api import hash_artifacts

    class Features(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"image_features": rng.standard_normal((1, 25, 32), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    manifest = load_manifest(folder)  # before the graph changes under its recorded hash
    path = folder / "connector.onnx"
    quantize_static(str(path), str(path), Features(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    manifest.graphs["connector"].precision = "int8"
    manifest.artifacts = hash_artifacts(folder)
    (folder / "manifest.json").write_text(manifest.to_json())


def test_int8_qdq_connector(tiny_llava, tmp_path, rng):
    folder = build(tiny_llava, tmp_path, "vision=fp16,connector=int8,llm=fp16", prepare=quantise_connector)
    assert load_manifest(folder).engines.graphs["connector"].precision == "int8"
    ref, trt = Pipeline.load(folder, backend="onnxruntime"), Pipeline.load(folder, backend="tensorrt")
    features = rng.standard_normal((1, 25, 32), dtype=np.float32)
    close(trt.connector.run({"image_features": features})["image_embeds"],
          ref.connector.run({"image_features": features})["image_embeds"], tol=5e-2)
