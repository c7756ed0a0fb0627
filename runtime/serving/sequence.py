"""One request's decoding state: how it picks tokens, when it stops, the text it has shown and
its profile. The one-request loop (``Pipeline.stream``) and the batched engine drive the same
object, so stop handling, EOS and budgets cannot differ between them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..grounding import Box, parse_boxes
from ..sampling import Sampler
from ..stats import GenerationStats, StageTimer
from ..stream import TextAssembler
from .request import Prepared


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, prompt excluded (EOS included when it ended the text)
    stats: GenerationStats
    finish_reason: str  # "eos", "stop" (a stop string), "length" or "cancelled"
    # grounding models (manifest image.grounding): the answer's boxes in pixels of the picture
    boxes: list[Box] = field(default_factory=list)


class Sequence:
    """``choose(logits)`` → token, ``accept(token)`` → text safe to show; ``finished`` once EOS, a
    stop string or the budget ends it. Engines also keep here where its prefill stands and its own
    KV cache while it is not part of a batch."""

    def __init__(self, prepared: Prepared, sampler: Sampler, eos: set[int], stops: list[str], detok,
                 timer: StageTimer, start: float, on_piece: Callable[[str | None], None] | None = None):
        self.prepared = prepared
        self.sampler = sampler
        self.eos = eos
        self.timer = timer
        self.start = start
        n = len(prepared.input_ids)
        self.seen = np.empty(n + prepared.max_new_tokens, dtype=np.int64)  # prompt + generated, for the penalty
        self.seen[:n] = prepared.input_ids
        self.n = n
        self.text = TextAssembler(detok, stops)
        self.generated: list[int] = []
        self.reason: str | None = None
        self.ttft = 0.0
        # engine state: tokens already in this sequence's cache, its cache while alone, the next logits
        self.num_cached = 0
        self.prefix_tokens = 0  # of them, taken from a kept prefix instead of prefilled
        self.cache: list | None = None
        self.logits: np.ndarray | None = None
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: GenerationResult | None = None
        self.done = threading.Event()
        self.on_piece = on_piece  # called with each text piece, then None when finished (from the engine thread)
        self.keep_cache = False  # a chat keeps its cache when it finishes
        self.final_cache: list | None = None  # then: (1, kv_heads, tokens, head_dim) arrays per past input

    @property
    def finished(self) -> bool:
        return self.reason is not None

    @property
    def last_token(self) -> int:
        return int(self.seen[self.n - 1])

    def choose(self, logits: np.ndarray) -> int:
        """logits (vocab,) → the next token id (recorded; ``accept`` decides what it means)."""
        with self.timer("sample"):
            token = self.sampler(logits, self.seen[: self.n])
        self.ttft = self.ttft or time.perf_counter() - self.start
        self.seen[self.n] = token
        self.n += 1
        self.generated.append(token)
        return token

    def accept(self, token: int) -> str:
        """The text this token makes safe to show; sets ``reason`` when the sequence ends here."""
        if token in self.eos:
            self.reason = "eos"
            return ""
        with self.timer("detokenize"):
            piece = self.text.push(token)
        if self.text.stopped:
            self.reason = "stop"
        elif len(self.generated) >= self.prepared.max_new_tokens:
            self.reason = "length"
        return piece

    def finish(self, kv_cache_bytes: int, reason: str | None = None) -> str:
        """Close the text (returns what was held back) and build the result."""
        self.reason = reason or self.reason or "length"
        tail = self.text.flush()
        prompt = self.prepared.prompt
        stats = GenerationStats(
            stages=dict(self.timer.times), starts=dict(self.timer.starts), gpu_stages=dict(self.timer.gpu_times),
            num_prompt_tokens=len(prompt.input_ids), num_image_tokens=prompt.num_image_tokens,
            image_tokens=[count for _, count in prompt.image_slots], num_generated_tokens=len(self.generated),
            ttft_s=self.ttft, total_s=time.perf_counter() - self.start, kv_cache_bytes=kv_cache_bytes,
            cached_prompt_tokens=self.prefix_tokens, vision_cache_hits=self.timer.counts["vision_cache_hit"],
            vision_cache_misses=self.timer.counts["vision_cache_miss"],
        )
        p = self.prepared
        boxes = parse_boxes(self.text.text, p.grounding, p.picture_sizes) if p.grounding else []
        self.result = GenerationResult(self.text.text, list(self.generated), stats, self.reason, boxes)
        return tail
