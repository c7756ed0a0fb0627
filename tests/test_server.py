"""``vlmforge serve`` (runtime/server/): the official openai client over a real socket gets, streaming
or not, the tokens ``Pipeline.generate`` gives the same request; usage, finish reasons, seeds,
stop strings, /v1/models, /health, the timing header and profile; a client that leaves cancels
its request in the engine."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from server_utils import MODEL, ServerThread, chat_body, data_url, picture, pipeline_turn, serving_pipe, user_turn

from vlmforge.runtime import Pipeline
from vlmforge.runtime.server.app import create_app

QUESTIONS = [("What is this?", 1), ("Describe the picture in detail.", 1), ("Hello, who are you?", 0)]


@pytest.fixture(scope="module")
def ref(tiny_llava):
    """A second pipeline for the sequential reference answers (the served one is busy serving)."""
    return Pipeline.load(tiny_llava[1])


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    yield from serving_pipe(tiny_llava[1], max_batch=8, max_waiting=64)


@pytest.fixture(scope="module")
def server(pipe):
    with ServerThread(create_app(pipe, MODEL)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _ask(ref, question, num_images, first_picture=0, **kwargs):
    """(OpenAI messages, the reference GenerationResult for ``kwargs``)."""
    images = [picture(first_picture + i) for i in range(num_images)]
    expected = ref.generate(messages=pipeline_turn(question, num_images), images=images, **kwargs)
    return user_turn(question, [data_url(a) for a in images]), expected


def _reason(result) -> str:
    return {"eos": "stop", "stop": "stop", "length": "length"}[result.finish_reason]


@pytest.mark.parametrize("question,num_images", QUESTIONS)
def test_answer_equals_generate(client, ref, question, num_images):
    messages, expected = _ask(ref, question, num_images, max_new_tokens=8)
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert answer.object == "chat.completion" and answer.model == MODEL and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == _reason(expected)
    assert answer.usage.prompt_tokens == expected.stats.num_prompt_tokens
    assert answer.usage.completion_tokens == len(expected.token_ids)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    profile = answer.model_extra["vlmforge"]
    assert profile["num_generated_tokens"] == len(expected.token_ids) and "prefill" in profile["stages_s"]


@pytest.mark.parametrize("question,num_images", QUESTIONS)
def test_stream_equals_generate(client, ref, question, num_images):
    messages, expected = _ask(ref, question, num_images, max_new_tokens=8)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == [_reason(expected)]
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == len(expected.token_ids)
    assert last.usage.prompt_tokens == expected.stats.num_prompt_tokens
    assert last.model_extra["vlmforge"]["num_prompt_tokens"] == expected.stats.num_prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_puts_the_profile_on_the_finishing_chunk(client, ref):
    messages, expected = _ask(ref, "What is this?", 1, max_new_tokens=6)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, stream=True))
    assert chunks[-1].choices[0].finish_reason == _reason(expected)
    assert chunks[-1].model_extra["vlmforge"]["ttft_s"] > 0


def test_seed_reproduces_a_sampled_answer(client, ref):
    messages, expected = _ask(ref, "What is this?", 1, max_new_tokens=8, do_sample=True, temperature=0.9, seed=11)
    answers = [client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0.9, seed=11)
               .choices[0].message.content for _ in range(2)]
    assert answers == [expected.text, expected.text]
    other = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0.9, seed=12)
    assert other.choices[0].message.content != expected.text
    greedy = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)
    _, greedy_expected = _ask(ref, "What is this?", 1, max_new_tokens=8)
    assert greedy.choices[0].message.content == greedy_expected.text


def test_stop_string_ends_the_answer(client, ref):
    messages, full = _ask(ref, "Describe the picture in detail.", 1, max_new_tokens=12)
    stop = full.text[3:5]
    assert len(stop) == 2, f"the reference answer {full.text!r} is too short to take a stop string from"
    _, expected = _ask(ref, "Describe the picture in detail.", 1, max_new_tokens=12, stop=[stop])
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, stop=stop)
    assert answer.choices[0].message.content == expected.text and stop not in expected.text
    assert answer.choices[0].finish_reason == "stop"


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and "running" in health["engine"]


def test_timing_header_and_profile(server):
    body = chat_body(urls=[data_url(picture(0))], max_tokens=4)
    done = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert done.status_code == 200, done.text
    timing = json.loads(done.headers["x-vlmforge-timing"])
    assert timing["completion_tokens"] == done.json()["usage"]["completion_tokens"]
    assert {"image_decode", "prefill"} <= set(timing["stages_ms"]) and {"media", "prepare"} <= set(timing["server_ms"])
    assert done.json()["vlmforge"]["stages_s"]["prefill"] > 0
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "image_decode" in json.loads(r.headers["x-vlmforge-timing"])["stages_ms"]
        assert r.read().decode().endswith("data: [DONE]\n\n")


@pytest.fixture
def slow_engine(pipe, monkeypatch):
    """Each LLM step takes 20 ms more and every prepared Sequence is recorded, so a test can leave
    mid-answer and then look at the request."""
    runner, seqs = pipe.engine.runner, []
    run, sequence = runner.run, pipe.sequence

    def slow_run(*args, **kwargs):
        time.sleep(0.02)
        return run(*args, **kwargs)

    def recorded(*args, **kwargs):
        seqs.append(sequence(*args, **kwargs))
        return seqs[-1]

    monkeypatch.setattr(runner, "run", slow_run)
    monkeypatch.setattr(pipe, "sequence", recorded)
    return seqs


def _settled(pipe, seqs, timeout=10.0) -> dict:
    """Wait until the engine holds nothing and the request has ended → the engine's counters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = pipe.engine.stats
        if stats["running"] == 0 and stats["waiting"] == 0 and seqs and seqs[-1].done.is_set():
            return stats
        time.sleep(0.02)
    raise AssertionError(f"the engine still holds requests: {pipe.engine.stats}")


def test_client_leaving_mid_stream_cancels_the_request(server, pipe, slow_engine):
    body = json.dumps(chat_body("Describe the picture in detail.", [data_url(picture(3))], max_tokens=200,
                                stream=True)).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while received.count(b"data: ") < 2:  # the role chunk and the first text chunk
            received += sock.recv(65536)
    _settled(pipe, slow_engine)
    seq = slow_engine[-1]
    assert seq.result.finish_reason == "cancelled"
    assert seq.result.stats.num_generated_tokens < 100  # it stopped long before its 200 tokens


def test_client_leaving_before_the_answer_cancels_the_request(server, pipe, slow_engine):
    body = chat_body("Describe the picture in detail.", [data_url(picture(4))], max_tokens=200)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=0.5)
    _settled(pipe, slow_engine)
    assert slow_engine[-1].result.finish_reason == "cancelled"
    assert slow_engine[-1].result.stats.num_generated_tokens < 100


def test_serve_without_fastapi_says_what_to_install(tiny_llava, monkeypatch, capsys):
    import importlib.util

    from vlmforge.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", str(tiny_llava[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and 'pip install "vlmforge[serve]"' in err and "fastapi" in err, err


def test_serve_refuses_a_missing_media_folder(tiny_llava, tmp_path, capsys):
    from vlmforge.cli import main

    assert main(["serve", str(tiny_llava[1]), "--allowed-media-dir", str(tmp_path / "nope")]) == 2
    assert "--allowed-media-dir" in capsys.readouterr().err
