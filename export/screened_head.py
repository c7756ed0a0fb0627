"""The screened LM head: greedy decoding's argmax, exact in FP32, from a quarter of the head's bytes.

Decode reads every weight once per token, and a small LLM's head is a large share of them
(Qwen2-0.5B: 151,936 × 896 FP32 = 545 MB of 1.98 GB). Greedy decoding needs only the argmax of
the logits, so the rewritten graph

1. computes approximate logits ``a`` with an INT8 copy of the head (``MatMulNBits``, 136 MB), and a
   bound ``e`` with |a − exact| ≤ e for every row, from the quantisation steps (below);
2. keeps as candidates the rows with a + e ≥ max(a − e) — the row of the exact maximum is always
   one of them — typically a few dozen of 151,936;
3. recomputes the candidates exactly from the FP32 rows (a Gather of n rows, n × d MACs) and
   writes them over ``a``.

Every other row's value stays below the exact maximum, so ``argmax(logits)`` is the FP32 head's
argmax; the other values are approximations (within ``e``). Sampling, top-k/p or a repetition
penalty need every logit exact: the manifest says ``llm.head == "screened"`` and the runtime
refuses them with that export (``runtime/sampling.py``).

The bound. ONNX Runtime's fast INT8 kernel (accuracy level 4) quantises its input too, per block
of K, symmetric: ``q = rint(x / s)``, ``s = max|x_block| / 127``. An input already on that grid
comes through unchanged, so the graph quantises h itself, h = ĥ + δ, and δ once more, δ ≈ δ̂, and
feeds both rows [ĥ; δ̂] to one MatMulNBits call (the weights are read once for both). With Ŵ the
dequantised weights (|W − Ŵ| ≤ s_w / 2, |Ŵ| ≤ 127 s_w, per row n and block b):

    Ŵĥ + Ŵδ̂ − Wh = (Ŵ − W)h + Ŵ(δ̂ − δ)
    |error_n| ≤ Σ_b s_w[n, b] · (½ Σ_{k∈b} |h_k| + 63.5 · B · s_δ[b]) + float rounding

computed per step as one small product (nb × vocab scales), with a margin for float32 rounding
(ROUNDING, far above the ~1e-6 relative error of these sums). ``tests/test_screened_head.py``
checks the bound on random heads and the argmax against the FP32 head.
"""

from __future__ import annotations

import numpy as np

BLOCK = 128  # along K; MatMulNBits' fast path (calibration/weight_only.py measured 32 at 1.6× the time)
ROUNDING = 1e-4  # relative margin on each block's worst-case product, for float32 rounding


