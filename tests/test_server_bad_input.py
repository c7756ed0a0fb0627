"""Bad requests to ``vlmforge serve``: each gets the right status and an OpenAI-shaped JSON error
that says what was wrong, never a traceback; large bodies are refused without being read; and
after all of them the server still answers a good request."""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import time
import zlib

import httpx
import pytest
from server_utils import MODEL, ServerThread, chat_body, data_url, picture, png_bytes, serving_pipe

from vlmforge.runtime import Pipeline
from vlmforge.runtime.server.app import create_app
from vlmforge.runtime.server.errors import ApiError
from vlmforge.runtime.server.media import MediaPolicy, load_image_url
from vlmforge.runtime.serving.scheduler import QueueFull

MAX_IMAGE_BYTES = 60_000  # a 160×160 noise PNG (~77 kB) is over it; the 40×52 ones (~6 kB) are not
MAX_BODY = 20 << 20


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("server_media")
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "ok.png").write_bytes(png_bytes(picture(1)))
    (root / "secret.png").write_bytes(png_bytes(picture(2)))
    (allowed / "link.png").symlink_to(root / "secret.png")  # inside by name, outside in fact
    return allowed


@pytest.fixture(scope="module")
def pipe(tiny_llava):
    yield from serving_pipe(tiny_llava[1], max_batch=4, max_waiting=16)


