"""A request body read within its byte limit and decoded as JSON.

The limit is checked twice: against ``Content-Length`` before a byte is read (a 50 MB upload is
refused at once), and while reading (a chunked body, or one that lies about its length), so
the server never holds more than the limit for one request."""

from __future__ import annotations

import json

from .errors import ApiError


async def read_json(request, max_bytes: int):
    """The body of a starlette Request → the decoded JSON value, or ApiError (400, 413, 415)."""
    from starlette.requests import ClientDisconnect

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"the body must be JSON sent with 'Content-Type: application/json', got "
                       f"{kind or 'no content type'!r}")
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ApiError(400, f"the Content-Length header must be a number of bytes, got {declared[:40]!r}")
    if declared is not None and int(declared) > max_bytes:
        raise _too_large(f"the request body is {int(declared):,} bytes", max_bytes)
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > max_bytes:
                raise _too_large("the request body grew past", max_bytes)
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before the whole body arrived") from None
    return decode_json(bytes(body))


def decode_json(body: bytes):
    if not body:
        raise ApiError(400, "the body is empty; send a JSON object such as {'model': ..., 'messages': [...]}")
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "the body's JSON is nested too deeply to parse") from None
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text; send JSON encoded as UTF-8") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what}, over this server's limit of {limit:,} bytes; send smaller pictures, or start the "
                    "server with a higher --max-body-mb", None, "body_too_large")
