"""Shapes samples → LLaVA-NeXT training inputs: tiles from vlmforge's own ``anyres`` kernel (the
runtime's preprocessing, bit-exact with the transformers PIL processor), token ids with the image
slots expanded exactly as the runtime expands them, and labels on the answers only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import PreprocessSpec, tile_and_patchify
from ..runtime.prompt import expand_image_slots
from .shapes_data import Question, Sample, prompt_for

IGNORE_INDEX = -100  # the LLaVA loss skips prompt, image and padding positions


@dataclass
class Encoded:
    pixels: np.ndarray  # (tiles, 3, tile, tile) float32: base view + grid
    image_size: tuple[int, int]  # (h, w) of the picture
    input_ids: np.ndarray  # (seq,) int64, image slots hold the image token id
    labels: np.ndarray  # (seq,) int64: answer tokens and EOS, IGNORE_INDEX elsewhere


class ShapesEncoder:
    """Turns a sample and some of its questions into one multi-turn LLaVA conversation:
    ``<s>USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>…``. The first turn is
    exactly the single-turn prompt the runtime tokenises at inference."""

    def __init__(self, tokenizer, spec: PreprocessSpec):
        self.tokenizer = tokenizer  # a transformers tokenizer (BOS added by its post-processor)
        self.spec = spec
        self.image_token_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
        self.eos_id = tokenizer.eos_token_id
        self._cache: dict[tuple[str, bool], list[int]] = {}  # the task's texts are few: tokenise each once

    def _ids(self, text: str, special: bool) -> list[int]:
        key = (text, special)
        if key not in self._cache:
            self._cache[key] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return self._cache[key]

    def encode(self, sample: Sample, questions: list[Question]) -> Encoded:
        if not questions:
            raise ValueError("encode needs at least one question")
        pixels, layout = tile_and_patchify(sample.image, self.spec)
        first = np.asarray(self._ids(prompt_for(questions[0].text), True), dtype=np.int64)
        ids = [expand_image_slots(first, self.image_token_id, [layout.num_image_tokens]).input_ids]
        labels = [np.full(len(ids[0]), IGNORE_INDEX, dtype=np.int64)]
        for k, q in enumerate(questions):
            if k:
                turn = self._ids(f"USER: {q.text} ASSISTANT:", False)
                ids.append(np.asarray(turn, dtype=np.int64))
                labels.append(np.full(len(turn), IGNORE_INDEX, dtype=np.int64))
            answer = np.asarray(self._ids(f" {q.answer}", False) + [self.eos_id], dtype=np.int64)
            ids.append(answer)
            labels.append(answer)
        return Encoded(pixels, sample.image.shape[:2], np.concatenate(ids), np.concatenate(labels))


def collate(batch: list[Encoded], pad_id: int, max_tiles: int) -> dict:
    """Right-pad into the tensors ``LlavaNextForConditionalGeneration.forward`` takes.

    pixel_values (B, max_tiles, 3, t, t): the model keeps each image's first tiles, counted from
    image_sizes, so zero tiles past them are never seen."""
    import torch

    length = max(len(e.input_ids) for e in batch)
    ids = np.full((len(batch), length), pad_id, dtype=np.int64)
    labels = np.full((len(batch), length), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(batch), length), dtype=np.int64)
    tiles = np.zeros((len(batch), max_tiles) + batch[0].pixels.shape[1:], dtype=np.float32)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = e.input_ids, e.labels, 1
        tiles[i, : len(e.pixels)] = e.pixels
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
        "pixel_values": torch.from_numpy(tiles),
        "image_sizes": torch.tensor([e.image_size for e in batch], dtype=torch.int64),
    }
