"""A conversation that keeps its KV cache between turns.

``send`` renders the whole conversation with the model's chat template (as a cold request
would), then skips the part of the prefill its kept cache already holds: the earlier turns,
their pictures and answers. Only the new user message and the template around it are
prefilled, and the tokens are those of the cold request. Earlier pictures are passed again to
the pipeline, which finds their embeddings in the vision cache.
"""

from __future__ import annotations

from ..media import as_list
from .prefix_cache import PrefixCache
from .request import Request


def _own_cache(window: int = 0) -> PrefixCache:
    """A chat's kept prefix: its last turn's, whatever its size (``window``: PrefixCache's)."""
    return PrefixCache(budget_bytes=1 << 62, min_tokens=1, max_entries=1, window=window)


class Chat:
    def __init__(self, pipe, system: str | None = None, **defaults):
        """``defaults``: generation arguments for every turn (max_new_tokens, temperature …)."""
        self.pipe = pipe
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.images: list = []
        self.defaults = defaults
        self.window = pipe.manifest.llm.attention.bounded_window
        self._kept = _own_cache(self.window)  # this chat's own cache
        caps = pipe.manifest.capabilities
        self.reuses = not (caps.encoder_decoder or caps.cross_attention)

    def send(self, text: str, images=None, on_piece=None, **kwargs):
        """Ask ``text`` (about ``images``, new in this turn) → GenerationResult; ``on_piece`` gets the
        text as it is decoded. The answer joins the conversation."""
        new = as_list(images)
        turn = {"role": "user", "content": [{"type": "image"}] * len(new) + [{"type": "text", "text": text}]}
        messages = self.messages + [turn]
        request = Request(messages=messages, images=self.images + new, **{**self.defaults, **kwargs})
        seq = self.pipe.sequence(request, on_piece=on_piece)
        if self.reuses:
            n, cache = self._kept.match(seq.prepared)
            if n:
                seq.cache, seq.num_cached, seq.prefix_tokens = cache, n, n
        seq.keep_cache = True
        self.pipe.engine.submit(seq)
        seq.done.wait()
        if seq.error is not None:
            raise seq.error
        self.messages = messages + [{"role": "assistant", "content": seq.result.text}]
        self.images += new
        if self.reuses and seq.final_cache is not None:
            self._kept = _own_cache(self.window)
            self._kept.put(seq.seen[: seq.num_cached], seq.prepared, seq.final_cache)
        return seq.result

    def reset(self) -> None:
        system = [m for m in self.messages[:1] if m["role"] == "system"]
        self.messages, self.images = system, []
        self._kept = _own_cache(self.window)
