"""The screened LM head (export/screened_head.py): the argmax equals the FP32 head's, the bound holds."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from vlmforge.export.screened_head import screen_lm_head  # noqa: E402

PREFIX = "screened_head_"


def _head_model(weight: np.ndarray):
    """h (b, 1, d) → logits = h @ weight, the shape of the decoder graph's last MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    d, v = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "head_weight"], ["logits"])], "head",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 1, d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, v])],
        [numpy_helper.from_array(weight, "head_weight")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _session(model, extra_outputs=()):
    from onnx import helper

    for name in extra_outputs:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("d,v,std", [(256, 5000, 0.02), (200, 3001, 0.05), (64, 700, 1.0)])
def test_argmax_equals_the_fp32_head_and_the_bound_holds(d, v, std):
    rng = np.random.default_rng(d)
    weight = (rng.standard_normal((d, v)) * std).astype(np.float32)
    weight[:, 7] *= 3  # rows of very different scale: the bound is per row and block
    model = _head_model(weight)
    assert screen_lm_head(model)
    assert not any(n.op_type == "MatMul" and "head_weight" in n.input for n in model.graph.node)
    sess = _session(model, [PREFIX + "approx", PREFIX + "bound", PREFIX + "candidate"])
    candidates = []
    for trial in range(40):
        scale = [1.0, 30.0, 1e-3][trial % 3]
        h = (rng.standard_normal((2, 1, d)) * scale).astype(np.float32)
        h[1, 0, : d // 3] = 0.0  # a zero block
        logits, approx, bound, cand = sess.run(None, {"h": h})
        exact = (h.astype(np.float64) @ weight.astype(np.float64))  # (2, 1, v)
        err = np.abs(approx - exact)
        assert (err <= bound).all(), float((err / bound).max())
        np.testing.assert_array_equal(logits.argmax(-1), exact.argmax(-1))
        np.testing.assert_allclose(logits[cand], exact[cand], rtol=1e-5, atol=1e-5 * np.abs(exact).max())
        candidates.append(cand.sum(-1).max())
    assert np.median(candidates) < v / 10  # it screens: most rows are never recomputed


def test_no_head_matmul_leaves_the_model_alone():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph)
    assert not screen_lm_head(model)
    assert [n.op_type for n in model.graph.node] == ["Relu"]


def test_screened_export_generates_the_full_exports_tokens(tiny_llava, tmp_path, rng):
    from conftest import random_images

    from vlmforge.bench import _llm_weight_bytes
    from vlmforge.cli import main
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.manifest import load_manifest

    model_dir, full_out = tiny_llava
    out = tmp_path / "screened"
    assert main(["export", str(model_dir), "-o", str(out), "--lm-head", "screened"]) == 0
    assert load_manifest(out).llm.head == "screened" and load_manifest(full_out).llm.head == "full"
    screened, full = Pipeline.load(out), Pipeline.load(full_out)
    # bytes a decode step reads: the file minus the FP32 rows it only gathers candidates from
    spec = screened.manifest.llm
    assert _llm_weight_bytes(screened) == screened.manifest.artifacts["llm.onnx"].bytes - 4 * spec.vocab_size * spec.hidden_size
    assert _llm_weight_bytes(full) == full.manifest.artifacts["llm.onnx"].bytes
    prompt = "USER: <image>\nWhat is in the picture? ASSISTANT:"
    for image in random_images(rng, [(40, 60), (97, 33), (224, 224)]):
        a = screened.generate(prompt, images=[image], max_new_tokens=24, ignore_eos=True)
        b = full.generate(prompt, images=[image], max_new_tokens=24, ignore_eos=True)
        assert a.token_ids == b.token_ids
    with pytest.raises(ValueError, match="screens its LM head.*--lm-head full"):
        screened.generate(prompt, images=[image], max_new_tokens=2, do_sample=True)
    with pytest.raises(ValueError, match="screens its LM head"):
        screened.generate(prompt, images=[image], max_new_tokens=2, repetition_penalty=1.2)


def test_screened_export_is_refused_where_it_cannot_work(tiny_llava, tmp_path):
    from vlmforge.calibration.precision import QuantizationError
    from vlmforge.calibration.quantize import quantize_model
    from vlmforge.export import export_model
    from vlmforge.export.tensorrt.build import plan
    from vlmforge.export.tensorrt.options import BuildOptions
    from vlmforge.runtime.manifest import load_manifest

    model_dir, _ = tiny_llava
    with pytest.raises(ValueError, match="lm_head='exact'"):
        export_model(model_dir, tmp_path / "x", lm_head="exact")
    assert not (tmp_path / "x").exists()
    out = tmp_path / "screened"
    export_model(model_dir, out, lm_head="screened", check=False)
    with pytest.raises(ValueError, match="TensorRT cannot parse.*--lm-head full"):
        plan(load_manifest(out), BuildOptions())
    with pytest.raises(QuantizationError, match="--lm-head full"):
        quantize_model(out, tmp_path / "q", "w8")
