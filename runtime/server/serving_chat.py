"""One chat completion on the batched engine: the bridge between the engine's thread and asyncio.

``start`` fetches the request's pictures and prepares it (``Pipeline.sequence``: images decoded,
vision graph run) in a worker thread, then submits it; every refusal happens here, before a
response starts, so it gets its own status. The engine calls ``Job.on_piece`` from its thread for
each text piece and once with None at the end; ``loop.call_soon_threadsafe`` moves each onto the
request's asyncio queue. A client that goes away cancels its request: the engine drops it at the
next step and frees its KV cache."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from ..serving.request import Request
from ..serving.scheduler import QueueFull
from .errors import INTERNAL, ApiError, error_body, from_runtime_error
from .media import MediaPolicy, load_image_url
from .protocol import ChatRequest, chunk, completion, usage

log = logging.getLogger("vlmforge.server")


class ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


class Job:
    """One request in flight: its Sequence, its text pieces as an asyncio queue, its server timings."""

    def __init__(self, engine_of, server_s: dict):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.engine_of = engine_of  # → the engine (the pipeline may restart it)
        self.seq = None
        self.prepared_timing = ""  # the timing header as it stood at submission (streaming sends that one)
        self.server_s = server_s  # stage → seconds spent in the server itself (body, media, prepare)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def on_piece(self, piece: str | None) -> None:
        """From the engine thread. Raises once the loop is closed: the engine then cancels the request."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, piece)

    async def pieces(self) -> AsyncIterator[str]:
        while (piece := await self.queue.get()) is not None:
            yield piece

    def cancel(self) -> None:
        """Stop the request if it is still running (a no-op once it has ended)."""
        if self.seq is not None and not self.seq.done.is_set():
            self.engine_of().cancel(self.seq)

    def result(self):
        """The finished request's GenerationResult; an engine failure → 500 (logged with its cause)."""
        seq = self.seq
        if seq.error is not None or seq.result is None:
            log.error("%s failed in the engine", self.id, exc_info=seq.error)
            raise ApiError(500, INTERNAL)
        return seq.result

    def profile(self) -> dict:
        """The ``vlmforge`` field: the request's per-stage profile, plus the server's own stages."""
        out = self.seq.result.stats.as_dict() if self.seq.result is not None else {}
        out["server_s"] = dict(self.server_s)
        out["engine_finish_reason"] = self.seq.reason
        return out

    def timing_header(self) -> str:
        """``x-vlmforge-timing``: compact JSON, milliseconds. Streaming sends its headers before
        decoding, so there it holds the stages done by then (pictures, vision, prompt)."""
        stages = {k: round(sum(v) * 1e3, 3) for k, v in self.seq.timer.times.items()}
        out = {"stages_ms": stages, "server_ms": {k: round(v * 1e3, 3) for k, v in self.server_s.items()}}
        result = self.seq.result
        if result is not None:
            out.update(ttft_ms=round(result.stats.ttft_s * 1e3, 3), total_ms=round(result.stats.total_s * 1e3, 3),
                       **usage(result.stats))
        return json.dumps(out, separators=(",", ":"))


