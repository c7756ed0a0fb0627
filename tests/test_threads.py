"""One Pipeline, many callers (issue #19 part 8): calls from several threads and interleaved
``stream()`` generators each get exactly the tokens they get alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vlmforge.runtime import Pipeline
from vlmforge.runtime.errors import VlmforgeError
from vlmforge.runtime.turns import DecoderTurns

PROMPTS = ["USER: <image>\nWhat is in the picture? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:",
           "USER: Count <image> the shapes. ASSISTANT:", "USER: <image>\nWhich color? ASSISTANT:"]


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    return Pipeline.load(tiny_llava[1])


@pytest.fixture(scope="module")
def calls():
    """Four different requests: prompts, pictures of different sizes, greedy and seeded sampling."""
    rng = np.random.default_rng(11)
    sizes = [(30, 30), (44, 30), (30, 52), (36, 36)]
    sampling = [{}, dict(do_sample=True, temperature=0.8, seed=3), {}, dict(do_sample=True, top_k=5, seed=9)]
    return [dict(prompt=p, images=[rng.integers(0, 256, s + (3,), dtype=np.uint8)], max_new_tokens=10, **k)
            for p, s, k in zip(PROMPTS, sizes, sampling)]


@pytest.fixture(scope="module")
def solo(pipe, calls):
    return [pipe.generate(**c).token_ids for c in calls]


def test_solo_answers_differ(solo):
    assert len({tuple(t) for t in solo}) == len(solo)  # otherwise a mix-up could not be seen


def test_threads_get_their_own_tokens(pipe, calls, solo):
    barrier = threading.Barrier(len(calls))

    def run(i):
        barrier.wait()  # all start together
        result = pipe.generate(**calls[i])
        assert pipe.last_result is result  # last_result is this thread's
        return result.token_ids

    with ThreadPoolExecutor(len(calls)) as pool:
        for _ in range(2):
            assert list(pool.map(run, range(len(calls)))) == solo


def test_interleaved_streams_get_their_own_tokens(pipe, calls, solo):
    streams = [pipe.stream(**c) for c in calls]
    texts = [[] for _ in streams]
    live = list(range(len(streams)))
    while live:  # one piece from each in turn
        for i in list(live):
            try:
                texts[i].append(next(streams[i]))
            except StopIteration:
                live.remove(i)
    for i, s in enumerate(streams):
        assert s.result.token_ids == solo[i]
        assert "".join(texts[i]) == s.result.text


def test_a_closed_stream_frees_its_turn(pipe, calls, solo):
    s = pipe.stream(**calls[0])
    next(s)
    s.close()
    assert pipe.generate(**calls[1]).token_ids == solo[1]


class _OneAtATime:
    """A decoder that cannot swap its cache (TensorRT's device buffers)."""

    def __init__(self):
        self.owner = None


def _steps(decoder, name, n, log):
    for i in range(n):
        decoder.owner = name
        log.append((name, i))
        yield i
        assert decoder.owner == name, "another generation ran in between"


def test_a_decoder_that_cannot_swap_serves_one_at_a_time():
    decoder = _OneAtATime()
    turns = DecoderTurns(decoder)
    assert not turns.can_swap
    first = turns.run(_steps(decoder, "a", 3, []))
    next(first)
    with pytest.raises(VlmforgeError, match="suspended mid-stream"):
        next(turns.run(_steps(decoder, "b", 3, [])))  # same thread: would mix caches, refused
    log = []
    other = threading.Thread(target=lambda: list(turns.run(_steps(decoder, "c", 2, log))))
    other.start()
    other.join(0.3)
    assert other.is_alive() and log == []  # waits for the first generation to finish
    assert list(first) == [1, 2]
    other.join(5)
    assert log == [("c", 0), ("c", 1)]


def test_pictures_encoded_in_several_threads_stay_their_own(tiny_llava):
    """The CPU kernel's reused pixel buffer is per thread: 4 threads encoding at once each get the
    embeddings of their own picture (a shared buffer gave ~4% of them another thread's pixels)."""
    from vlmforge.runtime.stats import NullTimer

    pipe = Pipeline.load(tiny_llava[1], vision_cache_bytes=0)
    rng = np.random.default_rng(2)
    pictures = [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(8)]
    alone = [pipe.encode_image(p, NullTimer()).copy() for p in pictures]

    def encode(i):
        return [np.array_equal(pipe.encode_image(pictures[(i + k) % 8], NullTimer()), alone[(i + k) % 8])
                for k in range(200)]

    with ThreadPoolExecutor(4) as pool:
        assert all(all(ok) for ok in pool.map(encode, range(4)))
