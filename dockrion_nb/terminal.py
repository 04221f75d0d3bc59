"""A run printed in a terminal as it happens: ``dockrion-nb watch``, ``replay`` and ``demo``.

Event content is untrusted, so every line goes through ``safe_text``: escape sequences in a
token cannot move the cursor, recolour or retitle the user's terminal.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import IO

from .bus import EventBus
from .events import BaseEvent, TokenEvent, clip, summarize
from .selection import type_matches
from .tables import offset_text, safe_text, terminal_width


class TracePrinter:
    """Prints events as they arrive: one line each (cut at the terminal's width with "…"),
    tokens joined on one line as they stream.

    Event content is untrusted, so control characters are shown escaped, never sent to the
    terminal. With ``as_json`` each event is one JSON line (the wire form).
    """

    def __init__(
        self, stream: IO[str] | None = None, *, as_json: bool = False, width: int | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.width = width or terminal_width()  # event lines are cut there, with "…"
        self.t0: datetime | None = None
        self.count = 0
        self.last: BaseEvent | None = None
        self._in_tokens = False

    def _head(self, event: BaseEvent) -> str:
        if self.t0 is None:
            self.t0 = event.timestamp
        seq = str(event.sequence) if event.sequence else "-"
        return f"{seq:>5}  {offset_text(event, self.t0):>8}  {event.type:<16} "

    def feed(self, event: BaseEvent) -> None:
        self.count += 1
        self.last = event
        if self.as_json:
            self.stream.write(event.to_json() + "\n")
            self.stream.flush()
            return
        if isinstance(event, TokenEvent):
            if not self._in_tokens:
                self.stream.write(self._head(event))
                self._in_tokens = True
            self.stream.write(safe_text(event.content))
            if event.finish_reason:
                self.stream.write(f"  [{safe_text(event.finish_reason)}]")
            self.stream.flush()
            return
        self._end_tokens()
        line = (self._head(event) + safe_text(summarize(event))).rstrip()
        self.stream.write(clip(line, self.width) + "\n")
        self.stream.flush()

    def _end_tokens(self) -> None:
        if self._in_tokens:
            self.stream.write("\n")
            self._in_tokens = False

    def close(self) -> None:
        self._end_tokens()
        self.stream.flush()


async def follow_run(
    bus: EventBus,
    run_id: str,
    printer: TracePrinter,
    *,
    from_sequence: int = 1,
    types: Sequence[str] | None = None,
) -> BaseEvent | None:
    """Print a run's events (replay then live) until its terminal event; returns that event."""
    return await print_run(bus.subscribe(run_id, from_sequence), printer, types=types)


async def print_run(
    events: AsyncIterator[BaseEvent],
    printer: TracePrinter,
    *,
    types: Sequence[str] | None = None,
) -> BaseEvent | None:
    """Print ``events`` (those of ``types``) until a terminal one, which is returned; closes
    ``events`` in any case. Any source of a run's events will do (the bus, a Dockrion server)."""
    try:
        async for event in events:
            if type_matches(event.type, types):
                printer.feed(event)
            if event.is_terminal:
                printer.close()
                return event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    printer.close()
    return None