class ChatService:
    def __init__(self, pipe, model: str, policy: MediaPolicy, workers: int = 2):
        self.pipe = pipe
        self.model = model
        self.policy = policy
        # pictures and the vision graph: CPU work off the event loop, at most `workers` requests at once
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="vlmforge-prepare")

    def engine(self):
        return self.pipe.engine

    async def start(self, chat: ChatRequest, server_s: dict) -> Job:
        """Prepare (worker thread) and submit; ApiError for what the request got wrong or a full queue."""
        job = Job(self.engine, server_s)
        job.seq = await job.loop.run_in_executor(self.executor, self._prepare, chat, job)
        job.prepared_timing = job.timing_header()  # now: once submitted, the engine thread adds to the timer
        try:
            self.engine().submit(job.seq)
        except QueueFull as e:
            raise ApiError(503, str(e), None, "queue_full", {"retry-after": "1"}) from None
        return job

    def _prepare(self, chat: ChatRequest, job: Job):
        t0 = time.perf_counter()
        images = [load_image_url(url, self.policy, where) for where, url in image_parts(chat.messages)]
        t1 = time.perf_counter()
        request = Request(messages=pipeline_messages(chat.messages), images=images, **sampling_args(chat))
        try:
            seq = self.pipe.sequence(request, on_piece=job.on_piece)
        except Exception as e:  # noqa: BLE001 - the pipeline's refusals become 400s, anything else a 500
            mapped = from_runtime_error(e)
            if mapped is None:
                raise
            raise mapped from None
        job.server_s.update(media=t1 - t0, prepare=time.perf_counter() - t1)
        return seq

    async def complete(self, job: Job, receive) -> dict:
        """Wait for the whole answer → a ``chat.completion``; ClientGone (request cancelled) if the client leaves."""
        async def drain():
            async for _ in job.pieces():
                pass

        collect, gone = asyncio.ensure_future(drain()), asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not collect.done():
                raise ClientGone()
        finally:
            for task in (collect, gone):
                task.cancel()
            job.cancel()
        return completion(job.id, job.created, self.model, job.result(), job.profile())

    async def events(self, job: Job, include_usage: bool) -> AsyncIterator[bytes]:
        """The answer as server-sent events: a role chunk, content chunks, the finishing chunk,
        (include_usage) the usage chunk, ``[DONE]``. The last chunk carries the ``vlmforge`` profile."""
        try:
            yield sse(chunk(job.id, job.created, self.model, {"role": "assistant", "content": ""}, None, include_usage))
            async for piece in job.pieces():
                yield sse(chunk(job.id, job.created, self.model, {"content": piece}, None, include_usage))
            for event in self._closing_chunks(job, include_usage):
                yield sse(event)
        except ApiError as e:
            yield sse(e.body())
        except Exception:  # noqa: BLE001 - headers are sent: report in the stream, keep serving
            log.exception("%s failed while streaming", job.id)
            yield sse(error_body(500, INTERNAL))
        finally:
            job.cancel()  # the client left (this generator was cancelled or closed) or it ended: no-op
        yield b"data: [DONE]\n\n"

    def _closing_chunks(self, job: Job, include_usage: bool) -> list[dict]:
        result = job.result()
        last = chunk(job.id, job.created, self.model, {}, result.finish_reason, include_usage)
        if include_usage:  # OpenAI's shape: one more chunk, no choices, the usage
            counts = chunk(job.id, job.created, self.model, None)
            counts["usage"] = usage(result.stats)
            return [last, {**counts, "vlmforge": job.profile()}]
        return [{**last, "vlmforge": job.profile()}]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def image_parts(messages: list[dict]):
    """(where, url) of every image part, in prompt order (``where`` names it in errors)."""
    for i, m in enumerate(messages):
        if isinstance(m["content"], list):
            for j, part in enumerate(m["content"]):
                if part["type"] == "image_url":
                    yield f"messages[{i}].content[{j}].image_url", part["url"]


def pipeline_messages(messages: list[dict]) -> list[dict]:
    """image_url parts → ``{"type": "image"}`` items (their pictures go in ``images=``, same order)."""
    return [m if isinstance(m["content"], str) else
            {"role": m["role"], "content": [{"type": "image"} if p["type"] == "image_url" else p for p in m["content"]]}
            for m in messages]


def sampling_args(chat: ChatRequest) -> dict:
    """OpenAI's sampling fields → Request's. temperature 0: greedy; above 0: sampling at it; absent:
    the export's default (the tiny and most exports decode greedily)."""
    args = {"max_new_tokens": chat.max_tokens, "stop": chat.stop, "seed": chat.seed, "top_p": chat.top_p}
    if chat.temperature == 0:
        args["do_sample"] = False
    elif chat.temperature is not None:
        args.update(do_sample=True, temperature=chat.temperature)
    return args


async def wait_disconnect(receive) -> None:
    """Returns when the client has gone (the body has been read: all that is left is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
