"""Tokenizer (``tokenizers`` library) + chat template rendering (jinja2, as transformers does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PromptError
from .manifest import TokenizerSpec


class TextTokenizer:
    def __init__(self, root: Path, spec: TokenizerSpec):
        from tokenizers import Tokenizer

        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(root / spec.path))
        self._template = None

    def encode(self, text: str) -> np.ndarray:
        """Text → int64 ids, with the special tokens the checkpoint's tokenizer adds (BOS …)."""
        ids = self.tokenizer.encode(text, add_special_tokens=self.spec.add_special_tokens).ids
        return np.asarray([*self.spec.prefix_ids, *ids], dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def stream(self) -> "DetokenizeStream":
        return DetokenizeStream(self.tokenizer)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.spec.chat_template:
            raise PromptError("this model has no chat template; pass a plain prompt string instead of messages")
        if self._template is None:
            self._template = _compile_template(self.spec.chat_template)
        special = self.spec.special_tokens
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=special.get("bos_token", ""),
            eos_token=special.get("eos_token", ""),
        )


class DetokenizeStream:
    """Incremental detokenisation: yields text only once its bytes are complete (multi-byte safe)."""

    def __init__(self, tokenizer):
        from tokenizers.decoders import DecodeStream

        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str:
        from tokenizers.decoders import DecodeStream

        try:
            return self._stream.step(self._tokenizer, int(token_id)) or ""
        except Exception:  # noqa: BLE001 - tokenizers' "Invalid prefix": see below
            # byte-fallback decoders (ByteFallback) turn a whole run of <0xNN> tokens into U+FFFD once it
            # stops being valid UTF-8, re-decoding text already given out; go on from this token
            self._stream = DecodeStream(skip_special_tokens=True)
            return self._stream.step(self._tokenizer, int(token_id)) or ""


def _compile_template(source: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise PromptError(f"chat template error: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise PromptError(f"the model's chat template does not compile: {e}") from None
