"""``vlmforge serve`` under load, as a separate process started by the CLI: 16 concurrent clients ×
20 requests (streaming and not, pictures and text, one sampled with a seed) each get exactly the
answer their request gets alone — none lost, none mixed — and the server's memory settles:
its RSS after 500 requests is within 50 MB of its RSS after the first 50."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from server_utils import MODEL, chat_body, data_url, picture, pipeline_turn

from vlmforge.runtime import Pipeline

CLIENTS, PER_CLIENT = 16, 20
WARMUP, TOTAL = 50, 500
RSS_GROWTH_LIMIT = 50 << 20
# (question, picture seeds, max_tokens, sampling): six distinct requests
DISTINCT = [("What is this?", [0], 4, {}), ("Describe the picture in detail.", [1], 6, {}), ("Hello there.", [], 5, {}),
            ("What colour is it?", [2], 5, {}), ("Compare them.", [3, 4], 4, {}),
            ("What is this?", [5], 6, {"temperature": 0.8, "seed": 3})]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_llava, tmp_path_factory):
    """The CLI's server in its own process → (url, psutil.Process)."""
    port, log = _free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "vlmforge.cli", "serve", str(tiny_llava[1]), "--port", str(port), "--model-name",
           MODEL, "--max-batch", "8", "--max-queue", "64", "--threads", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_healthy(url: str, proc, log) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vlmforge serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"vlmforge serve did not answer /health within 60 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def expected(tiny_llava):
    """Each distinct request's answer from ``Pipeline.generate``, alone."""
    ref = Pipeline.load(tiny_llava[1])
    out = []
    for question, seeds, max_tokens, sampling in DISTINCT:
        extra = {"do_sample": True, **sampling} if sampling else {}
        out.append(ref.generate(messages=pipeline_turn(question, len(seeds)), images=[picture(s) for s in seeds],
                                max_new_tokens=max_tokens, **extra).text)
    return out


BODIES = [chat_body(q, [data_url(picture(s)) for s in seeds], max_tokens=n, **sampling)
          for q, seeds, n, sampling in DISTINCT]


def _answer(http: httpx.Client, body: dict, stream: bool) -> str:
    if not stream:
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]
    text = []
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]  # [] in a usage chunk
                text += [c["delta"].get("content") or "" for c in choices]
    return "".join(text)


def _run(url: str, expected: list[str], clients: int, per_client: int, offset: int) -> int:
    """``clients`` threads, each sending ``per_client`` requests in turn; → how many answers were right."""
    right, lock = [0], threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for j in range(per_client):
                k = (offset + c * 7 + j) % len(BODIES)
                got = _answer(http, BODIES[k], stream=(c + j) % 2 == 1)
                assert got == expected[k], (c, j, k, got, expected[k])
                with lock:
                    right[0] += 1

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, c) for c in range(clients)]:
            f.result()
    return right[0]


def test_16_clients_get_their_own_answers_and_memory_settles(server, expected):
    url, proc = server
    assert _run(url, expected, 10, WARMUP // 10, 0) == WARMUP
    rss_50 = proc.memory_info().rss
    start = time.perf_counter()
    assert _run(url, expected, CLIENTS, PER_CLIENT, 1) == CLIENTS * PER_CLIENT
    seconds = time.perf_counter() - start
    rest = TOTAL - WARMUP - CLIENTS * PER_CLIENT
    assert _run(url, expected, 10, rest // 10, 2) == rest
    rss_500 = proc.memory_info().rss
    print(f"\n[server RSS after {WARMUP} requests: {rss_50 / 2**20:.1f} MiB, after {TOTAL}: {rss_500 / 2**20:.1f} MiB; "
          f"{CLIENTS}×{PER_CLIENT} requests in {seconds:.1f} s]")
    assert rss_500 - rss_50 < RSS_GROWTH_LIMIT, (rss_50, rss_500)
    stats = httpx.get(url + "/health").json()["engine"]
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["max_rows"] > 1  # requests really were decoded together


def test_pictures_prepared_at_once_stay_with_their_requests(tiny_llava, expected):
    """No vision cache, so every request runs the preprocessing and the vision graph while others
    do: each must still be answered about its own picture."""
    from server_utils import ServerThread

    from vlmforge.runtime.server.app import create_app

    pipe = Pipeline.load(tiny_llava[1], vision_cache_bytes=0, threads=1)
    pipe.start_engine(max_batch=8, prefix_cache_bytes=0)
    try:
        with ServerThread(create_app(pipe, MODEL, prepare_workers=4)) as s:
            assert _run(s.url, expected, 8, 10, 3) == 80
    finally:
        pipe.engine.close()