@pytest.fixture(scope="module")
def server(pipe, media_dir):
    app = create_app(pipe, MODEL, max_body_bytes=MAX_BODY, allowed_media_dir=media_dir, max_image_bytes=MAX_IMAGE_BYTES)
    with ServerThread(app) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _image(url: str, **fields) -> dict:
    return chat_body(urls=[url], max_tokens=2, **fields)


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header for a huge picture, with no pixel data: only its size is ever read."""
    def part(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + part(b"IEND", b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD_URL = data_url(picture(0))
TRUNCATED = png_bytes(picture(5))[:300]
TOO_LONG = "describe the picture " * 300  # ~1,200 tokens: the tiny model's context is 256
# (name, JSON body or raw bytes, content type, status, what the message must say)
CASES = [
    ("broken base64", _image("data:image/png;base64,iVBORw0KGgo%%%not-base64"), None, 400, "base64"),
    ("bad base64 padding", _image("data:image/png;base64,iVBORw0KGgo"), None, 400, "base64"),
    ("text data URL", _image("data:text/plain;base64," + _b64(b"hello")), None, 400, "not an image"),
    ("not base64-encoded", _image("data:image/png,rawbytes"), None, 400, "base64"),
    ("bytes not a picture", _image("data:image/png;base64," + _b64(b"this is not a picture" * 20)), None, 400,
     "not a picture"),
    ("truncated picture", _image("data:image/png;base64," + _b64(TRUNCATED)), None, 400, "truncated"),
    ("picture over the byte limit", _image(data_url(picture(6, 160, 160))), None, 413, "per image"),
    ("picture over the pixel limit", _image("data:image/png;base64," + _b64(_png_declaring(20000, 20000))), None, 413,
     "pixels"),
    ("path outside the folder", _image("/etc/passwd"), None, 403, "outside"),
    ("file URL outside the folder", _image("file:///etc/passwd"), None, 403, "outside"),
    ("'..' escape", _image("../secret.png"), None, 403, "outside"),
    ("symlink out of the folder", _image("link.png"), None, 403, "outside"),
    ("missing file in the folder", _image("nope.png"), None, 400, "no picture file"),
    ("file URL with a host", _image("file://otherhost/x.png"), None, 400, "host"),
    ("http URL", _image("http://127.0.0.1:9/x.png"), None, 400, "not fetched"),
    ("https URL", _image("https://example.com/cat.png"), None, 400, "not fetched"),
    ("ftp URL", _image("ftp://example.com/cat.png"), None, 400, "scheme"),
    ("wrong content type", json.dumps(chat_body()).encode(), "text/plain", 415, "application/json"),
    ("no content type", json.dumps(chat_body()).encode(), "", 415, "application/json"),
    ("malformed JSON", b'{"model": "tiny", "messages": [', "application/json", 400, "not valid JSON"),
    ("not UTF-8", b'{"model": "\xff\xfe"}', "application/json", 400, "JSON"),
    ("empty body", b"", "application/json", 400, "empty"),
    ("JSON nested too deeply", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested"),
    ("JSON not an object", [1, 2, 3], None, 400, "JSON object"),
    ("unknown top-level field", chat_body(logit_bias={"1": 5}), None, 400, "logit_bias"),
    ("missing model", {"messages": chat_body()["messages"]}, None, 400, "model"),
    ("unknown model", {**chat_body(), "model": "gpt-9"}, None, 404, "gpt-9"),
    ("negative max_tokens", chat_body(max_tokens=-5), None, 400, "max_tokens"),
    ("max_tokens 0", chat_body(max_tokens=0), None, 400, "max_tokens"),
    ("max_tokens not an integer", chat_body(max_tokens=2.5), None, 400, "max_tokens"),
    ("max_completion_tokens 0", chat_body(max_completion_tokens=0), None, 400, "max_completion_tokens"),
    ("temperature -1", chat_body(temperature=-1), None, 400, "temperature"),
    ("temperature a string", chat_body(temperature="hot"), None, 400, "temperature"),
    ("top_p 2", chat_body(top_p=2), None, 400, "top_p"),
    ("top_p 0", chat_body(top_p=0), None, 400, "top_p"),
    ("negative seed", chat_body(seed=-1), None, 400, "seed"),
    ("n=2", chat_body(n=2), None, 400, "'n' must be 1"),
    ("stream not a boolean", chat_body(stream="yes"), None, 400, "stream"),
    ("stream_options without stream", chat_body(stream_options={"include_usage": True}), None, 400, "stream_options"),
    ("five stop strings", chat_body(stop=["a", "b", "c", "d", "e"]), None, 400, "stop"),
    ("an empty stop string", chat_body(stop=[""]), None, 400, "stop"),
    ("10,000 messages", {**chat_body(), "messages": [{"role": "user", "content": "hi"}] * 10_000}, None, 400,
     "at most"),
    ("no messages", {**chat_body(), "messages": []}, None, 400, "non-empty"),
    ("messages not a list", {**chat_body(), "messages": "hi"}, None, 400, "non-empty list"),
    ("bad role", {**chat_body(), "messages": [{"role": "robot", "content": "hi"}]}, None, 400, "role"),
    ("message not an object", {**chat_body(), "messages": ["hi"]}, None, 400, "object"),
    ("content a number", {**chat_body(), "messages": [{"role": "user", "content": 5}]}, None, 400, "content"),
    ("unknown content part", {**chat_body(), "messages": [{"role": "user", "content": [{"type": "audio_url"}]}]}, None,
     400, "audio_url"),
    ("image_url not an object", {**chat_body(), "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": GOOD_URL}]}]}, None, 400, "image_url"),
    ("unknown message field", {**chat_body(), "messages": [{"role": "user", "content": "hi", "tool_calls": []}]},
     None, 400, "tool_calls"),
    ("nine pictures", chat_body(urls=[GOOD_URL] * 9), None, 400, "at most 8"),
    ("text holding the image placeholder", chat_body("look: <image>"), None, 400, "placeholder"),
    ("prompt longer than the context", chat_body(TOO_LONG, max_tokens=4), None, 400, "context is 256"),
]


def _send(http, body, content_type):
    if isinstance(body, bytes):
        headers = {} if content_type == "" else {"content-type": content_type}
        return http.post("/v1/chat/completions", content=body, headers=headers)
    return http.post("/v1/chat/completions", json=body)


def _assert_error(response, status: int, says: str = "") -> dict:
    text = response.text
    assert response.status_code == status, text[:500]
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert says.lower() in error["message"].lower(), error["message"]
    return error


@pytest.mark.parametrize("name,body,content_type,status,says", CASES, ids=[c[0] for c in CASES])
def test_bad_request(http, name, body, content_type, status, says):
    _assert_error(_send(http, body, content_type), status, says)


def test_prompt_too_long_names_both_numbers_and_the_code(http):
    error = _assert_error(_send(http, chat_body(TOO_LONG), None), 400, "tokens")
    assert error["code"] == "context_length_exceeded"
    numbers = [int(n) for n in re.findall(r"\d+", error["message"].replace(",", ""))]
    assert 256 in numbers and max(numbers) > 256, error["message"]


@pytest.mark.parametrize("route,method,status", [("/v1/nothing", "GET", 404), ("/v1/chat/completions", "GET", 405),
                                                 ("/v1/models", "POST", 405), ("/health", "DELETE", 405)])
def test_routes(http, route, method, status):
    error = _assert_error(http.request(method, route), status)
    assert route in error["message"]


def test_50_mb_body_is_refused_from_its_length_without_being_read(server):
    """Content-Length says 50 MB: the 413 comes before the body is sent (the client sends 1 MB, then waits)."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (50 << 20) + b" " * (1 << 20))
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"body_too_large" in reply and b"Traceback" not in reply
    assert time.perf_counter() - start < 3


