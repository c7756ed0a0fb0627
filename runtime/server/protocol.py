"""The OpenAI chat-completions protocol: a request body checked at the door (``parse_chat_request``)
and the shapes the server answers with (``completion``, ``chunk``, ``usage``).

Checks are explicit rather than a schema library's, so every refusal names the field, says what
was wrong and lists what is supported. A checked request holds its messages as
``{"role", "content": str | [{"type": "text", "text"} | {"type": "image_url", "url"}]}``; the
pictures are fetched later, in a worker thread (``media.py``)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import ApiError

FIELDS = ("model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
          "top_p", "seed", "stop", "n")
ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256  # far more turns than a context of a few thousand tokens holds: refused before any rendering
MAX_IMAGES = 8  # per request: each may decode to the pixel limit, so this bounds a request's memory
MAX_STOPS = 4  # as OpenAI
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}  # the engine's → OpenAI's


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts
    max_tokens: int | None = None  # None: the export's default, cut to what the context leaves
    temperature: float | None = None  # None: the export's default; 0: greedy
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    @property
    def image_urls(self) -> list[str]:
        """Every image part's URL, in prompt order."""
        return [p["url"] for m in self.messages if isinstance(m["content"], list)
                for p in m["content"] if p["type"] == "image_url"]


def parse_chat_request(body, served: list[str]) -> ChatRequest:
    """A decoded JSON body → ChatRequest, or ApiError (400; 404 for a model not served here)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got a JSON {_json_type(body)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unsupported field(s) {unknown}; this server supports {list(FIELDS)}", unknown[0])
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, f"'model' must be a string naming the model, one of {served}", "model")
    if model not in served:
        raise ApiError(404, f"the model {model!r} is not served here; choose one of {served} (GET /v1/models)",
                       "model", "model_not_found")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise ApiError(400, f"'n' must be 1 (one choice per request), got {n!r}; send several requests for several "
                       "answers", "n")
    stream = _flag(body, "stream")
    return ChatRequest(model, parse_messages(body.get("messages")), stream, _include_usage(body, stream),
                       _max_tokens(body), _number(body, "temperature", 0.0, 2.0), _top_p(body), _seed(body),
                       _stops(body.get("stop")))


def parse_messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty list of {'role': ..., 'content': ...} objects", "messages")
    if len(value) > MAX_MESSAGES:
        raise ApiError(400, f"'messages' holds {len(value)} messages; at most {MAX_MESSAGES} are accepted "
                       "(the model's context holds far fewer turns): send only the recent turns", "messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(value)]
    num_images = sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"]
                     if p["type"] == "image_url")
    if num_images > MAX_IMAGES:
        raise ApiError(400, f"the messages hold {num_images} images; at most {MAX_IMAGES} per request", "messages")
    return messages


def _message(m, where: str) -> dict:
    if not isinstance(m, dict):
        raise ApiError(400, f"{where} must be an object with 'role' and 'content', got a JSON {_json_type(m)}", where)
    _known_keys(m, ("role", "content", "name"), where)
    if m.get("role") not in ROLES:
        raise ApiError(400, f"{where}.role must be one of {list(ROLES)}, got {m.get('role')!r}", f"{where}.role")
    if "name" in m and not isinstance(m["name"], str):
        raise ApiError(400, f"{where}.name must be a string", f"{where}.name")
    content = m.get("content")
    if isinstance(content, str):
        return {"role": m["role"], "content": content}
    if not isinstance(content, list):
        raise ApiError(400, f"{where}.content must be a string or a list of 'text' / 'image_url' parts, got "
                       f"{_json_type(content)}", f"{where}.content")
    return {"role": m["role"], "content": [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]}


def _part(p, where: str) -> dict:
    kind = p.get("type") if isinstance(p, dict) else None
    if kind == "text":
        _known_keys(p, ("type", "text"), where)
        if not isinstance(p.get("text"), str):
            raise ApiError(400, f"{where}.text must be a string", f"{where}.text")
        return {"type": "text", "text": p["text"]}
    if kind == "image_url":
        _known_keys(p, ("type", "image_url"), where)
        image = p.get("image_url")
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            raise ApiError(400, f"{where}.image_url must be an object {{'url': 'data:image/png;base64,...'}}",
                           f"{where}.image_url")
        _known_keys(image, ("url", "detail"), f"{where}.image_url")
        return {"type": "image_url", "url": image["url"]}
    raise ApiError(400, f"{where} must be a {{'type': 'text', 'text': ...}} or {{'type': 'image_url', 'image_url': "
                   f"{{'url': ...}}}} part, got type {kind!r}", f"{where}.type")


def _known_keys(obj: dict, known: tuple, where: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ApiError(400, f"{where} has unsupported field(s) {unknown}; supported: {list(known)}",
                       f"{where}.{unknown[0]}")


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {value!r}", name)
    return bool(value)


def _include_usage(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object such as {'include_usage': true}", "stream_options")
    _known_keys(options, ("include_usage",), "stream_options")
    return _flag(options, "include_usage")


def _max_tokens(body: dict) -> int | None:
    values = {k: body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"'{name}' must be an integer >= 1 (the most tokens to generate), got {value!r}", name)
    if len(set(values.values())) > 1:
        raise ApiError(400, "'max_tokens' and 'max_completion_tokens' differ; send one of them", "max_tokens")
    return next(iter(values.values()), None)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    """An optional finite number in [low, high]."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a number from {low:g} to {high:g}, got {value!r}", name)
    return float(value)


def _top_p(body: dict) -> float | None:
    value = _number(body, "top_p", 0.0, 1.0)
    if value == 0.0:  # keeps no token at all
        raise ApiError(400, "'top_p' must be above 0 and at most 1, got 0", "top_p")
    return value


def _seed(body: dict) -> int | None:
    value = body.get("seed")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
        raise ApiError(400, f"'seed' must be an integer from 0 to 2**63-1, got {value!r}", "seed")
    return value


def _stops(value) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOPS or \
            not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop' must be a non-empty string or a list of 1 to {MAX_STOPS} non-empty strings, "
                       f"got {value!r}"[:300], "stop")
    return stops


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# -- what the server answers ---------------------------------------------------------------
def usage(stats) -> dict:
    prompt, completion_tokens = stats.num_prompt_tokens, stats.num_generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def completion(request_id: str, created: int, model: str, result, profile: dict) -> dict:
    """A finished request → a ``chat.completion`` object; ``profile`` goes in its ``vlmforge`` field."""
    choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "logprobs": None,
              "finish_reason": FINISH_REASONS.get(result.finish_reason, result.finish_reason)}
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model, "choices": [choice],
            "usage": usage(result.stats), "vlmforge": profile}


def chunk(request_id: str, created: int, model: str, delta: dict | None, finish: str | None = None,
          with_usage: bool = False) -> dict:
    """One ``chat.completion.chunk``; ``delta`` None: the usage chunk (no choices). With
    ``stream_options.include_usage`` every chunk carries ``usage`` (null until the last)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": FINISH_REASONS.get(finish, finish)}]
    out = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if with_usage:
        out["usage"] = None
    return out
