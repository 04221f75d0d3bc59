"""Static views of stored events and runs: tables, wire JSON and a pandas DataFrame.

What ``replay(as_="table"|"json"|"df")`` and ``runs()`` return. Each shows as escaped HTML in
a notebook and as aligned, terminal-safe text elsewhere: event content is untrusted, so it is
never rendered as HTML and its control characters never reach a terminal.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .backends.base import RunSummary
from .events import BaseEvent, clip, summarize

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """Terminal-safe text: control characters (escape sequences) shown as ``\\x1b`` etc."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _clock(ts: datetime | str | None) -> str:
    if ts is None:
        return ""
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return ts
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def offset_text(event: BaseEvent, t0: datetime | None) -> str:
    """``+1.25s``: when ``event`` happened, counted from ``t0`` (the run's start)."""
    if t0 is None:
        return ""
    return f"+{(event.timestamp - t0).total_seconds():.2f}s"


def _ttl(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "no expiry"
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {sec:02d}s" if minutes else f"{sec}s"


def _html_table(caption: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table whose every cell is escaped (event content is never HTML) and
    left-aligned (notebook front ends right-align table cells by default)."""
    esc = html.escape
    left = ' style="text-align:left"'
    head = "".join(f"<th{left}>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{left}>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="dockrion-nb-table"><caption style="text-align:left">{esc(caption)}'
        f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` when set; 100 when there is none)."""
    return shutil.get_terminal_size((100, 24)).columns


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None
) -> str:
    """Aligned plain text, every cell left-aligned and terminal-safe. With ``width``, the last
    column is cut (with "…") so that no line is longer."""
    cells = [[safe_text(str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    if width is not None and cells and header:
        room = width - sum(w + 2 for w in widths[:-1])
        widths[-1] = max(len(header[-1]), min(widths[-1], room))
        cells = [[*r[:-1], clip(r[-1], widths[-1])] for r in cells]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


class EventTable(list[BaseEvent]):
    """Events as a table: HTML (escaped) in a notebook, aligned text elsewhere. Times count
    from ``run_start`` (the run's first event; the first event shown when not given)."""

    header = ("seq", "time", "type", "summary")

    def __init__(
        self, events: Iterable[BaseEvent], title: str = "", run_start: datetime | None = None
    ) -> None:
        super().__init__(events)
        self.title = title
        self.run_start = run_start

    def rows(self) -> list[tuple[str, str, str, str]]:
        t0 = self.run_start or (self[0].timestamp if self else None)
        return [(str(e.sequence or "-"), offset_text(e, t0), e.type, summarize(e)) for e in self]

    def _repr_html_(self) -> str:
        return _html_table(self.title, self.header, self.rows())

    def __repr__(self) -> str:
        body = text_table(self.header, self.rows(), width=terminal_width())
        return f"{self.title}\n{body}" if self.title else body

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class EventJSON(list[dict[str, Any]]):
    """Events in their wire form: JSON Lines as text, a JSON tree where the front end has one."""

    def __init__(self, events: Iterable[BaseEvent]) -> None:
        super().__init__(e.to_dict() for e in events)

    def __repr__(self) -> str:
        return "\n".join(json.dumps(e, ensure_ascii=False) for e in self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"text/plain": repr(self), "application/json": {"events": list(self)}}


class RunTable(list[RunSummary]):
    """The runs a backend holds, one row each: ``status`` is what the events say, ``run
    status`` what a ``RunManager`` recorded (``-``: none)."""

    header = ("run id", "events", "last seq", "status", "run status", "first", "last", "TTL left")

    def __init__(self, runs: Iterable[RunSummary], location: str = "") -> None:
        super().__init__(sorted(runs, key=lambda r: r.last_timestamp or "", reverse=True))
        self.location = location

    def rows(self) -> list[tuple[str, ...]]:
        return [
            (
                r.run_id,
                str(r.event_count),
                str(r.last_sequence or "-"),
                r.status,
                r.run_status or "-",
                _clock(r.first_timestamp),
                _clock(r.last_timestamp),
                _ttl(r.ttl_seconds),
            )
            for r in self
        ]

    @property
    def caption(self) -> str:
        return f"{len(self)} run{'s' if len(self) != 1 else ''} on {self.location}"

    def _repr_html_(self) -> str:
        return _html_table(self.caption, self.header, self.rows())

    def __repr__(self) -> str:
        if not self:
            return f"no runs on {self.location}"
        return f"{self.caption}\n{text_table(self.header, self.rows(), width=terminal_width())}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


FRAME_COLUMNS = ("sequence", "type", "timestamp", "elapsed_s", "summary")
"""The first columns of every events DataFrame (``replay(as_="df")``, ``RunView``)."""


def to_dataframe(events: Sequence[BaseEvent], run_start: datetime | None = None) -> Any:
    """A pandas DataFrame, one row per event: sequence, type, timestamp (UTC), ``elapsed_s``
    (seconds since ``run_start``, else the first event), ``summary``, then each event's own
    fields. ``replay(as_="df")`` and ``RunView.to_dataframe()`` both build it here."""
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ImportError(
            "pandas is not installed: pip install pandas (or use --as table)"
        ) from None
    t0 = run_start or (events[0].timestamp if events else None)
    rows = []
    for e in events:
        row = e.to_dict()
        row.pop("run_id", None)
        row["elapsed_s"] = (e.timestamp - t0).total_seconds() if t0 is not None else 0.0
        row["summary"] = summarize(e)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else [*FRAME_COLUMNS, "id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    rest = [c for c in frame.columns if c not in FRAME_COLUMNS]
    return frame[[*FRAME_COLUMNS, *rest]]
