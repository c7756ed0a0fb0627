"""Prompt → token ids with image slots, the typed chunks of an input (as llama.cpp's mtmd does).

The placeholder (``<image>``) marks where each image goes. Each is expanded to the number of
slots its layout needs; every slot carries the image token id and is later overwritten with an
image embedding. Text can never create a slot: placeholders are counted against the images
given, and message text that contains the placeholder is refused.

Models whose image slots sit inside a span (Qwen-VL's ``<img>…</img>``) declare the span: in a
prompt string each span is the place of the next image given, and what it holds (the original
reads a file path or URL there) is dropped unread; message text may not hold either mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import PromptError


@dataclass
class PreparedPrompt:
    input_ids: np.ndarray  # (seq,) int64, image slots hold image_token_id (video slots video_token_id)
    image_slots: list[tuple[int, int]]  # per image or video, in prompt order: (first position, number of slots)
    sources: list[tuple[int, int]] | None = None  # per slot run: (placeholder token id, index among its kind)

    @property
    def num_image_tokens(self) -> int:
        return sum(n for _, n in self.image_slots)


def render_messages(tokenizer, messages: list[dict], marks: tuple[str, ...], allow_video: bool = False
                    ) -> tuple[str, int, int]:
    """Chat messages → prompt text via the model's template; returns (text, image items, video items).
    ``marks``: the strings message text may not hold (placeholders, span marks)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    counts = {"image": 0, "video": 0}
    marks = [m for m in marks if m]
    for i, m in enumerate(messages):
        for where, kind, text in _message_texts(m, f"messages[{i}]", allow_video=allow_video):
            if kind in counts:
                counts[kind] += 1
            elif any(mark in text for mark in marks):
                raise PromptError(
                    f"{where} contains the image placeholder {next(k for k in marks if k in text)!r}; "
                    "images go in as {'type': 'image'} items (videos as {'type': 'video'}), text cannot create image slots"
                )
    return tokenizer.render_chat(list(messages)), counts["image"], counts["video"]


def _message_texts(m, where: str, allow_video: bool = False):
    """Check one message; yield (where, kind, text): kind "text" with its text, or "image" / "video" with None."""
    if not isinstance(m, dict):
        raise PromptError(f"{where} must be a dict with 'role' and 'content', got {type(m).__name__}")
    if not isinstance(m.get("role"), str) or not m["role"]:
        raise PromptError(f"{where} needs a 'role' string ('system', 'user' or 'assistant'), got {m.get('role')!r}")
    content = m.get("content")
    if isinstance(content, str):
        yield f"{where}['content']", "text", check_text(content, f"{where}['content']")
        return
    if not isinstance(content, (list, tuple)):
        raise PromptError(f"{where}['content'] must be a string or a list of {{'type': 'text' | 'image'}} items, "
                          f"got {type(content).__name__}")
    for j, item in enumerate(content):
        at = f"{where}['content'][{j}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "image" or (kind == "video" and allow_video):
            yield at, kind, None
        elif kind == "text" and isinstance(item.get("text"), str):
            yield at, "text", check_text(item["text"], f"{at}['text']")
        else:
            raise PromptError(f"{at} must be {{'type': 'image'}} or {{'type': 'text', 'text': '...'}}, got {item!r}"[:300])


def check_text(text, name: str) -> str:
    """A prompt string the tokenizer can take: str, and valid Unicode (no lone surrogates)."""
    if not isinstance(text, str):
        raise PromptError(f"{name} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PromptError(f"{name} holds an unpaired surrogate {text[e.start]!r} at character {e.start}, which is "
                          "not valid Unicode; decode the text with errors='replace' first") from None
    return text


