"""One decode step's attention for one layer of the bench model's decoder (14 heads, 2 KV heads,
head_dim 64) at 600 / 2,400 / 8,000 tokens of cache, on ONNX Runtime's CPU kernels, 2 threads:

* GQA: ``com.microsoft.GroupQueryAttention`` with its past/present on one shared buffer (bound to
  both input and output through I/O binding) — the fused, in-place op issue #25 proposed;
* append: the form vlmforge's append-layout graph has (export/append_cache.py): two MatMuls
  (cached keys, new keys), concat, mask, softmax, split, two MatMuls, add.

    python benchmarks/bench_attention_ops.py

Measured 2026-12-04 (quiet machine): GQA 0.067 / 0.282 / 0.880 ms, append 0.060 / 0.194 / 0.458 ms
per layer — the fused op is 1.9× *slower* at 8,000 on CPU, so the export keeps the append form.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h

H, KV, D = 14, 2, 64  # Qwen2-0.5B's attention
STEPS, WARMUP = 30, 5


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def io(name, dtype, shape):
    return h.make_tensor_value_info(name, dtype, shape)


def gqa_model():
    """query (1, s, H·D), key / value (1, s, KV·D), past (1, KV, capacity, D) shared with present."""
    inputs = [io("q", T.FLOAT, [1, "s", H * D]), io("k", T.FLOAT, [1, "s", KV * D]), io("v", T.FLOAT, [1, "s", KV * D]),
              io("pk", T.FLOAT, [1, KV, "c", D]), io("pv", T.FLOAT, [1, KV, "c", D]),
              io("seqlens_k", T.INT32, [1]), io("total", T.INT32, [])]
    outputs = [io(n, T.FLOAT, None) for n in ("o", "prk", "prv")]
    node = h.make_node("GroupQueryAttention", [i.name for i in inputs], ["o", "prk", "prv"], domain="com.microsoft",
                       num_heads=H, kv_num_heads=KV)
    return h.make_model(h.make_graph([node], "gqa", inputs, outputs),
                        opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)])


def append_model():
    """query (1, KV, G·s, D) against the cache (1, KV, capacity, D) and the new (1, KV, s, D)."""
    inputs = [io("q", T.FLOAT, [1, KV, "gs", D]), io("k", T.FLOAT, [1, KV, "s", D]), io("v", T.FLOAT, [1, KV, "s", D]),
              io("pk", T.FLOAT, [1, KV, "c", D]), io("pv", T.FLOAT, [1, KV, "c", D]), io("mask", T.FLOAT, [1, 1, 1, "cs"])]
    n = h.make_node
    nodes = [n("Transpose", ["pk"], ["pkt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "pkt"], ["s1"]),
             n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], ["s2"]),
             n("Concat", ["s1", "s2"], ["sc"], axis=-1), n("Add", ["sc", "mask"], ["sm"]), n("Softmax", ["sm"], ["w"], axis=-1),
             n("Shape", ["pk"], ["pshape"]), n("Slice", ["pshape", "two", "three"], ["past"]),
             n("Shape", ["k"], ["kshape"]), n("Slice", ["kshape", "two", "three"], ["new"]),
             n("Concat", ["past", "new"], ["splits"], axis=0), n("Split", ["w", "splits"], ["w1", "w2"], axis=-1),
             n("MatMul", ["w1", "pv"], ["o1"]), n("MatMul", ["w2", "v"], ["o2"]), n("Add", ["o1", "o2"], ["o"])]
    inits = [onnx.numpy_helper.from_array(np.array([2]), "two"), onnx.numpy_helper.from_array(np.array([3]), "three")]
    return h.make_model(h.make_graph(nodes, "append", inputs, [io("o", T.FLOAT, None)], inits),
                        opset_imports=[h.make_opsetid("", 18)])


def median_run(sess, binding) -> float:
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        sess.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    return float(np.median(times[WARMUP:]))


def main() -> None:
    rng = np.random.default_rng(0)
    gqa, append = session(gqa_model()), session(append_model())
    for context in (600, 2400, 8000):
        capacity = -(-(context + 1) // 64) * 64
        past_key = rng.standard_normal((1, KV, capacity, D), dtype=np.float32)
        pk, pv = ort.OrtValue.ortvalue_from_numpy(past_key), ort.OrtValue.ortvalue_from_numpy(past_key.copy())
        b = gqa.io_binding()
        for name, shape in (("q", (1, 1, H * D)), ("k", (1, 1, KV * D)), ("v", (1, 1, KV * D))):
            b.bind_cpu_input(name, rng.standard_normal(shape, dtype=np.float32))
        b.bind_ortvalue_input("pk", pk)
        b.bind_ortvalue_input("pv", pv)
        b.bind_cpu_input("seqlens_k", np.array([context], np.int32))
        b.bind_cpu_input("total", np.array(capacity, np.int32))
        b.bind_output("o")
        b.bind_ortvalue_output("prk", pk)  # the same buffer: GQA writes the new column in place
        b.bind_ortvalue_output("prv", pv)
        fused = median_run(gqa, b)
        mask = np.zeros((1, 1, 1, capacity + 1), np.float32)
        mask[..., context:capacity] = -1e30  # the free columns
        new = rng.standard_normal((1, KV, 1, D), dtype=np.float32)
        feeds = {"q": rng.standard_normal((1, KV, H // KV, D), dtype=np.float32), "k": new, "v": new,
                 "pk": past_key, "pv": past_key, "mask": mask}
        b = append.io_binding()
        for name, x in feeds.items():
            b.bind_cpu_input(name, x)
        b.bind_output("o")
        ours = median_run(append, b)
        print(f"{context:5d} tokens: GQA {fused * 1e3:.3f} ms, append {ours * 1e3:.3f} ms per layer "
              f"(× 24 layers: {24e3 * fused:.1f} vs {24e3 * ours:.1f} ms)")


if __name__ == "__main__":
    main()
