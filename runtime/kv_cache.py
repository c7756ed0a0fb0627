"""The KV cache and the LLM step that owns it.

ONNX Runtime: the cache lives in ``OrtValue``s that one step's outputs (present.*) hand to the
next step's inputs (past_key_values.*) through I/O binding — the cache never passes through
NumPy or Python copies between steps; only the new embeddings go in and the logits come out.
The binding is ORT's C-level one (``ort_binding.FastBinding``): the Python wrapper costs more
per step than everything else the host does.

Two layouts, as the manifest declares (``llm.cache_layout``). concat: a step's present.* are
past + new, fresh tensors that become the next step's past. append (export/append_cache.py): the
cache is preallocated here in blocks of ``CAPACITY_BLOCK`` tokens, (1, kv_heads, capacity,
head_dim) per input; a step reads it whole — the mask hides the columns past ``num_tokens`` —
and returns new.* (1, kv_heads, s, head_dim), which are written into the next free columns. The
cache is never copied but when it grows by a block. An int8 cache (``llm.kv_dtype``) has one
more input per key/value, its scales (1, kv_heads, capacity, 1), handled like the others.
"""

from __future__ import annotations

import time

import numpy as np

from .manifest import LLMSpec


CAPACITY_BLOCK = 64  # tokens: the append cache grows by whole blocks (≤ 63 masked columns read per step)


def cache_names(num_layers: int, layout: str = "concat", scaled: bool = False) -> tuple[list[str], list[str]]:
    """(past inputs, cache outputs) of the llm graph: outputs present.* (concat) or new.* (append).
    ``scaled`` (an int8 cache): then each input's ``…_scale``, in the same order after all of them."""
    out = "present" if layout == "concat" else "new"
    kinds = ("key", "value")
    names = lambda prefix, suffix="": [f"{prefix}.{i}.{k}{suffix}" for i in range(num_layers) for k in kinds]  # noqa: E731
    past, outputs = names("past_key_values"), names(out)
    if scaled:
        past, outputs = past + names("past_key_values", "_scale"), outputs + names(out, "_scale")
    return past, outputs


def cache_io(spec: LLMSpec) -> tuple[list[str], list[str]]:
    """``cache_names`` of the manifest's llm graph."""
    return cache_names(spec.num_layers, spec.cache_layout, spec.kv_scaled)


def cache_shapes(spec: LLMSpec) -> list[tuple[int, str]]:
    """Per past input, in ``cache_io`` order: (last axis, dtype) — (head_dim, kv_dtype) for keys and
    values, (1, float32) for an int8 cache's scales. Every input is (b, kv_heads, tokens, last)."""
    kv = [(spec.head_dim, spec.kv_dtype)] * (2 * spec.num_layers)
    return kv + [(1, "float32")] * (2 * spec.num_layers) if spec.kv_scaled else kv


def empty_cache(spec: LLMSpec, capacity: int = 0) -> list[np.ndarray]:
    """Zeros (1, kv_heads, capacity, last) per past input."""
    return [np.zeros((1, spec.num_kv_heads, capacity, last), dtype=dtype) for last, dtype in cache_shapes(spec)]


