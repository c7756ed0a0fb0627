"""The model runner: one LLM step for one prefill chunk or for a whole batch of decoding rows.

It binds the graph's inputs as the manifest declares them (inputs_embeds, attention_mask,
position_ids, per-token inputs, fixed cross-attention inputs, the cache) and returns the logits
and the new cache; it holds no request state. Its binding is its own, so it shares the ONNX
Runtime session with the pipeline's one-request decoder (``Session.Run`` is thread-safe).
"""

from __future__ import annotations

import numpy as np

from ..kv_cache import OrtDecoder, cache_io, empty_cache, make_binding
from ..manifest import GraphSpec, LLMSpec
from .batch_cache import as_array


def batch_axis(shape: list, default: int = 0) -> int:
    """Where a declared input's batch axis is (position_ids: 1 for M-RoPE's (3, batch, seq))."""
    return next((i for i, d in enumerate(shape) if d == "batch"), default)


class ModelRunner:
    def __init__(self, decoder: OrtDecoder, spec: LLMSpec, graph: GraphSpec):
        self.session = decoder.session
        self.spec = spec
        self.binding = make_binding(self.session, decoder.cache_device)
        self.past_names, self.present_names = cache_io(spec)
        self.append = spec.cache_layout == "append"  # the graph returns the new columns only
        shapes = {t.name: t.shape for t in graph.inputs}
        self.takes_positions = "position_ids" in shapes
        self.batch_axes = {name: batch_axis(shape, 0) for name, shape in shapes.items()}
        self.empty = empty_cache(spec)  # (1, kv_heads, 0, last) per past input

    def empty_cache(self) -> list[np.ndarray]:
        return list(self.empty)

    def run(self, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list,
            inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
        """embeds (b, s, d), mask (b, past + s), positions (…, b, s), past per past input, ``inputs``:
        further inputs by name (token inputs, fixed memory) → (logits (b, vocab), presents)."""
        b = self.binding
        b.bind_array("inputs_embeds", np.ascontiguousarray(embeds, dtype=np.float32))
        b.bind_array("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        if self.takes_positions:
            b.bind_array("position_ids", np.ascontiguousarray(positions, dtype=np.int64))
        for name, value in inputs.items():
            b.bind_array(name, np.ascontiguousarray(value))
        for name, value in zip(self.past_names, past):
            if isinstance(value, np.ndarray):
                b.bind_array(name, np.ascontiguousarray(value))
            else:
                b.bind_value(name, value)
        b.bind_device_output("logits")
        for name in self.present_names:
            b.bind_device_output(name)
        b.run()
        out = b.outputs()
        logits = np.array(out[0].numpy()[:, -1], dtype=np.float32)  # (b, vocab), ours: the next step reuses buffers
        if self.append:  # new.* (b, kv, s, hd) only: ``extend`` (prefill) or BatchCache.after_step (decode) keeps them
            return logits, [n.numpy() for n in out[1:]]
        return logits, out[1:]

    def extend(self, past: list, presents: list) -> list:
        """A prefill chunk's cache: append graphs' past + new columns; concat graphs' presents already are."""
        if not self.append:
            return presents
        return [np.concatenate([as_array(p), n], axis=2) for p, n in zip(past, presents)]
