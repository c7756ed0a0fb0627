"""The HTTP routes (``create_app``): POST /v1/chat/completions (JSON or server-sent events),
GET /v1/models, GET /health and the page at GET /. Handlers only read, check and hand over:
parsing is protocol.py's, pictures media.py's, the engine serving_chat.py's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS
from .body import read_json
from .errors import INTERNAL, ApiError, error_body
from .media import MediaPolicy
from .protocol import parse_chat_request
from .serving_chat import ChatService, ClientGone, wait_disconnect

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - the serve extra is missing
    raise ImportError(f'vlmforge serve needs FastAPI and uvicorn ({e.name} is not installed): '
                      'pip install "vlmforge[serve]"') from None

log = logging.getLogger("vlmforge.server")
PAGE = Path(__file__).with_name("page.html")
ROUTES = "POST /v1/chat/completions, GET /v1/models, GET /health and GET / (the page)"


def create_app(pipe, model_name: str, max_body_bytes: int = 20 << 20, allowed_media_dir=None,
               max_image_bytes: int = 10 << 20, prepare_workers: int = 2) -> FastAPI:
    """An app serving ``pipe`` (its engine: ``pipe.start_engine(...)`` first to choose its limits) as ``model_name``.
    ``allowed_media_dir``: the one folder local image paths may name (default: none, data URLs only)."""
    image = pipe.manifest.image
    pixels = image.preprocess.max_input_pixels if image and image.preprocess.max_input_pixels else DEFAULT_MAX_PIXELS
    service = ChatService(pipe, model_name, MediaPolicy(max_image_bytes, pixels, allowed_media_dir), prepare_workers)
    page = PAGE.read_text(encoding="utf-8")
    pipe.engine  # noqa: B018 - started now (with its defaults unless the caller started it)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="vlmforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service
    _add_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            return await _chat(service, request, max_body_bytes)
        except ApiError as e:
            return error_response(e)
        except ClientGone:  # nobody reads this; the log shows it as nginx's "client closed request"
            return Response(status_code=499)
        except Exception:  # noqa: BLE001 - a bug: logged, a generic 500, the server goes on
            log.exception("POST /v1/chat/completions failed")
            return error_response(ApiError(500, INTERNAL))

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "vlmforge",
                "max_model_len": pipe.manifest.llm.max_context, "family": pipe.manifest.family}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "engine": pipe.engine.stats}

    @app.get("/")
    async def index():
        return HTMLResponse(page)

    return app


async def _chat(service: ChatService, request, max_body_bytes: int):
    t0 = time.perf_counter()
    body = await read_json(request, max_body_bytes)
    t1 = time.perf_counter()
    chat = parse_chat_request(body, [service.model])
    job = await service.start(chat, {"read_body": t1 - t0, "validate": time.perf_counter() - t1})
    if chat.stream:
        headers = {"x-vlmforge-timing": job.prepared_timing, "x-request-id": job.id, "cache-control": "no-cache"}
        return EventStream(service.events(job, chat.include_usage), headers=headers, on_close=job.cancel)
    answer = await service.complete(job, request.receive)
    return JSONResponse(answer, headers={"x-vlmforge-timing": job.timing_header(), "x-request-id": job.id})


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _add_error_handlers(app) -> None:
    """Routing's own refusals (404, 405) and anything that escapes a handler, in the OpenAI shape."""

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"there is no route {where}; this server has {ROUTES}"
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}; use {exc.headers.get('allow', 'POST')}"
        else:
            message = str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(500, INTERNAL), status_code=500)


class EventStream(StreamingResponse):
    """Server-sent events that stop when the client leaves — whatever the ASGI server's spec
    version (StreamingResponse itself watches for the disconnect only below 2.4) — and then call
    ``on_close`` (which cancels the request in the engine)."""

    def __init__(self, events, headers: dict, on_close):
        super().__init__(events, headers=headers, media_type="text/event-stream")
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pump = asyncio.ensure_future(self._pump(send))
            gone = asyncio.ensure_future(wait_disconnect(receive))
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                failed = await asyncio.gather(pump, gone, return_exceptions=True)
            for error in failed:
                if isinstance(error, Exception) and not isinstance(error, OSError):  # OSError: the client left
                    log.error("streaming a response failed", exc_info=error)
        finally:
            self.on_close()

    async def _pump(self, send) -> None:
        try:
            async for event in self.body_iterator:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.body_iterator.aclose()