def test_50_mb_chunked_body_is_refused_while_reading(server):
    """No Content-Length (chunked): the server counts while reading and stops at its limit."""
    def chunks():
        piece = b" " * (1 << 20)
        for _ in range(50):
            yield piece

    start = time.perf_counter()
    response = httpx.post(server.url + "/v1/chat/completions", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=30)
    _assert_error(response, 413, "grew past")
    assert time.perf_counter() - start < 5


def test_50_mb_body_sent_whole_gets_413_quickly(http):
    start = time.perf_counter()
    response = http.post("/v1/chat/completions", content=b" " * (50 << 20), headers={"content-type": "application/json"})
    _assert_error(response, 413, "52,428,800 bytes")
    assert time.perf_counter() - start < 5


def _read_reply(sock) -> bytes:
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    return reply


def test_queue_full_is_503_with_retry_after(http, pipe, monkeypatch):
    def full(seq):
        raise QueueFull("16 requests are already waiting (max_waiting=16); retry later")

    monkeypatch.setattr(pipe.engine, "submit", full)
    response = http.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    error = _assert_error(response, 503, "retry later")
    assert error["code"] == "queue_full" and response.headers["retry-after"] == "1"


def test_unexpected_failure_is_a_generic_500_and_the_server_goes_on(http, pipe, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(pipe, "sequence", broken)
    for stream in (False, True):
        error = _assert_error(http.post("/v1/chat/completions", json=chat_body(stream=stream)), 500, "server log")
        assert "secret" not in error["message"] and error["type"] == "server_error"


def test_local_files_are_refused_without_an_allowed_folder():
    with pytest.raises(ApiError) as e:
        load_image_url("/etc/hostname", MediaPolicy())
    assert e.value.status == 403 and "--allowed-media-dir" in e.value.message


def test_a_picture_in_the_allowed_folder_is_served(http, media_dir):
    for url in ("ok.png", str(media_dir / "ok.png"), (media_dir / "ok.png").as_uri()):
        response = http.post("/v1/chat/completions", json=_image(url))
        assert response.status_code == 200, response.text


def test_after_all_that_a_good_request_is_answered(http, pipe):
    ref = Pipeline.load(pipe.root)
    expected = ref.generate(messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text",
                            "text": "What is this?"}]}], images=[picture(0)], max_new_tokens=6)
    response = http.post("/v1/chat/completions", json=chat_body(urls=[GOOD_URL], max_tokens=6))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == expected.text
    stats = pipe.engine.stats
    assert stats["running"] == 0 and stats["waiting"] == 0
