"""The optional INT8 KV cache (quantize --kv-cache int8, calibration/kv_int8.py): keys/values int8
with one scale per (token, head), on the tiny random LLaVA's append-layout export — the graph's
new columns against their NumPy definition, chunked prefill, generate / generate_batch / chat,
the cache's exact bytes, the fidelity report and the refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from vlmforge.calibration import QuantizationError, quantize_model, verify_model
from vlmforge.runtime import Pipeline, load_manifest
from vlmforge.runtime.serving import Request

PROMPT = "USER: <image>\nDescribe it. ASSISTANT:"


@pytest.fixture(scope="module")
def kv8(tiny_llava, tmp_path_factory):
    """(fp32 export, its int8-KV copy, a w4 LLM with the int8 KV cache)."""
    root = tmp_path_factory.mktemp("kv8")
    quantize_model(tiny_llava[1], root / "kv8", "fp32", kv_cache="int8")
    quantize_model(tiny_llava[1], root / "w4kv8", "llm=w4", kv_cache="int8")
    return tiny_llava[1], root / "kv8", root / "w4kv8"


def _image(seed: int, h: int = 40, w: int = 36) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_the_manifest_and_graph_declare_int8_keys_with_scales(kv8):
    fp32, folder, w4 = kv8
    for path in (folder, w4):
        m = load_manifest(path, verify=True)
        assert m.llm.kv_dtype == "int8" and m.graphs["llm"].quantization["kv_cache"]["num_cache_inputs"] == 2 * m.llm.num_layers
        io = {t.name: t for t in (*m.graphs["llm"].inputs, *m.graphs["llm"].outputs)}
        assert io["past_key_values.0.key"].dtype == "int8" and io["new.1.value"].dtype == "int8"
        assert io["past_key_values.0.key_scale"].dtype == "float32" and io["past_key_values.0.key_scale"].shape[-1] == 1
        graph = onnx.load(str(path / m.graphs["llm"].path), load_external_data=False).graph
        declared = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)}
        assert declared["past_key_values.0.key"] == onnx.TensorProto.INT8 == declared["new.0.key"]
        assert declared["new.0.key_scale"] == onnx.TensorProto.FLOAT
    spec, ref = load_manifest(folder).llm, load_manifest(fp32).llm
    assert spec.kv_bytes_per_token == 2 * spec.num_layers * spec.num_kv_heads * (spec.head_dim + 4)
    assert ref.kv_bytes_per_token == 2 * ref.num_layers * ref.num_kv_heads * ref.head_dim * 4
    assert load_manifest(w4).graphs["llm"].precision == "int4-weight"


def test_new_columns_are_the_float_ones_rounded_per_token_and_head(kv8):
    """One 5-token step of both graphs: int8 · scale is the float key within half a step of its
    own scale (amax / 127), and the attention read the rounded keys (logits close, not equal)."""
    import onnxruntime as ort

    fp32, folder, _ = kv8
    m = load_manifest(folder)
    spec = m.llm
    rng = np.random.default_rng(0)
    feeds = {"inputs_embeds": rng.standard_normal((1, 5, spec.hidden_size), dtype=np.float32),
             "attention_mask": np.ones((1, 5), np.int64), "position_ids": np.arange(5, dtype=np.int64)[None]}
    empty = lambda dtype, last: np.zeros((1, spec.num_kv_heads, 0, last), dtype)  # noqa: E731
    ref = ort.InferenceSession(str(fp32 / m.graphs["llm"].path))
    ref_out = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {
        **feeds, **{f"past_key_values.{i}.{k}": empty(np.float32, spec.head_dim) for i in range(spec.num_layers)
                    for k in ("key", "value")}})))
    q = ort.InferenceSession(str(folder / m.graphs["llm"].path))
    past = {f"past_key_values.{i}.{k}": empty(np.int8, spec.head_dim) for i in range(spec.num_layers) for k in ("key", "value")}
    past.update({f"{n}_scale": empty(np.float32, 1) for n in list(past)})
    out = dict(zip([o.name for o in q.get_outputs()], q.run(None, {**feeds, **past})))
    for name in ("new.0.key", "new.0.value", f"new.{spec.num_layers - 1}.key"):
        x, qx, s = ref_out[name], out[name], out[f"{name}_scale"]
        assert qx.dtype == np.int8 and s.shape == x.shape[:-1] + (1,)
        # the two graphs' float keys agree to ~1e-4 (ONNX Runtime fuses them differently), no closer
        np.testing.assert_allclose(s, np.abs(x).max(-1, keepdims=True) / 127, rtol=1e-3)
        assert np.all(np.abs(qx.astype(np.float32) * s - x) <= s * 0.55)
        assert np.abs(qx).max() == 127
    logits_err = np.abs(out["logits"] - ref_out["logits"]).max()
    assert 0 < logits_err < 0.05 * np.abs(ref_out["logits"]).max()


def test_chunked_prefill_reads_what_one_shot_prefill_reads(kv8):
    """The step's own tokens attend to their rounded keys, as later tokens read them from the cache:
    a 50-token prefill in chunks of 7 gives the one-shot logits and the same int8 cache."""
    from vlmforge.runtime.decode import prefill
    from vlmforge.runtime.stats import NullTimer

    pipe = Pipeline.load(kv8[1])
    embeds = np.random.default_rng(1).standard_normal((1, 50, pipe.manifest.llm.hidden_size), dtype=np.float32)
    runs = []
    for chunk in (None, 7):
        pipe.decoder.reset()
        logits = prefill(pipe.decoder, embeds, NullTimer(), chunk=chunk).copy()
        runs.append((logits, [v.copy() for v in pipe.decoder.cache.views()]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], atol=1e-4, rtol=1e-4)
    for a, b in zip(runs[0][1], runs[1][1]):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == np.int8:  # float reassociation may move a rounding boundary by one step, rarely
            assert np.abs(a.astype(np.int16) - b).max() <= 1 and np.mean(a != b) < 0.01
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4)


def test_generate_batch_and_chat_equal_generate_and_the_cache_bytes_are_exact(kv8):
    pipe = Pipeline.load(kv8[1])
    reqs = [Request(prompt=PROMPT, images=[_image(i, 30 + 6 * i, 40)], max_new_tokens=5 + 2 * i) for i in range(4)]
    solo = [pipe.generate(**r.kwargs()) for r in reqs]
    assert all(len(r.token_ids) >= 1 for r in solo)
    spec, cache = pipe.manifest.llm, pipe.decoder.cache  # the last request's
    n = cache.num_tokens
    assert solo[-1].stats.num_prompt_tokens <= n < solo[-1].stats.num_prompt_tokens + len(solo[-1].token_ids)
    assert solo[-1].stats.kv_cache_bytes == spec.cache_bytes(n) == n * spec.kv_bytes_per_token == cache.nbytes
    assert cache.allocated_bytes == cache.capacity * spec.kv_bytes_per_token  # int8 columns + float32 scales
    batch = pipe.generate_batch(reqs)
    assert [b.token_ids for b in batch] == [s.token_ids for s in solo]
    chat = pipe.chat(max_new_tokens=6)  # the second turn reads the first's int8 cache, kept
    first = chat.send("Describe it.", images=[_image(0)])
    second = chat.send("And the colours?")
    cold = pipe.generate(messages=chat.messages[:-1], images=[_image(0)], max_new_tokens=6)
    assert second.stats.cached_prompt_tokens >= first.stats.num_prompt_tokens - 1
    assert second.token_ids == cold.token_ids


def test_fidelity_is_reported_by_verify(kv8):
    report = verify_model(kv8[1], kv8[0], num_samples=6, new_tokens=6)
    assert report.precision["llm"] == "fp32"
    assert report.kl_prefill_end_to_end["max"] < 1e-3 and report.token_agreement >= 0.9
    assert "greedy agreement" in report.table()


def test_refusals(tiny_llava, kv8, tmp_path):
    from vlmforge.export import export_model
    from vlmforge.export.tensorrt.options import plan_graph
    from vlmforge.runtime.errors import VlmforgeError

    concat = tmp_path / "concat"
    export_model(tiny_llava[0], concat, kv_layout="concat", check=False)
    with pytest.raises(QuantizationError, match="append KV layout .* --kv-layout append"):
        quantize_model(concat, tmp_path / "x", "fp32", kv_cache="int8")
    with pytest.raises(QuantizationError, match="ONNX Runtime only"):
        quantize_model(tiny_llava[1], tmp_path / "x", "llm=w8", kv_cache="int8", target="tensorrt")
    with pytest.raises(QuantizationError, match="choose float or int8"):
        quantize_model(tiny_llava[1], tmp_path / "x", "fp32", kv_cache="fp8")
    with pytest.raises(QuantizationError, match="already quantised"):
        quantize_model(kv8[1], tmp_path / "x", "llm=w4")
    assert not (tmp_path / "x").exists()
    spec = load_manifest(kv8[1]).graphs["llm"]
    with pytest.raises(VlmforgeError, match="int8 KV cache .* ONNX Runtime only"):
        plan_graph("llm", spec, None)
