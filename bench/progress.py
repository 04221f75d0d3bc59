"""A one-line progress bar on stderr, so the bench needs no extra dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``step(label)`` before each measurement; ``done()`` clears the line."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28) -> None:
        self.total = max(1, total)
        self.count = 0
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self._tty = self.stream.isatty()

    def step(self, label: str) -> None:
        self.count = min(self.count + 1, self.total)
        self._draw(label)

    def note(self, label: str) -> None:
        """Redraw with a new label without advancing (long steps)."""
        self._draw(label)

    def _draw(self, label: str) -> None:
        filled = round(self.width * (self.count - 1) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self.start
        line = f"[{bar}] {self.count}/{self.total} {elapsed:5.0f}s {label}"
        if self._tty:
            self.stream.write("\r\x1b[2K" + line[:160])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        elapsed = time.monotonic() - self.start
        end = f"done in {elapsed:.0f} s"
        if self._tty:
            self.stream.write("\r\x1b[2K" + end + "\n")
        else:
            self.stream.write(end + "\n")
        self.stream.flush()