def user_turn(text: str, num_images: int, placeholders: tuple[str, ...], system: str | None = None,
              num_videos: int = 0) -> list[dict]:
    """A plain question → chat messages: one user turn, the images (then videos) first (as
    llama.cpp's mtmd-cli and transformers' chat pipelines put them), or where ``text`` holds a
    placeholder per image."""
    pieces = [text]
    for mark in filter(None, placeholders):
        pieces = [part for piece in pieces for part in _split_keep(piece, mark)]
    marks = sum(1 for piece in pieces if piece is None)
    if marks and marks != num_images:
        raise PromptError(f"the prompt has {marks} image placeholder(s) but {num_images} image(s) were given; "
                          "put one placeholder where each image belongs, or none to put the images first")
    if not marks:
        pieces = [None] * num_images + pieces
    content = [{"type": "image"} if piece is None else {"type": "text", "text": piece} for piece in pieces if piece != ""]
    content = [{"type": "video"}] * num_videos + content
    turn = [{"role": "user", "content": content}]
    return ([{"role": "system", "content": system}] if system else []) + turn


def close_spans(text: str, span: list[str], placeholder: str) -> str:
    """Each ``open … close`` span → ``placeholder`` (its content dropped, never read); a mark left
    unpaired is refused rather than tokenised into a slot with no image."""
    opening, closing = span
    text = re.sub(re.escape(opening) + ".*?" + re.escape(closing), lambda _: placeholder, text, flags=re.DOTALL)
    rest = text.replace(placeholder, "")
    for mark in (opening, closing):
        if mark in rest:
            raise PromptError(f"the prompt has an unpaired {mark!r}; an image's place is written "
                              f"{opening}{closing} (whatever stands between the marks is ignored: "
                              "pass the picture itself in images=)")
    return text


def _split_keep(piece, mark: str) -> list:
    """'a<image>b' → ['a', None, 'b']: None where the placeholder stood."""
    if piece is None:
        return [None]
    parts = piece.split(mark)
    return [x for part in parts for x in (part, None)][:-1]


def prefix_image_placeholders(ids: np.ndarray, image_token_id: int, num_images: int) -> np.ndarray:
    """For models whose image slots precede the whole prompt (BOS included): the text may hold none."""
    if (ids == image_token_id).any():
        raise PromptError(
            "this model places images before the prompt; remove the image placeholder(s) from the text"
        )
    return np.concatenate([np.full(num_images, image_token_id, dtype=np.int64), ids])


def expand_image_slots(ids: np.ndarray, image_token_id: int, tokens_per_image: list[int]) -> PreparedPrompt:
    """Replace each image placeholder id in ``ids`` by ``tokens_per_image[i]`` slots."""
    return expand_media_slots(ids, {image_token_id: tokens_per_image})


def expand_media_slots(ids: np.ndarray, counts: dict[int, list[int]], names: dict[int, str] | None = None) -> PreparedPrompt:
    """Replace the k-th placeholder of each kind (token id → slots per item) by that many slots;
    ``sources`` records, in prompt order, which kind and item each slot run belongs to."""
    names = names or {}
    for token, per_item in counts.items():
        found = int((ids == token).sum())
        if found != len(per_item):
            what = names.get(token, "image")
            raise PromptError(f"the prompt has {found} {what} placeholder(s) but {len(per_item)} {what}(s) were given; "
                              f"put one placeholder where each {what} belongs")
    where = np.flatnonzero(np.isin(ids, list(counts)))
    seen = dict.fromkeys(counts, 0)
    pieces, slots, sources, cursor, pos = [], [], [], 0, 0
    for at in where:
        token = int(ids[at])
        count = counts[token][seen[token]]
        sources.append((token, seen[token]))
        seen[token] += 1
        pieces.append(ids[cursor:at])
        pos += at - cursor
        pieces.append(np.full(count, token, dtype=np.int64))
        slots.append((int(pos), int(count)))
        pos += count
        cursor = at + 1
    pieces.append(ids[cursor:])
    return PreparedPrompt(np.concatenate(pieces).astype(np.int64), slots, sources)