def quantize_rows(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) float32 → MatMulNBits' B (N, nb, block) uint8 (zero point 128) and scales (N, nb) float32."""
    k, n = weight.shape
    nb = -(-k // block)
    w = np.zeros((n, nb * block), np.float32)
    w[:, :k] = weight.T
    w = w.reshape(n, nb, block)
    scales = np.abs(w).max(axis=2) / 127.0  # (N, nb)
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(w / safe[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scales.astype(np.float32)


def screen_lm_head(model, output: str = "logits", block: int = BLOCK) -> bool:
    """Rewrite ``model`` (onnx ModelProto, weights loaded) in place: the MatMul with a constant
    (d, vocab) weight that produces ``output`` becomes the screened head. False if there is none."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    node = next((n for n in graph.node if output in n.output and n.op_type == "MatMul"
                 and n.input[1] in weights and len(weights[n.input[1]].dims) == 2), None)
    if node is None:
        return False
    weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # (d, vocab)
    if sum(1 for n in graph.node for i in n.input if i == node.input[1]) == 1:
        graph.initializer.remove(weights[node.input[1]])
    nodes, inits = _head_nodes(node.input[0], output, weight, block)
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(index + offset, new)
    graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in inits.items())
    if not any(op.domain == "com.microsoft" for op in model.opset_import):  # MatMulNBits' domain
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return True


def _head_nodes(h: str, out: str, weight: np.ndarray, block: int):
    """Nodes and initializers computing the screened logits ``out`` (b, 1, vocab) from ``h`` (b, 1, d)."""
    from onnx import helper

    k, n = weight.shape
    nb = -(-k // block)
    q, scales = quantize_rows(weight, block)
    p = "screened_head_"
    inits = {
        p + "q": q,  # (vocab, nb, block) uint8
        p + "scales": scales.reshape(-1),  # (vocab · nb,)
        p + "bound_scales": np.ascontiguousarray(scales.T),  # (nb, vocab): s_w per block, for the bound
        p + "rows": np.ascontiguousarray(weight.T),  # (vocab, d) float32: the exact rows
        p + "pads": np.array([0, 0, 0, 0, 0, nb * block - k], np.int64),
        p + "blocks": np.array([0, 1, nb, block], np.int64),  # (b, 1, K') → (b, 1, nb, block)
        p + "flat": np.array([0, 2, nb * block], np.int64),  # (b, 2, nb, block) → (b, 2, K')
        p + "k": np.array([k], np.int64),
        p + "zero": np.array([0], np.int64),
        p + "last": np.array([-1], np.int64),
        p + "one": np.array([1], np.int64),
        p + "two": np.array([2], np.int64),
        p + "127": np.array(127.0, np.float32),
        p + "tiny": np.array(np.finfo(np.float32).tiny, np.float32),
        p + "half": np.array(0.5, np.float32),
        p + "delta_term": np.array(63.5 * block, np.float32),
        p + "rounding": np.array(ROUNDING * 127.0 * block, np.float32),
        p + "margin": np.array(1.0 + 1e-3, np.float32),
    }
    t = lambda name: p + name  # noqa: E731
    mk = helper.make_node
    nodes = [
        # h (b, 1, d) → blocks (b, 1, nb, B), zero-padded past d
        mk("Pad", [h, t("pads")], [t("h_pad")]),
        mk("Reshape", [t("h_pad"), t("blocks")], [t("h_blocks")]),
        *_quantize(t, "h_blocks", "h_hat", "h_scale"),  # ĥ, s_h (b, 1, nb, 1)
        mk("Sub", [t("h_blocks"), t("h_hat")], [t("delta")]),
        *_quantize(t, "delta", "delta_hat", "delta_scale"),  # δ̂, s_δ
        # the two rows [ĥ; δ̂] (b, 2, d) through one INT8 GEMM, summed → a (b, 1, vocab)
        mk("Concat", [t("h_hat"), t("delta_hat")], [t("rows_blocks")], axis=1),
        mk("Reshape", [t("rows_blocks"), t("flat")], [t("rows_pad")]),
        mk("Slice", [t("rows_pad"), t("zero"), t("k"), t("last")], [t("rows_in")]),
        mk("MatMulNBits", [t("rows_in"), t("q"), t("scales")], [t("parts")], domain="com.microsoft",
           K=k, N=n, bits=8, block_size=block, accuracy_level=4),
        mk("ReduceSum", [t("parts"), t("one")], [t("approx")], keepdims=1),
        # the bound e (b, 1, vocab) = c (b, 1, nb) @ s_w (nb, vocab)
        mk("Abs", [t("h_blocks")], [t("h_abs")]),
        mk("ReduceSum", [t("h_abs"), t("last")], [t("h_l1")], keepdims=0),
        mk("Mul", [t("h_l1"), t("half")], [t("c_weight")]),
        mk("Squeeze", [t("delta_scale"), t("last")], [t("s_delta")]),
        mk("Mul", [t("s_delta"), t("delta_term")], [t("c_delta")]),
        mk("ReduceMax", [t("h_abs"), t("last")], [t("h_max")], keepdims=0),
        mk("Mul", [t("h_max"), t("rounding")], [t("c_round")]),
        mk("Sum", [t("c_weight"), t("c_delta"), t("c_round")], [t("c")]),
        mk("MatMul", [t("c"), t("bound_scales")], [t("bound_raw")]),
        mk("Mul", [t("bound_raw"), t("margin")], [t("bound")]),
        # candidates: a + e ≥ max(a − e) over the vocabulary
        mk("Sub", [t("approx"), t("bound")], [t("low")]),
        mk("ReduceMax", [t("low"), t("last")], [t("floor")], keepdims=1),
        mk("Add", [t("approx"), t("bound")], [t("high")]),
        mk("GreaterOrEqual", [t("high"), t("floor")], [t("candidate")]),
        mk("NonZero", [t("candidate")], [t("where")]),
        mk("Transpose", [t("where")], [t("index")], perm=[1, 0]),  # (m, 3): batch, 0, vocab id
        mk("Gather", [t("index"), t("two")], [t("ids")], axis=1),  # (m, 1)
        mk("Squeeze", [t("ids"), t("one")], [t("ids_flat")]),
        mk("Gather", [t("rows"), t("ids_flat")], [t("cand_rows")], axis=0),  # (m, d)
        mk("Slice", [t("index"), t("zero"), t("two"), t("one")], [t("batch_pos")]),  # (m, 2)
        mk("GatherND", [h, t("batch_pos")], [t("cand_h")]),  # (m, d)
        mk("Mul", [t("cand_rows"), t("cand_h")], [t("products")]),
        mk("ReduceSum", [t("products"), t("last")], [t("exact")], keepdims=0),  # (m,)
        mk("ScatterND", [t("approx"), t("index"), t("exact")], [out]),
    ]
    return nodes, inits


def _quantize(t, x: str, out: str, scale: str):
    """Per-block symmetric INT8 grid, as the kernel quantises: s = max|x| / 127, x̂ = rint(x / s) · s."""
    from onnx import helper

    mk = helper.make_node
    return [
        mk("Abs", [t(x)], [t(x + "_abs")]),
        mk("ReduceMax", [t(x + "_abs"), t("last")], [t(x + "_amax")], keepdims=1),
        mk("Div", [t(x + "_amax"), t("127")], [t(scale)]),
        mk("Max", [t(scale), t("tiny")], [t(scale + "_safe")]),
        mk("Div", [t(x), t(scale + "_safe")], [t(x + "_ratio")]),
        mk("Round", [t(x + "_ratio")], [t(x + "_int")]),
        mk("Mul", [t(x + "_int"), t(scale + "_safe")], [t(out)]),
    ]
