"""Calibration and quantisation on the tiny random LLaVA: the cache, every precision and its
graph form, the manifest records, refusals, and the fidelity report's shape."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

from vlmforge.calibration import QuantizationError, calibrate, quantize_model, verify_model
from vlmforge.calibration.cache import load_cache
from vlmforge.calibration.calibrator import collect_feeds
from vlmforge.calibration.fp16 import overflow_nodes
from vlmforge.calibration.samples import load_samples, synthetic_images
from vlmforge.calibration.weight_only import check_weight_only
from vlmforge.runtime import Pipeline, load_manifest
from vlmforge.runtime.kv_cache import cache_names

PROMPTS = ["What is in the picture?", "USER: <image>\\nDescribe it. ASSISTANT:", "How many shapes are there?"]


@pytest.fixture(scope="module")
def calib_inputs(tmp_path_factory):
    """A folder of pictures (plus one unreadable file) and a prompt file."""
    root = tmp_path_factory.mktemp("calib_inputs")
    images = root / "images"
    images.mkdir()
    for name, rgb in synthetic_images(6, seed=7):
        Image.fromarray(rgb).save(images / f"{name}.png")
    (images / "broken.png").write_bytes(b"not a png")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return images, root / "prompts.txt"


@pytest.fixture(scope="module")
def calibrated(tiny_llava, calib_inputs, tmp_path_factory):
    _, export_dir = tiny_llava
    images, prompts = calib_inputs
    cache = tmp_path_factory.mktemp("cache") / "calibration.json"
    result = calibrate(export_dir, images, prompts, num_samples=8, cache_path=cache)
    return export_dir, cache, result


@pytest.fixture(scope="module")
def quantized(calibrated, tmp_path_factory):
    """precision word → quantised folder (weight-only forms for both targets)."""
    export_dir, cache, _ = calibrated
    root = tmp_path_factory.mktemp("quantized")
    out = {}
    for word, target in [("fp16", "onnxruntime"), ("int8", "onnxruntime"), ("w8", "onnxruntime"),
                         ("w4", "onnxruntime"), ("w8", "tensorrt"), ("w4", "tensorrt"), ("w8a8", "onnxruntime")]:
        key = word if target == "onnxruntime" else f"{word}-trt"
        out[key] = root / key
        quantize_model(export_dir, out[key], word, calibration=cache, target=target)
    return out


def test_calibration_skips_unreadable_images_and_caches_every_graph(calibrated):
    export_dir, cache_path, result = calibrated
    cache = load_cache(cache_path)
    assert len(cache.skipped_images) == 1 and cache.skipped_images[0].startswith("broken.png")
    assert len(cache.samples) == 8 and "1 image(s) skipped" in result.summary()
    manifest = load_manifest(export_dir)
    assert set(cache.graphs) == set(manifest.graphs)
    for name, entry in cache.graphs.items():
        assert entry.sha256 == manifest.artifacts[manifest.graphs[name].path].sha256
        assert entry.ranges and entry.sqnr_db and all(lo <= hi for lo, hi in entry.ranges.values())
    assert cache.graphs["llm"].num_feeds == 8 * (1 + cache.decode_steps)  # prefill + decode steps per pair


def test_calibration_fails_when_no_image_is_readable(tiny_llava, tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(QuantizationError, match=r"no readable image .*1 file\(s\) skipped"):
        calibrate(tiny_llava[1], tmp_path, None, cache_path=tmp_path / "c.json")


def test_calibration_feeds_come_from_the_real_pipeline(tiny_llava, calib_inputs):
    """Vision sees preprocessed tiles, the connector vision features, the LLM merged prompts
    whose image slots hold the connector's output, then decode steps with the real cache."""
    export_dir = tiny_llava[1]
    samples = load_samples(*calib_inputs, num_samples=2)
    feeds = collect_feeds(export_dir, samples, decode_steps=2)
    pipe = Pipeline.load(export_dir)
    tiles = feeds["vision"][0]["pixel_values"]
    assert tiles.shape[1:] == (3, 30, 30)
    features = pipe.vision.run({"pixel_values": tiles})["image_features"]
    np.testing.assert_allclose(feeds["connector"][0]["image_features"], features, rtol=1e-5, atol=1e-6)
    embeds = pipe.connector.run({"image_features": features})["image_embeds"].reshape(-1, 64)
    prefill, step1, step2 = feeds["llm"][:3]
    rows = prefill["inputs_embeds"][0]
    image_rows = [i for i in range(rows.shape[0]) if np.allclose(rows[i], embeds[0], atol=1e-5)]
    assert image_rows, "the prefill feed holds no image embedding"
    past = cache_names(pipe.manifest.llm.num_layers)[0][0]
    assert prefill[past].shape[2] == 0 and step1[past].shape[2] == rows.shape[0] and step2[past].shape[2] == rows.shape[0] + 1
    assert step1["position_ids"].tolist() == [[rows.shape[0]]]


