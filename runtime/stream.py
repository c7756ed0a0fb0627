"""Assemble decoded text piece by piece, honouring stop strings.

Text that could still turn out to be the start of a stop string is held back until it can't,
so a stream never shows text that the final result does not contain.
"""

from __future__ import annotations


def stop_list(stop) -> list[str] | None:
    """``stop=``: None, one string, or a list of non-empty strings (a bare string is one stop, not its characters)."""
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(x, str) and x for x in stops):
        raise ValueError(f"stop must be a string or a list of non-empty strings, got {stop!r}")
    return list(stops)


class TextAssembler:
    def __init__(self, detok, stop: list[str]):
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self.detok = detok
        self.stop = list(stop)
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""  # everything accepted so far (stop string excluded)
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add a token; return the text that is now safe to show."""
        self.text += self.detok.step(token_id)
        for s in self.stop:
            at = self.text.find(s, max(0, self.emitted - len(s)))
            if at != -1:
                self.text = self.text[:at]
                self.stopped = True
        safe = len(self.text) if self.stopped else max(self.emitted, len(self.text) - self.holdback)
        piece = self.text[self.emitted : safe]
        self.emitted = safe
        return piece

    def flush(self) -> str:
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece


class TextStream:
    """What ``Pipeline.stream`` returns: iterate it for text pieces; ``result`` once it is exhausted."""

    def __init__(self):
        self.pieces = iter(())
        self.result = None  # GenerationResult

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self.pieces)

    def close(self) -> None:
        """Stop early: frees this generation's turn on the pipeline."""
        self.pieces.close()
