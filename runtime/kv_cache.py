"""The KV cache and the LLM step that owns it.

ONNX Runtime: the cache lives in ``OrtValue``s that one step's outputs (present.*) hand to the
next step's inputs (past_key_values.*) through I/O binding — the cache never passes through
NumPy or Python copies between steps; only the new embeddings go in and the logits come out.
The binding is ORT's C-level one (``ort_binding.FastBinding``): the Python wrapper costs more
per step than everything else the host does.
"""

from __future__ import annotations

import time

import numpy as np

from .manifest import LLMSpec


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, present


class OrtKVCache:
    """Per-layer key/value OrtValues of shape (1, kv_heads, num_tokens, head_dim) — a bounded
    sliding-window layer's (1, kv_heads, min(num_tokens, window − 1), head_dim): the graph trims it."""

    def __init__(self, spec: LLMSpec):
        self.spec = spec
        self.past_names, self.present_names = cache_names(spec.num_layers)
        self.reset()

    def reset(self) -> None:
        import onnxruntime as ort

        empty = np.zeros((1, self.spec.num_kv_heads, 0, self.spec.head_dim), dtype=self.spec.kv_dtype)
        self.values = [ort.OrtValue.ortvalue_from_numpy(empty) for _ in self.past_names]  # then C-level ones
        self.num_tokens = 0

    @property
    def nbytes(self) -> int:
        return self.spec.cache_bytes(self.num_tokens)


class OrtDecoder:
    """``step(embeds, positions) -> last logits``, appending to its cache."""

    cache_device = "cpu"  # where present.* are allocated; they come back as the next step's past.*
    chunked_prefill = True  # a step takes any number of new tokens after any past (decode.prefill chunks)

    def __init__(self, session, spec: LLMSpec):
        self.session = session.session  # the onnxruntime.InferenceSession
        self.spec = spec
        self.cache = OrtKVCache(spec)
        import onnxruntime as ort

        # logits land in buffers we own, 2 × (1, 1, vocab), alternating: no allocation or copy per step,
        # and the logits a step returns stay valid through the following step
        vocab = session.spec.outputs[0].shape[-1]
        shape = (1, 1, vocab if isinstance(vocab, int) else spec.vocab_size)
        self._logits = [np.empty(shape, dtype=np.float32) for _ in range(2)]
        self._logits_values = [ort.OrtValue.ortvalue_from_numpy(x) for x in self._logits]
        self._turn = 0  # which logits buffer the next step writes
        self._ones = np.ones((1, max(1, spec.max_context)), dtype=np.int64)  # attention_mask: a prefix view per step
        self._binding = make_binding(self.session, self.cache_device)
        inputs = {i.name for i in self.session.get_inputs()}
        self._takes_positions = "position_ids" in inputs  # T5-style decoders use relative bias instead
        self._step_inputs = spec.step_inputs  # fed by name at every step (token inputs, attention spans)
        self.constants: dict = {}  # name → OrtValue bound at every step (cross-attention K/V, memory mask)
        self.engine_s: list[float] = []  # seconds inside ONNX Runtime per step: the rest is host overhead

    def reset(self) -> None:
        self.cache.reset()
        self.constants = {}
        self.engine_s = []

    def save_state(self) -> tuple:
        """This generation's cache, memory and timings: references only (steps replace, never mutate, them)."""
        return self.cache.values, self.cache.num_tokens, self.constants, self.engine_s

    def load_state(self, state: tuple) -> None:
        self.cache.values, self.cache.num_tokens, self.constants, self.engine_s = state

    def set_memory(self, arrays: dict[str, np.ndarray]) -> None:
        """Inputs that stay fixed for a whole generation (cross K/V of the memory): wrapped once, never copied again."""
        import onnxruntime as ort

        self.constants = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def step(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, extra: dict | None = None) -> np.ndarray:
        """inputs_embeds (1, s, d) float32, position_ids (1, s) int64 → logits (vocab,) float32.
        ``extra``: the manifest's per-token inputs for these s tokens (runtime/token_inputs.py).

        The logits are a view of a buffer the step after next overwrites: copy them to keep them longer."""
        seq = inputs_embeds.shape[1]
        total = self.cache.num_tokens + seq
        if total > self._ones.shape[1]:  # past the declared context (the pipeline refuses that earlier)
            self._ones = np.ones((1, total), dtype=np.int64)
        b = self._binding
        b.bind_array("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        b.bind_array("attention_mask", self._ones[:, :total])  # (1, total): a contiguous prefix view
        if self._takes_positions:
            b.bind_array("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        for name, value in zip(self.cache.past_names, self.cache.values):
            b.bind_value(name, value)
        for name, value in self.constants.items():
            b.bind_value(name, value)
        extra = extra or {}
        for name in self._step_inputs:
            if name not in extra:
                raise ValueError(f"the llm graph takes {name} at every step; pass it in extra= "
                                 "(runtime/token_inputs.plan_token_inputs builds it)")
        for name, value in extra.items():  # each in the dtype plan_token_inputs gives it
            b.bind_array(name, np.ascontiguousarray(value))
        turn = self._turn
        self._turn ^= 1
        b.bind_value_output("logits", self._logits_values[turn])
        for name in self.cache.present_names:
            b.bind_device_output(name)  # rebound every step: the cache grows by seq tokens
        start = time.perf_counter()
        b.run()
        self.engine_s.append(time.perf_counter() - start)
        self.cache.values = b.outputs()[1:]
        self.cache.num_tokens = total
        return self._logits[turn][0, -1]


def make_binding(session, device: str):
    """ORT's C-level binding when this onnxruntime has it, else the public ``IOBinding`` behind the same verbs."""
    from .ort_binding import FastBinding, PublicBinding

    return FastBinding(session, device) if FastBinding.available(session) else PublicBinding(session, device)