def _op_types(path):
    return {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}


def test_every_precision_runs_in_the_runtime_and_is_declared(quantized):
    expected = {"fp16": "fp16", "int8": "int8", "w8": "int8-weight", "w4": "int4-weight",
                "w8-trt": "int8-weight", "w4-trt": "int4-weight", "w8a8": "int8-dynamic"}
    for key, folder in quantized.items():
        manifest = load_manifest(folder, verify=True)  # hashes recomputed for the new artifacts
        assert {s.precision for s in manifest.graphs.values()} == {expected[key]}, key
        assert all(s.quantization and s.quantization["source_sha256"] for s in manifest.graphs.values())
        assert manifest.engines is None
        assert manifest.embeddings.dtype == "float16" == np.load(folder / manifest.embeddings.name, mmap_mode="r").dtype
        result = Pipeline.load(folder).generate(PROMPTS[1].replace("\\n", "\n"), images=[synthetic_images(1)[0][1]],
                                                max_new_tokens=4)
        assert len(result.token_ids) >= 1


def test_graph_forms(quantized):
    int8 = onnx.load(str(quantized["int8"] / "llm.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    dq = [n for n in int8.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(not inits[n.input[2]].any() for n in dq if len(n.input) > 2 and n.input[2] in inits)  # zero point 0
    weight_dq = [n for n in dq if n.input[0] in inits and inits[n.input[0]].ndim == 2]
    assert weight_dq and all(inits[n.input[1]].ndim == 1 for n in weight_dq)  # per output channel
    assert ("com.microsoft", "MatMulNBits") in _op_types(quantized["w4"] / "llm.onnx")
    assert ("com.microsoft", "MatMulNBits") in _op_types(quantized["w8"] / "llm.onnx")
    for key, dtype in (("w4-trt", onnx.TensorProto.INT4), ("w8-trt", onnx.TensorProto.INT8)):
        model = onnx.load(str(quantized[key] / "llm.onnx"))
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "TensorRT cannot parse contrib ops"
        types = {i.name: i.data_type for i in model.graph.initializer}
        assert any(n.op_type == "DequantizeLinear" and types.get(n.input[0]) == dtype for n in model.graph.node)
        assert load_manifest(quantized[key]).graphs["llm"].quantization["weight_form"] == "dequantizelinear"
    assert load_manifest(quantized["w4"]).graphs["llm"].quantization["weight_form"] == "matmulnbits"
    w8a8 = onnx.load(str(quantized["w8a8"] / "llm.onnx"))
    inits = {i.name: i for i in w8a8.graph.initializer}
    integer = [n for n in w8a8.graph.node if n.op_type == "MatMulInteger"]
    assert integer and all(inits[n.input[1]].data_type == onnx.TensorProto.INT8 for n in integer)
    assert not [n for n in w8a8.graph.node if n.op_type == "MatMul" and n.input[1] in inits]  # no float GEMM left
    assert load_manifest(quantized["w8a8"]).graphs["llm"].quantization["weight_form"] == "matmulinteger"


def test_w8a8_is_per_token_dynamic_int8():
    """The rewritten MatMul equals its definition in NumPy: per-output-channel int8 weights, each
    row of x quantised with its own scale (an outlier row leaves the others' resolution alone),
    uint8 with zero point 128; an all-zero row gives zeros, not NaN."""
    import onnxruntime as ort

    from vlmforge.calibration.dynamic_int8 import per_channel_int8, rewrite_matmuls

    rng = np.random.default_rng(0)
    k, n = 64, 24
    weight = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((1, 5, k)).astype(np.float32)
    x[0, 1] *= 1000.0
    x[0, 3] = 0.0
    xi = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5, k])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5, n])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [xi], [y],
                                   [onnx.numpy_helper.from_array(weight, "w")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert rewrite_matmuls(model) == 1
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    wq, ws = per_channel_int8(weight)
    scale = np.maximum(np.abs(x).max(-1, keepdims=True) / 127, 1e-12)
    xq = np.rint(x / scale)
    want = (xq @ wq.astype(np.float32)) * scale * ws
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not got[0, 3].any() and np.isfinite(got).all()
    rel = np.abs(got[0, [0, 2, 4]] - (x @ weight)[0, [0, 2, 4]]).max() / np.abs(x @ weight)[0, [0, 2, 4]].max()
    assert rel < 0.02  # the 1000× row did not coarsen its neighbours


def test_fp16_keeps_feeds_float32_and_halves_the_kv_cache(quantized):
    manifest = load_manifest(quantized["fp16"])
    llm = manifest.graphs["llm"]
    dtypes = {t.name: t.dtype for t in (*llm.inputs, *llm.outputs)}
    assert dtypes["inputs_embeds"] == dtypes["logits"] == "float32"
    assert dtypes["past_key_values.0.key"] == dtypes["new.0.value"] == "float16"
    assert manifest.llm.kv_dtype == "float16"
    assert manifest.graphs["vision"].inputs[0].dtype == "float32"


def test_fp16_blocks_nodes_whose_measured_activations_overflow(tiny_llava):
    model = onnx.load(str(tiny_llava[1] / "llm.onnx"))
    pow_node = next(n for n in model.graph.node if n.op_type == "Pow")
    absmax = {pow_node.output[0]: 1e6, "mask": 3.4e38}  # x² of an outlier channel; a mask sentinel
    blocked = overflow_nodes(model, absmax)
    assert pow_node.name in blocked and "1e+06" in blocked[pow_node.name]
    consumers = [n.name for n in model.graph.node if pow_node.output[0] in n.input]
    assert set(consumers) <= set(blocked)


def test_int8_keeps_low_sqnr_gemms_in_float(calibrated, tmp_path):
    """Q/DQ only on GEMMs with constant weights; those whose input measured a low SQNR stay float."""
    export_dir, cache, _ = calibrated
    sqnr = load_cache(cache).graphs["llm"].sqnr_db
    threshold = float(np.median(list(sqnr.values())))
    manifest = quantize_model(export_dir, tmp_path / "strict", "llm=int8", calibration=cache, min_sqnr_db=threshold)
    record = manifest.graphs["llm"].quantization
    assert record["fp32_nodes"] and all("SQNR" in why for why in record["fp32_nodes"].values())
    model = onnx.load(str(tmp_path / "strict" / "llm.onnx"))
    quantized = {n.name for n in model.graph.node if n.op_type == "MatMul"
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert quantized and not quantized & set(record["fp32_nodes"]) and len(quantized) == record["num_quantized_nodes"]
    for n in model.graph.node:  # the attention products of activations (Q·Kᵀ, P·V) are never quantised
        if n.op_type == "MatMul" and n.name not in quantized:
            assert not any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    assert manifest.graphs["vision"].precision == "fp32" and manifest.graphs["vision"].quantization is None
    with pytest.raises(QuantizationError, match="every GEMM"):
        quantize_model(export_dir, tmp_path / "none", "llm=int8", calibration=cache, min_sqnr_db=200)


def test_refusals(calibrated, quantized, tmp_path):
    export_dir, cache, _ = calibrated
    with pytest.raises(QuantizationError, match="already quantised"):
        quantize_model(quantized["int8"], tmp_path / "twice", "int8", calibration=cache)
    with pytest.raises(QuantizationError, match="unknown precision 'int3'"):
        quantize_model(export_dir, tmp_path / "x", "llm=int3")
    with pytest.raises(QuantizationError, match="no calibration cache"):
        quantize_model(export_dir, tmp_path / "x", "int8", calibration=tmp_path / "missing.json")
    with pytest.raises(QuantizationError, match="K divisible by the block size"):
        quantize_model(export_dir, tmp_path / "x", "w4", target="tensorrt", block_size=128)
    with pytest.raises(FileExistsError):
        quantize_model(export_dir, quantized["w8"], "w8")
    with pytest.raises(QuantizationError, match="TensorRT cannot build"):
        quantize_model(export_dir, tmp_path / "x", "llm=w8a8", target="tensorrt")
    stale = json.loads(cache.read_text())
    stale["graphs"]["llm"]["sha256"] = "0" * 64
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    with pytest.raises(QuantizationError, match="measured on another graph"):
        quantize_model(export_dir, tmp_path / "x", "int8", calibration=tmp_path / "stale.json")
    assert not (tmp_path / "x").exists()


def test_weight_only_refuses_a_graph_without_matmul_weights():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 2, 2), np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [w])
    with pytest.raises(QuantizationError, match="no MatMul with a constant 2-D weight"):
        check_weight_only("vision", onnx.helper.make_model(graph), 4, 32, "onnxruntime")


