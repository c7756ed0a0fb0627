"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP
status that says whose fault it was. Messages say what was wrong and what to do; a traceback
never goes into a response (unexpected failures are logged and answered with a generic 500)."""

from __future__ import annotations

from ..errors import ImageError, PromptError

# status → OpenAI's error type
ERROR_TYPES = {
    400: "invalid_request_error", 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
    413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
    503: "server_error",
}
INTERNAL = "the server failed on this request (the server log has the details); retry, or report it if it keeps happening"


class ApiError(Exception):
    """A request the server refuses: its status, a message for the client, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def from_runtime_error(e: Exception) -> ApiError | None:
    """What the pipeline refuses while preparing a request (bad prompt, picture or sampling
    argument) → a 400 with its message; None for anything else (a bug: 500)."""
    if isinstance(e, PromptError):
        # the one prompt error a client can fix by sending less: OpenAI names it with this code
        code = "context_length_exceeded" if "context is" in str(e) else None
        return ApiError(400, str(e), "messages", code)
    if isinstance(e, ImageError):
        return ApiError(400, str(e), "messages", "invalid_image")
    if isinstance(e, (ValueError, TypeError)):
        return ApiError(400, str(e))
    return None
