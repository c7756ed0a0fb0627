"""Prompt → token ids with image slots, the typed chunks of an input (as llama.cpp's mtmd does).

The placeholder (``<image>``) marks where each image goes. Each is expanded to the number of
slots its layout needs; every slot carries the image token id and is later overwritten with an
image embedding. Text can never create a slot: placeholders are counted against the images
given, and message text that contains the placeholder is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PromptError


@dataclass
class PreparedPrompt:
    input_ids: np.ndarray  # (seq,) int64, image slots hold image_token_id
    image_slots: list[tuple[int, int]]  # per image: (first position, number of slots)

    @property
    def num_image_tokens(self) -> int:
        return sum(n for _, n in self.image_slots)


def render_messages(tokenizer, messages: list[dict], image_token: str, placeholder: str | None = None) -> tuple[str, int]:
    """Chat messages → prompt text via the model's template; returns (text, number of image items)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise PromptError("messages must be a list of {'role': ..., 'content': ...} dicts")
    num_images = 0
    for m in messages:
        content = m.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for item in items:
            if item.get("type") == "image":
                num_images += 1
            elif image_token in str(item.get("text", "")) or (placeholder and placeholder in str(item.get("text", ""))):
                raise PromptError(
                    f"message text contains the image placeholder {placeholder or image_token!r}; "
                    "images go in as {'type': 'image'} items, text cannot create image slots"
                )
    return tokenizer.render_chat(messages), num_images


def prefix_image_placeholders(ids: np.ndarray, image_token_id: int, num_images: int) -> np.ndarray:
    """For models whose image slots precede the whole prompt (BOS included): the text may hold none."""
    if (ids == image_token_id).any():
        raise PromptError(
            "this model places images before the prompt; remove the image placeholder(s) from the text"
        )
    return np.concatenate([np.full(num_images, image_token_id, dtype=np.int64), ids])


def expand_image_slots(ids: np.ndarray, image_token_id: int, tokens_per_image: list[int]) -> PreparedPrompt:
    """Replace each image placeholder id in ``ids`` by ``tokens_per_image[i]`` slots."""
    where = np.flatnonzero(ids == image_token_id)
    if len(where) != len(tokens_per_image):
        raise PromptError(
            f"the prompt has {len(where)} image placeholder(s) but {len(tokens_per_image)} image(s) were given; "
            "put one placeholder where each image belongs"
        )
    pieces, slots, cursor, pos = [], [], 0, 0
    for at, count in zip(where, tokens_per_image):
        pieces.append(ids[cursor:at])
        pos += at - cursor
        pieces.append(np.full(count, image_token_id, dtype=np.int64))
        slots.append((int(pos), int(count)))
        pos += count
        cursor = at + 1
    pieces.append(ids[cursor:])
    return PreparedPrompt(np.concatenate(pieces).astype(np.int64), slots)