class AppendKVCache:
    """The append layout's cache: per input a (1, kv_heads, capacity, head_dim) array whose first
    ``num_tokens`` columns hold the keys/values, wrapped once per growth as an OrtValue (same memory)."""

    def __init__(self, spec: LLMSpec):
        self.spec = spec
        self.past_names, self.present_names = cache_io(spec)
        self.reset()

    def reset(self) -> None:
        self.arrays: list[np.ndarray] = []  # a fresh set per generation: saved states keep theirs
        self.values: list = []
        self.capacity = -1
        self.num_tokens = 0
        self.reserve(0)

    def reserve(self, total: int) -> None:
        """Room for ``total`` tokens: grows to whole blocks, copying the valid columns once."""
        if total <= self.capacity:
            return
        import onnxruntime as ort

        capacity = -(-total // CAPACITY_BLOCK) * CAPACITY_BLOCK
        grown = empty_cache(self.spec, capacity)
        for new, old in zip(grown, self.arrays):
            new[:, :, : self.num_tokens] = old[:, :, : self.num_tokens]
        self.arrays, self.capacity = grown, capacity
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in grown]  # views of the arrays, no copy

    def mask(self, seq: int) -> np.ndarray:
        """(1, capacity + seq) int64: 1 on the cached tokens and on the step's new ones."""
        mask = np.zeros((1, self.capacity + seq), dtype=np.int64)
        mask[:, : self.num_tokens] = 1
        mask[:, self.capacity :] = 1
        return mask

    def append(self, new: list) -> None:
        """``new``: the step's new.* (1, kv_heads, s, head_dim), as arrays or CPU OrtValues."""
        new = [v if isinstance(v, np.ndarray) else v.numpy() for v in new]  # CPU: views, no copy
        start, seq = self.num_tokens, new[0].shape[2]
        self.reserve(start + seq)
        for array, value in zip(self.arrays, new):
            array[:, :, start : start + seq] = value
        self.num_tokens = start + seq

    def views(self) -> list[np.ndarray]:
        """(1, kv_heads, num_tokens, head_dim) per input: views, valid until the cache grows."""
        return [a[:, :, : self.num_tokens] for a in self.arrays]

    @property
    def nbytes(self) -> int:
        return self.spec.cache_bytes(self.num_tokens)

    @property
    def allocated_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


class OrtKVCache:
    """Per-layer key/value OrtValues of shape (1, kv_heads, num_tokens, head_dim) — a bounded
    sliding-window layer's (1, kv_heads, min(num_tokens, window − 1), head_dim): the graph trims it."""

    def __init__(self, spec: LLMSpec):
        self.spec = spec
        self.past_names, self.present_names = cache_io(spec)
        self.reset()

    def reset(self) -> None:
        import onnxruntime as ort

        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in empty_cache(self.spec)]  # then C-level ones
        self.num_tokens = 0

    def views(self) -> list[np.ndarray]:
        """(1, kv_heads, num_tokens, head_dim) per input (a bounded window layer's: its last tokens)."""
        return [v.numpy() for v in self.values]

    @property
    def nbytes(self) -> int:
        return self.spec.cache_bytes(self.num_tokens)

    @property
    def allocated_bytes(self) -> int:
        return self.nbytes


def make_cache(spec: LLMSpec):
    return AppendKVCache(spec) if spec.cache_layout == "append" else OrtKVCache(spec)


class OrtDecoder:
    """``step(embeds, positions) -> last logits``, appending to its cache."""

    cache_device = "cpu"  # where present.* are allocated; they come back as the next step's past.*
    chunked_prefill = True  # a step takes any number of new tokens after any past (decode.prefill chunks)

    def __init__(self, session, spec: LLMSpec):
        self.session = session.session  # the onnxruntime.InferenceSession
        self.spec = spec
        self.cache = make_cache(spec)
        self.append = spec.cache_layout == "append"
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
        """This generation's cache, memory and timings: references only (concat steps replace the
        cache; append steps write only past ``num_tokens`` of a generation's own arrays)."""
        return vars(self.cache).copy(), self.constants, self.engine_s

    def load_state(self, state: tuple) -> None:
        cache, self.constants, self.engine_s = state
        vars(self.cache).update(cache)

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
        if self.append:  # (1, capacity + seq): the cache's unused columns hidden
            b.bind_array("attention_mask", self.cache.mask(seq))
        else:
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
        if self.append:
            self.cache.append(b.outputs()[1:])
        else:
            self.cache.values = b.outputs()[1:]
            self.cache.num_tokens = total
        return self._logits[turn][0, -1]


def make_binding(session, device: str):
    """ORT's C-level binding when this onnxruntime has it, else the public ``IOBinding`` behind the same verbs."""
    from .ort_binding import FastBinding, PublicBinding

    return FastBinding(session, device) if FastBinding.available(session) else PublicBinding(session, device)
