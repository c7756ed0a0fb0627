"""The LLM step on TensorRT, with the KV cache resident on the GPU. Same interface as
``kv_cache.OrtDecoder``: ``reset()``, ``step(inputs_embeds, position_ids) -> logits (vocab,)``,
``.cache.num_tokens``, ``.cache.nbytes``.

Cache layout: the exported graph reads ``past_key_values.{i}.*`` (1, kv_heads, past, head_dim)
and writes ``present.{i}.*`` (1, kv_heads, past + seq, head_dim) = concat(past, new). Both are
contiguous, so the head stride changes with the length: the cache cannot grow in place, and
TensorRT may not write an output into a buffer it is reading. So two buffer sets, each sized
for max_context, alternate: a step reads set A as past and writes set B as present, the next
step reads B and writes A (ping-pong). No cache byte crosses the PCIe bus or is copied by us;
the price is 2× the cache memory.

An append-layout export (manifest ``llm.cache_layout``, export/append_cache.py) needs no second
set: the graph returns only new.{i}.*, so the prefill's outputs *are* the cache (buffers sized to
the prompt) and a decode step writes its one new column into the cache with a strided device copy
(one row per KV head). The cache grows by ``CAPACITY_BLOCK`` tokens when full (one copy of it);
the step reads it whole and the mask hides the unused columns. 1× the cache memory, not 2×.

Profiles (see export/tensorrt/profiles.py): context 0 runs profile 0 (prefill, empty cache),
context 1 runs profile 1 (decode, one token). Logits come back through pinned host memory.

Positions as the graph declares them: (1, seq), or M-RoPE's (3, 1, seq) rows. The manifest's
per-token inputs (DeepStack features, attention spans: ``llm.step_inputs``) are staged each step
through pinned buffers that grow to the largest step seen (``StagedInput``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PromptError, VlmforgeError
from .kv_cache import CAPACITY_BLOCK, cache_names
from .manifest import Manifest
from .tensorrt_session import deserialize, set_shape, tensor_dtype

PREFILL, DECODE = 0, 1


class TrtKVCache:
    """Two sets of per-layer key/value device buffers, each (1, kv_heads, max_context, head_dim)."""

    def __init__(self, manifest: Manifest, dtype: np.dtype, max_context: int):
        from .cuda import DeviceBuffer

        llm = manifest.llm
        self.past_names, self.present_names = cache_names(llm.num_layers)
        self.per_token = llm.num_kv_heads * llm.head_dim * dtype.itemsize  # bytes per token per tensor
        capacity = self.per_token * max_context
        self.sets = [[DeviceBuffer(capacity) for _ in self.past_names] for _ in range(2)]
        self.current = 0  # index of the set holding the cache
        self.num_tokens = 0

    def reset(self) -> None:
        self.current, self.num_tokens = 0, 0  # stale bytes are never read: shapes say how many are valid

    @property
    def nbytes(self) -> int:
        """Bytes of cache in use (both K and V, all layers) — comparable with OrtKVCache.nbytes."""
        return self.per_token * len(self.past_names) * self.num_tokens

    @property
    def allocated_bytes(self) -> int:
        return sum(b.nbytes for s in self.sets for b in s)


class TrtAppendCache:
    """The append layout's cache: per input one (1, kv_heads, capacity, head_dim) device buffer whose
    first ``num_tokens`` columns hold the keys/values; ``scratch``: a decode step's new.* (one column)."""

    def __init__(self, manifest: Manifest, dtype: np.dtype):
        from .cuda import DeviceBuffer

        llm = manifest.llm
        self.past_names, self.present_names = cache_names(llm.num_layers, "append")
        self.kv_heads = llm.num_kv_heads
        self.column = llm.head_dim * dtype.itemsize  # bytes of one token of one head
        self.per_token = self.column * self.kv_heads
        self.scratch = [DeviceBuffer(self.per_token) for _ in self.past_names]
        self.buffers: list = []
        self.capacity = self.num_tokens = 0

    def reset(self) -> None:
        self.num_tokens = 0

    def prefill_outputs(self, seq: int) -> list:
        """Fresh buffers of exactly ``seq`` tokens for the prefill's new.*: they become the cache."""
        from .cuda import DeviceBuffer

        self.buffers = [DeviceBuffer(self.per_token * seq) for _ in self.past_names]
        self.capacity = self.num_tokens = seq
        return self.buffers

    def reserve(self, total: int, stream) -> None:
        """Room for ``total`` tokens: whole blocks, the valid columns of every head copied once."""
        if total <= self.capacity:
            return
        from .cuda import DeviceBuffer

        capacity = -(-total // CAPACITY_BLOCK) * CAPACITY_BLOCK
        grown = [DeviceBuffer(self.per_token * capacity) for _ in self.past_names]
        for new, old in zip(grown, self.buffers):
            # the free columns must be finite: masked scores weigh them by 0, and 0 × NaN is NaN
            stream.zero(new.ptr, new.nbytes)
            stream.copy_2d(new.ptr, capacity * self.column, old.ptr, self.capacity * self.column,
                           self.num_tokens * self.column, self.kv_heads)
        stream.synchronize()  # the old buffers are freed below
        self.buffers, self.capacity = grown, capacity

    def write_scratch(self, stream) -> None:
        """The decode step's new column (scratch) → column ``num_tokens`` of every head."""
        pitch, at = self.capacity * self.column, self.num_tokens * self.column
        for buf, new in zip(self.buffers, self.scratch):
            stream.copy_2d(buf.ptr + at, pitch, new.ptr, self.column, self.column, self.kv_heads)
        self.num_tokens += 1

    @property
    def nbytes(self) -> int:
        return self.per_token * len(self.past_names) * self.num_tokens

    @property
    def allocated_bytes(self) -> int:
        return sum(b.nbytes for b in (*self.buffers, *self.scratch))


class StagedInput:
    """One per-token input's device buffer and its pinned host copy, grown to the largest step."""

    def __init__(self):
        self.nbytes, self.host, self.device = 0, None, None

    def stage(self, stream, value: np.ndarray) -> int:
        """Copy ``value`` to the device on ``stream`` (the caller synchronises before the next stage); → pointer."""
        from .cuda import DeviceBuffer, PinnedArray

        value = np.ascontiguousarray(value)
        if value.nbytes > self.nbytes:  # the previous step synchronised: nothing still reads the old buffers
            self.nbytes = value.nbytes
            self.host, self.device = PinnedArray((self.nbytes,), np.uint8), DeviceBuffer(self.nbytes)
        host = self.host.array[: value.nbytes]
        host[...] = value.reshape(-1).view(np.uint8)
        stream.copy_to_device(self.device.ptr, host)
        return self.device.ptr


class TrtDecoder:
    def __init__(self, root: Path, manifest: Manifest):
        if manifest.llm.kv_scaled:  # refused at load, so step() (the hot path) checks nothing
            raise VlmforgeError(f"the TensorRT decoder keeps a float KV cache; this {manifest.family} export has an "
                                "int8 KV cache with per-token scales (quantize --kv-cache int8); load it with "
                                "backend='onnxruntime' or build engines from an export without --kv-cache int8")
        from .cuda import DeviceBuffer, EventTimer, PinnedArray, Stream

        spec, engine_spec = manifest.graphs["llm"], manifest.engines.graphs["llm"]
        self.engine = deserialize(root, engine_spec, spec)
        self.max_context = manifest.engines.max_context
        self.stream = Stream()
        self.contexts = [self.engine.create_execution_context(), self.engine.create_execution_context()]
        self.contexts[DECODE].set_optimization_profile_async(DECODE, self.stream.handle)
        kv_dtype = tensor_dtype(self.engine, "past_key_values.0.key")
        self.append = manifest.llm.cache_layout == "append"
        self.cache = TrtAppendCache(manifest, kv_dtype) if self.append else TrtKVCache(manifest, kv_dtype, self.max_context)
        hidden, n = manifest.llm.hidden_size, self.max_context
        self.embeds_dtype = tensor_dtype(self.engine, "inputs_embeds")
        self.embeds = DeviceBuffer(n * hidden * self.embeds_dtype.itemsize)  # (1, seq, hidden)
        shape = next(t.shape for t in spec.inputs if t.name == "position_ids")
        self.position_rows = shape[0] if len(shape) == 3 else 0  # M-RoPE: (3, 1, seq); else (1, seq)
        self.positions = DeviceBuffer(max(self.position_rows, 1) * n * 8)  # int64
        self.step_inputs = {name: StagedInput() for name in manifest.llm.step_inputs}
        # (1, total) int64: concat all ones, written once; append rewritten per step (capacity + 1)
        mask_len = n + CAPACITY_BLOCK + 1
        self.mask = DeviceBuffer(mask_len * 8)
        self.host_mask = PinnedArray((mask_len,), np.int64)
        self.host_mask.array[:] = 1  # alive until the synchronize at the end of __init__
        self.stream.copy_to_device(self.mask.ptr, self.host_mask.array)
        self.kv_heads, self.head_dim = manifest.llm.num_kv_heads, manifest.llm.head_dim
        self.logits_dtype = tensor_dtype(self.engine, "logits")
        self.logits = DeviceBuffer(manifest.llm.vocab_size * self.logits_dtype.itemsize)
        self.host_logits = PinnedArray((manifest.llm.vocab_size,), self.logits_dtype)
        self.host_embeds = PinnedArray((n, hidden), self.embeds_dtype)
        self.host_positions = PinnedArray((max(self.position_rows, 1) * n,), np.int64)
        self.timer = EventTimer(self.stream)
        self.last_gpu_s = 0.0  # GPU time of the last step (CUDA events)
        self.stream.synchronize()

    def reset(self) -> None:
        self.cache.reset()

    def step(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, extra: dict | None = None) -> np.ndarray:
        """inputs_embeds (1, s, d), position_ids (1, s) or (3, 1, s) int64 → logits (vocab,) float32.
        ``extra``: the manifest's per-token inputs for these s tokens (runtime/token_inputs.py)."""
        seq, past = inputs_embeds.shape[1], self.cache.num_tokens
        total = past + seq
        if total > self.max_context:
            raise PromptError(f"{total} tokens exceed the {self.max_context} the TensorRT engine was built for; "
                              "rebuild with a larger --max-context or shorten the prompt")
        if past and seq != 1:
            raise PromptError("the TensorRT decode profile takes one token at a time after the prefill")
        profile = PREFILL if past == 0 else DECODE
        context = self.contexts[profile]
        if self.append:
            mask_len = self._bind_append(context, profile, seq)
        else:
            mask_len = total
            self._bind_cache(context, profile, past)
        self._stage_inputs(context, profile, inputs_embeds, position_ids, mask_len)
        self._stage_step_inputs(context, profile, extra or {})
        context.set_tensor_address("logits", self.logits.ptr)
        self.timer.start()
        if not context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT failed to run the llm engine (see its log above)")
        self.timer.stop()
        self.stream.copy_to_host(self.host_logits.array, self.logits.ptr)
        self.stream.synchronize()
        self.last_gpu_s = self.timer.elapsed_s()
        if self.append:
            if past:
                self.cache.write_scratch(self.stream)  # ordered before the next step's run on this stream
        else:
            self.cache.current, self.cache.num_tokens = 1 - self.cache.current, total
        return self.host_logits.array.astype(np.float32)  # a copy: the pinned buffer is reused

    def _stage_inputs(self, context, profile, inputs_embeds, position_ids, total) -> None:
        """``total``: the attention mask's length (host_mask's first ``total`` entries, copied for append)."""
        seq = inputs_embeds.shape[1]
        if self.append:
            self.stream.copy_to_device(self.mask.ptr, self.host_mask.array[:total])
        embeds = self.host_embeds.array[:seq]
        embeds[...] = inputs_embeds[0]
        rows = max(self.position_rows, 1)
        positions = self.host_positions.array[: rows * seq]
        positions[...] = np.asarray(position_ids, dtype=np.int64).reshape(-1)  # (1, s) or (3, 1, s), row-major
        self.stream.copy_to_device(self.embeds.ptr, embeds)
        self.stream.copy_to_device(self.positions.ptr, positions)
        position_shape = (rows, 1, seq) if self.position_rows else (1, seq)
        for name, shape, buf in (("inputs_embeds", (1, seq, embeds.shape[1]), self.embeds),
                                 ("attention_mask", (1, total), self.mask), ("position_ids", position_shape, self.positions)):
            set_shape(context, name, shape, self.engine, profile)
            context.set_tensor_address(name, buf.ptr)

    def _stage_step_inputs(self, context, profile, extra: dict) -> None:
        for name, staged in self.step_inputs.items():
            if name not in extra:
                raise ValueError(f"the llm engine takes {name} at every step; pass it in extra= "
                                 "(runtime/token_inputs.plan_token_inputs builds it)")
            value = np.asarray(extra[name], dtype=tensor_dtype(self.engine, name))
            set_shape(context, name, value.shape, self.engine, profile)
            context.set_tensor_address(name, staged.stage(self.stream, value))

    def _bind_append(self, context, profile, seq: int) -> int:
        """Bind the append cache for a step of ``seq`` tokens; returns the mask's length. Prefill:
        an empty past, new.* written straight into the cache's buffers. Decode: the whole capacity
        as past (the mask hides its free columns), new.* into the scratch column."""
        cache = self.cache
        if cache.num_tokens == 0:
            outputs, capacity = cache.prefill_outputs(seq), 0
            self.host_mask.array[:seq] = 1
        else:
            cache.reserve(cache.num_tokens + 1, self.stream)
            outputs, capacity = cache.scratch, cache.capacity
            mask = self.host_mask.array
            mask[: cache.num_tokens], mask[cache.num_tokens : capacity], mask[capacity] = 1, 0, 1
        for name, new, buf, out in zip(cache.past_names, cache.present_names, cache.buffers, outputs):
            set_shape(context, name, (1, self.kv_heads, capacity, self.head_dim), self.engine, profile)
            context.set_tensor_address(name, buf.ptr)
            context.set_tensor_address(new, out.ptr)
        return capacity + seq

    def _bind_cache(self, context, profile, past: int) -> None:
        cache = self.cache
        read, write = cache.sets[cache.current], cache.sets[1 - cache.current]
        for name, present, src, dst in zip(cache.past_names, cache.present_names, read, write):
            set_shape(context, name, (1, self.kv_heads, past, self.head_dim), self.engine, profile)
            context.set_tensor_address(name, src.ptr)
            context.set_tensor_address(present, dst.ptr)
