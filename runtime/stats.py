"""Per-stage timing: a cheap timer the pipeline wraps around each stage, and the statistics
``generate`` returns (seconds per stage, token counts, derived rates)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = (
    "image_decode", "vision_cache", "preprocess", "vision", "vision_aux", "connector", "merge", "encoder", "cross_kv",
    "prefill", "decode", "sample", "detokenize",
)


class StageTimer:
    """Appends the monotonic wall time of each ``with timer(stage):`` block to ``times[stage]``
    and its start (perf_counter seconds) to ``starts[stage]``, for traces.

    Engine calls on CPU backends return when their outputs are ready, so a host clock around
    them measures the work; GPU backends synchronise their stream before the block ends. An
    ``engine`` that times itself with CUDA events (``last_gpu_s``: TensorRT sessions, the CUDA
    preprocessing) also adds that GPU time to ``gpu_times[stage]``.
    """

    def __init__(self):
        self.times: dict[str, list[float]] = defaultdict(list)
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.gpu_times: dict[str, list[float]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)  # events without a duration: vision-cache hits …

    @contextmanager
    def __call__(self, stage: str, engine=None):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage].append(time.perf_counter() - start)
            self.starts[stage].append(start)
            gpu = None if engine is None else getattr(engine, "last_gpu_s", None)  # None: a CPU engine
            if gpu is not None:
                self.gpu_times[stage].append(gpu)


    def add(self, stage: str, start: float, seconds: float) -> None:
        """Record a block timed elsewhere (a batched step shared by several requests)."""
        self.times[stage].append(seconds)
        self.starts[stage].append(start)


class NullTimer:
    """Times nothing: used to measure what the timers themselves cost."""

    times: dict = {}
    starts: dict = {}
    gpu_times: dict = {}
    counts: dict = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str, engine=None):
        yield


@dataclass
class GenerationStats:
    stages: dict[str, list[float]] = field(default_factory=dict)  # stage → seconds per call
    starts: dict[str, list[float]] = field(default_factory=dict)  # stage → perf_counter start per call
    gpu_stages: dict[str, list[float]] = field(default_factory=dict)  # stage → CUDA-event seconds per call (GPU engines)
    num_prompt_tokens: int = 0
    num_image_tokens: int = 0
    image_tokens: list[int] = field(default_factory=list)  # per image, in prompt order
    num_generated_tokens: int = 0
    ttft_s: float = 0.0  # start of generate → first generated token chosen
    total_s: float = 0.0
    kv_cache_bytes: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from a kept prefix (a chat's earlier turns)
    vision_cache_hits: int = 0  # images whose embeddings came from the vision-feature cache
    vision_cache_misses: int = 0

    def stage_total(self, stage: str) -> float:
        return float(sum(self.stages.get(stage, [])))

    @property
    def prefill_tokens_per_s(self) -> float:
        t = self.stage_total("prefill")
        return self.num_prompt_tokens / t if t else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, per second of decode steps (engine + sampling + detokenising)."""
        steps = self.stages.get("decode", [])
        t = sum(steps) + self.stage_total("sample") + self.stage_total("detokenize")
        return len(steps) / t if t and steps else 0.0

    def as_dict(self) -> dict:
        return {
            "stages_s": {k: self.stage_total(k) for k in self.stages},
            "decode_step_s": list(self.stages.get("decode", [])),
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_image_tokens": self.num_image_tokens,
            "image_tokens": list(self.image_tokens),
            "num_generated_tokens": self.num_generated_tokens,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "kv_cache_bytes": self.kv_cache_bytes,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "vision_cache_hits": self.vision_cache_hits,
            "vision_cache_misses": self.vision_cache_misses,
        }
