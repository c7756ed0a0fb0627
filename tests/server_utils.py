"""Shared by the server tests: a uvicorn server on a free 127.0.0.1 port in a background thread,
pictures as PNG data URLs, and chat bodies."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np
from PIL import Image

MODEL = "tiny"


class ServerThread:
    """``with ServerThread(app) as s:`` serves ``app`` at ``s.url`` over a real socket."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="uvicorn-test")

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def picture(seed: int, h: int = 40, w: int = 52) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def data_url(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode()


def user_turn(question: str, urls=()) -> list[dict]:
    """One user message, pictures first (OpenAI's shape)."""
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts + [{"type": "text", "text": question}]}]


def pipeline_turn(question: str, num_images: int) -> list[dict]:
    """The same message as the pipeline takes it (``{"type": "image"}`` items)."""
    return [{"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": question}]}]


def chat_body(question: str = "What is this?", urls=(), **fields) -> dict:
    return {"model": MODEL, "messages": user_turn(question, urls), **fields}


def serving_pipe(export_dir, **engine):
    """For a fixture: ``yield from serving_pipe(dir, max_batch=…)`` — a Pipeline whose engine is started
    with ``engine`` settings, closed when the fixture ends."""
    from vlmforge.runtime import Pipeline

    pipe = Pipeline.load(export_dir)
    pipe.start_engine(**engine)
    yield pipe
    pipe.engine.close()
