"""Assemble decoded text piece by piece, honouring stop strings.

Text that could still turn out to be the start of a stop string is held back until it can't,
so a stream never shows text that the final result does not contain.
"""

from __future__ import annotations


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
