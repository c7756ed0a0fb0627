"""The engine: a background loop that advances every running request together.

Each step (1) drops cancelled requests, (2) runs one prefill chunk of the first waiting request
while the batch has room, (3) runs one decode step per batch — every running request's next
token in one LLM call — and hands each request its text. A newcomer therefore delays the others
by one chunk at most, and finished requests leave between steps. Requests arrive prepared
(images encoded in the caller's thread: ``Pipeline.sequence``); ``submit`` never blocks on a step.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..errors import VlmforgeError
from .batch_cache import as_array
from .prefix_cache import PrefixCache
from .runner import ModelRunner
from .scheduler import Scheduler


class Engine:
    def __init__(self, decoder, embed_table: np.ndarray, manifest, max_batch: int = 8, prefill_chunk: int = 256,
                 max_waiting: int = 64, prefix_cache: PrefixCache | None = None):
        if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be an integer >= 1, got {prefill_chunk!r}")
        self.runner = ModelRunner(decoder, manifest.llm, manifest.graphs["llm"])
        self.embed_table = embed_table
        self.scheduler = Scheduler(max_batch, max_waiting, append_cache=self.runner.append)
        self.prefill_chunk = prefill_chunk
        caps = manifest.capabilities  # a prompt-dependent memory makes a prefix's cache prompt-specific
        self.prefix_cache = None if caps.encoder_decoder or caps.cross_attention else prefix_cache
        self.cache_bytes = manifest.llm.cache_bytes  # num_tokens → exact KV bytes (bounded windows stop growing)
        self.by_rows: dict[int, list] = {}  # decode steps by batch size: [steps, seconds]
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.counters = {"steps": 0, "decode_steps": 0, "decoded_rows": 0, "prefill_chunks": 0, "max_rows": 0,
                         "decode_s": 0.0, "prefill_s": 0.0}

    # -- from any thread ---------------------------------------------------------------------
    def submit(self, seq) -> None:
        """Queue a prepared Sequence; its ``on_piece`` gets the text, ``done`` is set at the end."""
        with self._cond:
            if self._closed:
                raise VlmforgeError("this engine is closed; load the pipeline again")
            if self.prefix_cache is not None and seq.num_cached == 0:
                n, cache = self.prefix_cache.match(seq.prepared)
                if n:
                    seq.cache, seq.num_cached, seq.prefix_tokens = cache, n, n
            if self.prefix_cache is not None:
                seq.keep_cache = True
            self.scheduler.add(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vlmforge-engine", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self, seq) -> None:
        """Stop ``seq`` at the next step and free its cache (a client went away)."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def stats(self) -> dict:
        c = dict(self.counters)
        c["mean_rows_per_decode_step"] = c["decoded_rows"] / c["decode_steps"] if c["decode_steps"] else 0.0
        c["decode_tokens_per_s_by_rows"] = {rows: rows * n / s for rows, (n, s) in sorted(self.by_rows.items()) if s}
        with self._cond:
            c["waiting"], c["running"] = len(self.scheduler.waiting), self.scheduler.num_running
        if self.prefix_cache is not None:
            c["prefix_cache"] = self.prefix_cache.stats
        return c

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.scheduler.has_work():
                    self._cond.wait()
                if self._closed:
                    leftover = self.scheduler.all_sequences()
                    self.scheduler.drop(leftover)
                    for seq in leftover:
                        self._fail(seq, VlmforgeError("the engine was closed before this request finished"))
                    return
            self.step()

    def step(self) -> None:
        self.counters["steps"] += 1
        with self._cond:
            cancelled = [s for s in self.scheduler.all_sequences() if s.cancelled]
            self.scheduler.drop(cancelled)
            seq = self.scheduler.next_prefill()
            batches = list(self.scheduler.batches.values())
        for s in cancelled:
            self._finish(s, "cancelled")
        if seq is not None:
            self._guarded([seq], self._prefill_chunk, seq)
        for batch in batches:
            self._guarded(list(batch.rows), self._decode, batch)

    def _guarded(self, seqs, fn, arg) -> None:
        """A failing step fails its requests (with the error), never the loop or the others."""
        try:
            fn(arg)
        except Exception as e:  # noqa: BLE001 - handed to the requests' callers
            with self._cond:
                self.scheduler.drop(seqs)
            for seq in seqs:
                self._fail(seq, e)

    def _prefill_chunk(self, seq) -> None:
        p = seq.prepared
        start = seq.num_cached  # this step ends where the next chunk starts, never inside an attention span
        stop = next(end for end in p.feeds.chunk_bounds(p.num_tokens, self.prefill_chunk) if end > start)
        r = self.runner
        inputs = p.feeds.prefill_part(start, stop)
        inputs.update(p.memory or {})
        positions = p.positions.prefill[..., start:stop]
        t0 = time.perf_counter()
        past = seq.cache or r.empty_cache()
        logits, presents = r.run(p.inputs_embeds[:, start:stop], np.ones((1, stop), dtype=np.int64), positions,
                                 past, inputs)
        presents = r.extend(past, presents)
        seconds = time.perf_counter() - t0
        seq.timer.add("prefill", t0, seconds)
        self.counters["prefill_chunks"] += 1
        self.counters["prefill_s"] += seconds
        seq.cache, seq.num_cached = presents, stop
        if stop < p.num_tokens:
            return
        self._emit(seq, seq.accept(seq.choose(logits[0])))
        with self._cond:
            if seq.finished:
                self.scheduler.drop([seq])
            else:
                self.scheduler.admit(seq, presents)
        if seq.finished:
            if seq.keep_cache:
                seq.final_cache = [as_array(v).copy() for v in presents]
            self._finish(seq)
        seq.cache = None  # the batch holds it now

    def _decode(self, batch) -> None:
        rows, r = batch.rows, self.runner
        tokens = np.array([s.last_token for s in rows], dtype=np.int64)
        embeds = np.asarray(self.embed_table[tokens], dtype=np.float32)[:, None, :]  # (B, 1, d)
        positions = np.concatenate([s.prepared.positions.decode(s.num_cached) for s in rows],
                                   axis=r.batch_axes.get("position_ids", 0))
        if batch.fixed_version != batch.version:  # rows joined or left: restack
            batch.fixed, batch.fixed_version = self._stacked_inputs(rows), batch.version
        t0 = time.perf_counter()
        logits, presents = r.run(embeds, batch.mask(), positions, batch.values, batch.fixed)
        seconds = time.perf_counter() - t0
        batch.after_step(presents)
        self.counters["decode_steps"] += 1
        self.counters["decode_s"] += seconds
        self.counters["decoded_rows"] += len(rows)
        self.counters["max_rows"] = max(self.counters["max_rows"], len(rows))
        by_rows = self.by_rows.setdefault(len(rows), [0, 0.0])  # batch size → [steps, seconds]
        by_rows[0] += 1
        by_rows[1] += seconds
        for i, seq in enumerate(rows):
            seq.timer.add("decode", t0, seconds)
            self._emit(seq, seq.accept(seq.choose(logits[i])))
        finished = [s for s in rows if s.finished]
        if finished:
            with self._cond:
                self.scheduler.drop(finished)
            for seq in finished:
                self._finish(seq)

    def _stacked_inputs(self, rows) -> dict[str, np.ndarray]:
        """The batch's fixed inputs (memory) and decode-step token inputs, rows stacked on their batch axis."""
        per_row = [{**s.prepared.feeds.decode, **(s.prepared.memory or {})} for s in rows]
        return {name: np.concatenate([x[name] for x in per_row], axis=self.runner.batch_axes.get(name, 0))
                for name in per_row[0]}

    # -- results -----------------------------------------------------------------------------
    def _emit(self, seq, piece: str) -> None:
        if piece and seq.on_piece is not None:
            try:
                seq.on_piece(piece)
            except Exception:  # noqa: BLE001 - the listener is gone: stop the request
                seq.cancelled = True

    def _finish(self, seq, reason: str | None = None) -> None:
        tail = seq.finish(self.cache_bytes(seq.num_cached), reason)
        self._emit(seq, tail)
        if self.prefix_cache is not None and seq.final_cache is not None and reason != "cancelled":
            self.prefix_cache.put(seq.seen[: seq.num_cached], seq.prepared, seq.final_cache)
        self._close_stream(seq)

    def _fail(self, seq, error: BaseException) -> None:
        seq.error, seq.reason = error, "error"
        self._close_stream(seq)

    def _close_stream(self, seq) -> None:
        seq.done.set()
        if seq.on_piece is not None:
            try:
                seq.on_piece(None)
            except Exception:  # noqa: BLE001
                pass