@pytest.mark.parametrize("k, target, bits, asked, expected", [
    (256, "onnxruntime", 8, None, 128), (96, "onnxruntime", 4, None, 128),  # MatMulNBits pads a ragged K
    (256, "tensorrt", 4, None, 128), (192, "tensorrt", 4, None, 64), (96, "tensorrt", 4, None, 32),
    (96, "onnxruntime", 4, 64, 64),
])
def test_weight_only_block_size_defaults(k, target, bits, asked, expected):
    from vlmforge.calibration.weight_only import block_size_for

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, k])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    w = onnx.numpy_helper.from_array(np.ones((k, 8), np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    assert block_size_for(onnx.helper.make_model(graph), bits, asked, target) == expected


def test_verify_report(quantized, tiny_llava, tmp_path):
    report = verify_model(quantized["fp16"], tiny_llava[1], num_samples=4, new_tokens=3)
    assert report.num_samples == 4 and report.precision == {"vision": "fp16", "connector": "fp16", "llm": "fp16"}
    assert report.vision.cosine_mean > 0.9999 and report.connector_end_to_end.cosine_min > 0.999
    assert report.kl_prefill_end_to_end["max"] < 1e-4
    data = json.loads(report.to_json())
    assert {"vision", "connector_isolated", "kl_prefill_isolated", "token_agreement", "sequence_match"} <= set(data)
    assert "greedy agreement" in report.table()
    with pytest.raises(QuantizationError, match="not fp32"):
        verify_model(quantized["fp16"], quantized["int8"], num_samples=1)


def test_graphs_with_external_data(tiny_llava, calib_inputs, tmp_path):
    """Large graphs keep their weights in ``<graph>.onnx.data``: calibration and quantisation
    must read them (onnx refuses external data behind symbolic links) and write them back."""
    from vlmforge.calibration import onnx_io
    from vlmforge.export.api import hash_artifacts
    from vlmforge.runtime.manifest import MANIFEST_NAME

    export_dir = tmp_path / "external"
    shutil.copytree(tiny_llava[1], export_dir)
    model = onnx.load(str(export_dir / "llm.onnx"))
    onnx.save(model, str(export_dir / "llm.onnx"), save_as_external_data=True, location="llm.onnx.data")
    data = json.loads((export_dir / MANIFEST_NAME).read_text())
    data["artifacts"] = {k: vars(v) for k, v in hash_artifacts(export_dir).items()}
    (export_dir / MANIFEST_NAME).write_text(json.dumps(data))
    assert onnx_io.external_files(export_dir / "llm.onnx") == ["llm.onnx.data"]
    calibrate(export_dir, calib_inputs[0], calib_inputs[1], num_samples=2)
    for word in ("int8", "fp16", "w4"):
        quantize_model(export_dir, tmp_path / word, f"llm={word}")
        assert Pipeline.load(tmp_path / word).generate("USER: <image>\nHi ASSISTANT:", images=[synthetic_images(1)[0][1]],
                                                         max_new_tokens=2).token_ids
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")], "scratch files left in the model folder"
