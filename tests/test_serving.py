"""Many requests on one pipeline (issue #21): batched decoding, the vision-feature cache, prefix
reuse across chat turns, cancellation. Every batched answer equals ``generate`` of the same
request alone, token for token."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from vlmforge.runtime import Pipeline, VlmforgeError
from vlmforge.runtime.serving import Request
from vlmforge.runtime.serving.prefix_cache import Prefix, PrefixCache, shared_length
from vlmforge.runtime.serving.scheduler import QueueFull, Scheduler
from vlmforge.runtime.token_inputs import TokenFeeds
from vlmforge.runtime.vision_cache import VisionCache, media_key


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    return Pipeline.load(tiny_llava[1])


def _image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mixed(pipe):
    """Eight different requests: pictures, prompt lengths, budgets, a stop string, a seeded sample,
    and one that ends on EOS (the token it would generate third is made an EOS id)."""
    rng = np.random.default_rng(5)
    reqs = [Request(prompt="USER: <image>\n" + "describe " * i + "ASSISTANT:", images=[_image(rng, 30 + 4 * i, 44 - 2 * i)],
                    max_new_tokens=4 + 3 * i) for i in range(8)]
    reqs[2] = Request(prompt="USER: no picture here, " * 3 + "ASSISTANT:", max_new_tokens=9)
    reqs[3].do_sample, reqs[3].temperature, reqs[3].seed = True, 0.8, 3
    eos = pipe.generate(**reqs[6].kwargs()).token_ids[2]
    pipe.manifest.tokenizer.eos_token_ids = [*pipe.manifest.tokenizer.eos_token_ids, eos]
    for i in (4, 5, 7):  # a stop string from the middle of an answer that runs to its budget
        text = pipe.generate(**reqs[i].kwargs()).text
        if len(text) >= 8:
            reqs[i].stop = [text[4:6]]
            break
    return reqs


@pytest.fixture(scope="module")
def solo(pipe, mixed):
    return [pipe.generate(**r.kwargs()) for r in mixed]


def test_the_mix_covers_every_ending(solo):
    reasons = [r.finish_reason for r in solo]
    assert "stop" in reasons and "eos" in reasons and "length" in reasons
    assert len({tuple(r.token_ids) for r in solo}) == len(solo)


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_batched_tokens_equal_one_at_a_time(pipe, mixed, solo, count):
    pipe.start_engine(max_batch=8)
    batch = pipe.generate_batch(mixed[:count])
    for one, many in zip(solo, batch):
        assert (many.token_ids, many.text, many.finish_reason) == (one.token_ids, one.text, one.finish_reason)
    # all prepared first, then queued together: they must share decode steps (generate_batch starts
    # each as soon as it is ready, so on a busy machine a short one may be done before the next comes)
    seqs = [pipe.sequence(r) for r in mixed[:count]]
    for seq in seqs:
        pipe.engine.submit(seq)
    for seq in seqs:
        seq.done.wait()
    for one, many in zip(solo, [s.result for s in seqs]):
        assert (many.token_ids, many.text, many.finish_reason) == (one.token_ids, one.text, one.finish_reason)
    stats = pipe.engine.stats
    assert stats["running"] == stats["waiting"] == 0
    if count > 1:
        assert stats["max_rows"] > 1  # they did decode together


def test_a_small_batch_limit_and_chunked_prefill_give_the_same_tokens(pipe, mixed, solo):
    pipe.start_engine(max_batch=3, prefill_chunk=5, prefix_cache_bytes=0)
    batch = pipe.generate_batch(mixed)
    assert [r.token_ids for r in batch] == [r.token_ids for r in solo]
    assert pipe.engine.stats["max_rows"] <= 3
    assert len(batch[7].stats.stages["prefill"]) > 1  # its prompt went in several chunks


def test_a_newcomer_joins_between_steps(pipe, mixed, solo):
    pipe.start_engine(max_batch=4)
    first = pipe.sequence(mixed[7])
    got_pieces = threading.Event()
    first.on_piece = lambda piece: got_pieces.set()
    pipe.engine.submit(first)
    assert got_pieces.wait(30)  # decoding has started
    second = pipe.generate_batch([mixed[5]])[0]
    first.done.wait(30)
    assert first.result.token_ids == solo[7].token_ids and second.token_ids == solo[5].token_ids


def test_the_vision_cache_skips_the_vision_graphs(pipe):
    rng = np.random.default_rng(8)
    image = _image(rng, 36, 40)
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    cold = pipe.generate(prompt, images=[image], max_new_tokens=6)
    warm = pipe.generate(prompt, images=[image.copy()], max_new_tokens=6)  # the same pixels, another array
    assert cold.stats.vision_cache_misses == 1 and len(cold.stats.stages["vision"]) == 1
    assert warm.stats.vision_cache_hits == 1 and "vision" not in warm.stats.stages
    assert "connector" not in warm.stats.stages and warm.token_ids == cold.token_ids
    edited = image.copy()
    edited[0, 0, 0] ^= 1  # one value changed: another key, the graphs run
    assert pipe.generate(prompt, images=[edited], max_new_tokens=2).stats.vision_cache_misses == 1


def test_vision_cache_keys_and_budget():
    a = np.zeros((4, 4, 3), np.uint8)
    assert media_key(a, "s") == media_key(a.copy(), "s") != media_key(a, "t")
    assert media_key(a, "s") != media_key(a.reshape(4, 12, 1), "s")  # same bytes, another shape

    class M:
        def __init__(self, n):
            self.embeds, self.extras = np.zeros(n, np.uint8), {}

    cache = VisionCache(budget_bytes=100)
    for i in range(4):
        cache.put(str(i), M(40))
    assert cache.get("0") is None and cache.get("3") is not None and cache.nbytes <= 100
    assert cache.stats["evictions"] == 2
    with pytest.raises(ValueError, match="budget"):
        VisionCache(-1)


def test_a_second_chat_turn_prefills_only_its_new_tokens(pipe):
    pipe.start_engine()
    rng = np.random.default_rng(9)
    image = _image(rng, 40, 36)
    chat = pipe.chat(max_new_tokens=8)
    first = chat.send("What is in the picture?", images=[image])
    second = chat.send("And on the left?")
    cold = pipe.generate(messages=chat.messages[:-1], images=[image], max_new_tokens=8)
    assert second.token_ids == cold.token_ids and first.stats.cached_prompt_tokens == 0
    assert second.stats.cached_prompt_tokens >= first.stats.num_prompt_tokens - 1
    assert second.stats.vision_cache_hits == 1 and "vision" not in second.stats.stages


def test_a_repeated_prompt_reuses_the_kept_prefix(pipe):
    pipe.start_engine()
    req = Request(prompt="USER: <image>\n" + "a long shared instruction " * 4 + "ASSISTANT:",
                  images=[_image(np.random.default_rng(10), 30, 30)], max_new_tokens=6)
    cold = pipe.generate(**req.kwargs())
    first, second = pipe.generate_batch([req])[0], pipe.generate_batch([req])[0]
    assert first.token_ids == second.token_ids == cold.token_ids
    assert second.stats.cached_prompt_tokens == second.stats.num_prompt_tokens - 1


def test_prefix_matching_checks_the_pictures():
    ids = np.array([1, 2, 9, 9, 9, 3, 4], dtype=np.int64)  # 9: image slots at 2..4
    kept = Prefix(ids, [(2, 3, "cat")], [np.zeros((1, 1, 7, 2))])
    assert shared_length(kept, ids, [(2, 3, "cat")]) == 6  # one token left to prefill
    assert shared_length(kept, ids, [(2, 3, "dog")]) == 2  # another picture in the same slots
    assert shared_length(kept, np.array([1, 5, 9]), []) == 1
    # a cache built under another context (Qwen-VL's dynamic-NTK α) is never reused
    assert shared_length(kept, ids, [(2, 3, "cat")], "ntk_alpha=[3.0]") == 0
    cache = PrefixCache(min_tokens=4)
    short = types.SimpleNamespace(prompt=types.SimpleNamespace(image_slots=[]), media_keys=[], feeds=TokenFeeds())
    cache.put(ids[:3], short, [np.zeros((1, 1, 3, 2))])  # shorter than min_tokens: not kept
    assert cache.stats["entries"] == 0


def test_a_trimmed_window_cache_serves_only_prefixes_it_still_holds():
    """A bounded sliding layer (here: the last 6 of 20 tokens, window 4) serves a prefix up to
    6 − (4 − 1) = 3 tokens shorter than the entry, cut from its end; a full layer any prefix."""
    ids = np.arange(20, dtype=np.int64)
    full, window = np.arange(20.0).reshape(1, 1, 20, 1), np.arange(14.0, 20.0).reshape(1, 1, 6, 1)
    kept = Prefix(ids, [], [full, window])
    assert [kept.servable(n, 4) for n in (20, 17, 16, 5)] == [True, True, False, False]
    head, tail = kept.cut(17)
    assert head[0, 0, :, 0].tolist() == list(range(17)) and tail[0, 0, :, 0].tolist() == [14.0, 15.0, 16.0]
    assert Prefix(ids, [], [full]).servable(5, 4)  # nothing trimmed: any prefix


def test_cancel_frees_the_request(pipe):
    pipe.start_engine()
    seq = pipe.sequence(Request(prompt="USER: hello ASSISTANT:", max_new_tokens=400, ignore_eos=True))
    started = threading.Event()
    seq.on_piece = lambda piece: started.set()
    pipe.engine.submit(seq)
    assert started.wait(30)
    pipe.engine.cancel(seq)
    assert seq.done.wait(30) and seq.result.finish_reason == "cancelled"
    assert len(seq.result.token_ids) < 400
    stats = pipe.engine.stats
    assert stats["running"] == stats["waiting"] == 0


def test_bad_engine_settings_and_a_full_queue(pipe):
    with pytest.raises(ValueError, match="max_batch"):
        pipe.start_engine(max_batch=0)
    with pytest.raises(ValueError, match="prefill_chunk"):
        pipe.start_engine(prefill_chunk=0)
    scheduler = Scheduler(max_batch=1, max_waiting=1)
    scheduler.add(object())
    with pytest.raises(QueueFull, match="max_waiting=1"):
        scheduler.add(object())
    with pytest.raises(TypeError, match="temprature"):
        pipe.generate_batch([Request(prompt="hi", temprature=0.5)])
    with pytest.raises(ValueError, match="temperature must be > 0"):  # the first, already queued, is stopped
        pipe.generate_batch([Request(prompt="hi", max_new_tokens=200, ignore_eos=True),
                             Request(prompt="hi", temperature=-1)])
    pipe.engine.close()
    with pytest.raises(VlmforgeError, match="closed"):
        pipe.generate_batch([Request(prompt="hi")])
    pipe.start_engine()


def test_the_in_place_batch_cache_holds_what_the_concat_one_does():
    """Append layout: columns written in place into preallocated capacity must give, after every
    join, step (across a 64-token block) and leave, the concat batch cache's occupied columns and
    mask, with the free columns masked out; leaving rows get the same unpadded caches."""
    from vlmforge.runtime.serving.batch_cache import BatchCache

    rng = np.random.default_rng(0)
    seq = lambda n, keep=False: types.SimpleNamespace(num_cached=n, keep_cache=keep, final_cache=None)  # noqa: E731
    cache = lambda n: [rng.standard_normal((1, 2, n, 4)).astype(np.float32) for _ in range(2)]  # noqa: E731
    concat, append = BatchCache(), BatchCache(append=True)
    rows = {}

    def join(n, keep=False):
        c = cache(n)
        rows[len(rows)] = (seq(n, keep), seq(n, keep))
        concat.add(rows[len(rows) - 1][0], c)
        append.add(rows[len(rows) - 1][1], c)

    def step():
        new = [rng.standard_normal((len(concat), 2, 1, 4)).astype(np.float32) for _ in range(2)]
        concat.after_step([np.concatenate([v, n], axis=2) for v, n in zip(concat.values, new)])
        append.after_step(new)

    def same():
        capacity = append.values[0].shape[2]
        assert capacity % 64 == 0 and capacity > append.length == concat.length
        for a, c in zip(append.values, concat.values):
            np.testing.assert_array_equal(a[:, :, : append.length], c)
            assert not a[:, :, append.length :].any()  # free columns: zeros, never stale values
        m = append.mask()
        np.testing.assert_array_equal(np.concatenate([m[:, : append.length], m[:, capacity:]], axis=1), concat.mask())
        assert not m[:, append.length : capacity].any()

    join(10)
    join(50, keep=True)
    for _ in range(20):  # 50 + 20 crosses the first block
        step()
    same()
    join(3)
    step()
    same()
    leaving = [rows[1][0]], [rows[1][1]]
    concat.remove(leaving[0])
    append.remove(leaving[1])
    np.testing.assert_array_equal(leaving[1][0].final_cache[0], leaving[0][0].final_cache[0])
    assert leaving[1][0].final_cache[0].shape[2] == 71
    same()
    for _ in range(70):
        step()
    same()
