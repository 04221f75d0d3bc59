"""The plain Python API: every magic and CLI verb as a function.

The magics and the CLI are thin doors onto these functions, so scripts and notebook front ends
without IPython magics get the same behaviour: ``use_backend``, ``publish``, ``trace``,
``watch``, ``replay`` and ``runs``. Functions here are synchronous and run their I/O on the
engine's loop; ``trace`` also works as an ``async with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import math
import os
import random
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel

from .backends.base import BackendError, RunSummary
from .bus import EventBus
from .config import ConfigError, StreamingConfig, load_dockfile
from .context import StreamContext, context_scope
from .engine import Engine, get_engine
from .events import (
    BUILTIN_TYPES,
    CUSTOM_PREFIX,
    EVENT_CLASSES,
    GAP_TYPE,
    BaseEvent,
    EventValidationError,
    TokenEvent,
    make_event,
    parse_event,
    summarize,
    validate_run_id,
)
from .filters import EventsFilter

if TYPE_CHECKING:
    from .widget import RunView

ReplayView = Literal["widget", "table", "json", "df", "events"]
REPLAY_VIEWS: tuple[str, ...] = ("widget", "table", "json", "df", "events")
REDIS_ONLY_OPTIONS = ("url", "ttl", "pool_size")


class NoEventsError(LookupError):
    """The backend holds no (matching) events for a run."""


class EventsTextError(ValueError):
    """An events body (JSON Lines or YAML) that cannot be published; names the bad lines."""


# -- choosing the backend ---------------------------------------------------------------------


def build_config(
    backend: str | None = None,
    *,
    url: str | None = None,
    ttl: int | None = None,
    max_events: int | None = None,
    pool_size: int | None = None,
    dockfile: str | os.PathLike[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StreamingConfig:
    """A validated ``StreamingConfig`` from the options a user typed.

    ``dockfile`` loads a Dockfile's ``streaming:`` section; the other options override it.
    Without ``backend``, a ``url`` means Redis and nothing means memory. ``defaults`` supplies
    ``redis_url``, ``stream_ttl_seconds``, ``max_events_per_run`` and ``connection_pool_size``
    for options not given (the magics' ``%config`` settings). Raises ``ConfigError``.
    """
    defaults = defaults or {}
    if dockfile is not None:
        base = load_dockfile(dockfile, environ=environ).model_dump(exclude_none=True)
        chosen = backend or base.get("backend", "memory")
    else:
        base = {}
        chosen = backend or ("redis" if url else "memory")
    if chosen not in ("memory", "redis"):
        raise ConfigError(f"unknown backend {chosen!r}: use 'memory' or 'redis'")
    data: dict[str, Any] = {**base, "backend": chosen}
    if chosen == "memory":
        given = [
            name
            for name, v in zip(REDIS_ONLY_OPTIONS, (url, ttl, pool_size), strict=True)
            if v is not None
        ]
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise ConfigError(f"{flags} {verb} only to the redis backend (backend is memory)")
        if max_events is not None:
            data["max_events_per_run"] = max_events
        elif "max_events_per_run" in defaults and dockfile is None:
            data["max_events_per_run"] = defaults["max_events_per_run"]
        data.pop("redis", None)
    else:
        redis: dict[str, Any] = dict(data.get("redis") or {})
        from_file = dockfile is not None and bool(redis)
        for key, value, default_key in (
            ("url", url, "redis_url"),
            ("stream_ttl_seconds", ttl, "stream_ttl_seconds"),
            ("max_events_per_run", max_events, "max_events_per_run"),
            ("connection_pool_size", pool_size, "connection_pool_size"),
        ):
            if value is not None:
                redis[key] = value
            elif default_key in defaults and not (from_file and key in redis):
                redis[key] = defaults[default_key]
        data["redis"] = redis
    source = f"{os.fspath(dockfile)}: streaming" if dockfile is not None else "streaming"
    cfg = StreamingConfig.from_mapping(data, environ=environ, source=source)
    if cfg.backend == "redis" and cfg.redis is not None:
        cfg.redis.resolved_url(environ)  # an unset ${REDIS_URL} is reported now, not later
    return cfg


def use_backend(
    backend: str | StreamingConfig | None = None,
    *,
    url: str | None = None,
    ttl: int | None = None,
    max_events: int | None = None,
    pool_size: int | None = None,
    dockfile: str | os.PathLike[str] | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Switch the notebook's backend and connect at once (PING); returns its settings.

    ``use_backend("redis", url="redis://localhost:6379/0")``. Raises ``ConfigError`` for a bad
    setting and ``BackendConnectionError`` (password masked) for an unreachable server; the
    previous backend stays active when either happens. When Redis was asked for but the
    ``redis`` library is missing, the memory backend is used and the returned settings carry
    ``fallback_reason``.
    """
    eng = engine or get_engine()
    cfg = (
        backend
        if isinstance(backend, StreamingConfig)
        else build_config(
            backend,
            url=url,
            ttl=ttl,
            max_events=max_events,
            pool_size=pool_size,
            dockfile=dockfile,
        )
    )
    eng.use(cfg)
    return eng.describe()


def backend_settings(engine: Engine | None = None) -> dict[str, Any]:
    """The active backend's settings (passwords masked)."""
    return (engine or get_engine()).describe()


# -- event types and selection ----------------------------------------------------------------


def check_types(types: str | Iterable[str] | None) -> list[str] | None:
    """Validate ``--type`` values (``token``, ``custom``, ``custom:name``; commas allowed)."""
    if types is None:
        return None
    items = [types] if isinstance(types, str) else list(types)
    out: list[str] = []
    for item in items:
        for name in (p.strip() for p in item.split(",")):
            if not name:
                continue
            known = name in BUILTIN_TYPES or name == "custom"
            if known or (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)):
                out.append(name)
            else:
                raise ValueError(
                    f"unknown event type {name!r}: use one of {', '.join(BUILTIN_TYPES)}, "
                    "custom or custom:<name>"
                )
    return out or None


def type_matches(event_type: str, types: Sequence[str] | None) -> bool:
    if not types:
        return True
    if event_type in types:
        return True
    return event_type.startswith(CUSTOM_PREFIX) and "custom" in types


def no_events(run_id: str, location: str) -> NoEventsError:
    """``no events for run X on redis at redis://***@host:6379/0``."""
    return NoEventsError(f"no events for run {run_id} on {location}")


async def aselect_events(
    bus: EventBus,
    run_id: str,
    *,
    from_sequence: int = 1,
    last: int | None = None,
    types: str | Iterable[str] | None = None,
    location: str = "",
) -> list[BaseEvent]:
    """``select_events`` on a bus, for async callers (the CLI) and the engine."""
    validate_run_id(run_id)
    if from_sequence < 1:
        raise ValueError(f"--from must be 1 or more, not {from_sequence}")
    if last is not None and last < 1:
        raise ValueError(f"--last must be 1 or more, not {last}")
    wanted = check_types(types)
    start = from_sequence
    if last is not None and not wanted:
        # Read only the tail, not the whole stream.
        with contextlib.suppress(BackendError):
            found = [s for s in await bus.list_runs(run_id) if s.run_id == run_id]
            if found and found[0].last_sequence:
                start = max(from_sequence, found[0].last_sequence - last + 1)
    stored = await bus.get_events(run_id, start)
    if not stored:
        everything = stored if start <= 1 else await bus.get_events(run_id, 0)
        if not everything:
            raise no_events(run_id, location or bus.backend_name)
        raise NoEventsError(
            f"run {run_id} has no events from sequence {from_sequence} "
            f"(its last sequence is {everything[-1].sequence})"
        )
    selected = [e for e in stored if type_matches(e.type, wanted)]
    if last is not None:
        selected = selected[-last:]
    if not selected:
        raise NoEventsError(f"run {run_id} has no {', '.join(wanted or [])} events")
    return selected


def select_events(
    run_id: str,
    *,
    from_sequence: int = 1,
    last: int | None = None,
    types: str | Iterable[str] | None = None,
    engine: Engine | None = None,
) -> list[BaseEvent]:
    """The stored events of a run from ``from_sequence``, of ``types``, the ``last`` N of them.

    Raises ``NoEventsError`` naming the run and the backend when nothing matches.
    """
    eng = engine or get_engine()
    return eng.run(
        aselect_events(
            eng.bus,
            run_id,
            from_sequence=from_sequence,
            last=last,
            types=types,
            location=eng.location(),
        )
    )


# -- displaying events and runs ---------------------------------------------------------------

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


def _offset(event: BaseEvent, t0: datetime | None) -> str:
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
    """An HTML table whose every cell is escaped: event content is never HTML."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="dockrion-nb-table"><caption style="text-align:left">{esc(caption)}'
        f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[safe_text(str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


class EventTable(list[BaseEvent]):
    """Events as a table: HTML (escaped) in a notebook, aligned text elsewhere."""

    header = ("seq", "time", "type", "summary")

    def __init__(self, events: Iterable[BaseEvent], title: str = "") -> None:
        super().__init__(events)
        self.title = title

    def rows(self) -> list[tuple[str, str, str, str]]:
        t0 = self[0].timestamp if self else None
        return [(str(e.sequence or "-"), _offset(e, t0), e.type, summarize(e)) for e in self]

    def _repr_html_(self) -> str:
        return _html_table(self.title, self.header, self.rows())

    def __repr__(self) -> str:
        body = _text_table(self.header, self.rows())
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
    """The runs a backend holds, one row each."""

    header = ("run id", "events", "last seq", "status", "first", "last", "TTL left")

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
        return f"{self.caption}\n{_text_table(self.header, self.rows())}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def to_dataframe(events: Sequence[BaseEvent]) -> Any:
    """A pandas DataFrame, one row per event (wire fields as columns)."""
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ImportError(
            "pandas is not installed: pip install pandas (or use --as table)"
        ) from None
    frame = pd.DataFrame([e.to_dict() for e in events])
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def _display(obj: Any) -> None:
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        print(repr(obj))
        return
    display(obj)  # type: ignore[no-untyped-call,unused-ignore]


# -- the verbs ----------------------------------------------------------------------------


def watch(
    run_id: str,
    *,
    from_sequence: int = 1,
    types: str | Iterable[str] | None = None,
    max_events: int | None = None,
    display: bool = True,
    engine: Engine | None = None,
) -> RunView:
    """A live view of a run (replay, then live); shown at once when ``display`` is true.

    A run with no events yet is not an error: the view waits for it.
    """
    from .widget import RunView

    validate_run_id(run_id)
    if from_sequence < 1:
        raise ValueError(f"--from must be 1 or more, not {from_sequence}")
    view = RunView(
        run_id,
        from_sequence=from_sequence,
        types=check_types(types),
        live=True,
        max_events=max_events,
        engine=engine or get_engine(),
    )
    if display:
        _display(view)
    return view


def replay(
    run_id: str,
    *,
    from_sequence: int = 1,
    last: int | None = None,
    types: str | Iterable[str] | None = None,
    as_: ReplayView = "widget",
    engine: Engine | None = None,
) -> Any:
    """The stored events of a run as a replay widget, a table, JSON, a DataFrame or a list.

    Raises ``NoEventsError`` for an unknown run, ``ValueError`` for bad options.
    """
    if as_ not in REPLAY_VIEWS:
        raise ValueError(f"unknown view {as_!r}: use one of {', '.join(REPLAY_VIEWS)}")
    eng = engine or get_engine()
    wanted = check_types(types)
    events = select_events(run_id, from_sequence=from_sequence, last=last, types=wanted, engine=eng)
    if as_ == "events":
        return events
    if as_ == "table":
        return EventTable(events, f"run {run_id}: {len(events)} events on {eng.location()}")
    if as_ == "json":
        return EventJSON(events)
    if as_ == "df":
        return to_dataframe(events)
    from .widget import RunView

    first = next((e.sequence for e in events if e.sequence), from_sequence)
    view = RunView(run_id, from_sequence=first, types=wanted, live=False, engine=eng)
    # A replay view ends with the stored events; wait for them so the returned view (and its
    # static text/HTML, which nbviewer shows) already holds every event.
    view.wait(timeout=30)
    return view


def runs(pattern: str | None = None, *, engine: Engine | None = None) -> RunTable:
    """The runs the active backend holds (``pattern`` is a glob on the run id)."""
    eng = engine or get_engine()
    return RunTable(eng.run(eng.bus.list_runs(pattern or None)), eng.location())


def publish(
    run_id: str,
    event: str | BaseEvent | Mapping[str, Any],
    /,
    engine: Engine | None = None,
    **fields: Any,
) -> BaseEvent:
    """Publish one event: ``publish("r1", "progress", step="load", progress=0.5)``, or an
    event model or wire dict. A type that is not built in becomes ``custom:<type>``.
    Returns the event as stored, with its sequence."""
    validate_run_id(run_id)
    if isinstance(event, str):
        model = user_event(event, run_id, fields)
    elif isinstance(event, BaseEvent):
        model = event
    else:
        model = parse_event({"run_id": run_id, **event, **fields})
    eng = engine or get_engine()
    return eng.run(eng.bus.publish(run_id, model))


def publish_many(
    run_id: str, events: Iterable[BaseEvent | Mapping[str, Any]], *, engine: Engine | None = None
) -> list[BaseEvent]:
    """Publish a batch in order (one round trip on Redis); returns them with sequences."""
    validate_run_id(run_id)
    eng = engine or get_engine()
    return eng.run(eng.bus.publish_many(run_id, list(events)))


# -- parsing what users type ---------------------------------------------------------------


def parse_value(text: str) -> Any:
    """JSON when it parses (``0.5``, ``true``, ``{"a": 1}``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fields(tokens: Iterable[str]) -> dict[str, Any]:
    """``key=value`` tokens to a dict, values parsed as JSON when possible."""
    out: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"expected key=value, got {token!r}")
        out[key] = parse_value(value)
    return out


def user_event(event_type: str, run_id: str, fields: Mapping[str, Any]) -> BaseEvent:
    """An event a user asked to publish: a built-in type, ``custom:<name>``, or a bare name
    (made ``custom:<name>``). ``gap`` is refused: subscribers make those."""
    if event_type == GAP_TYPE:
        raise EventValidationError("'gap' events are made by subscribers, not published")
    given_run = fields.get("run_id", run_id)
    if given_run != run_id:
        raise EventValidationError(f"event is for run {given_run!r}, not {run_id!r}")
    data = {k: v for k, v in fields.items() if k not in ("type", "run_id")}
    if event_type in EVENT_CLASSES or event_type.startswith(CUSTOM_PREFIX):
        return parse_event({"type": event_type, "run_id": run_id, **data})
    return make_event(event_type, run_id, **data)


def _event_from_item(item: Any, run_id: str) -> BaseEvent:
    if not isinstance(item, Mapping):
        raise EventValidationError(
            f"expected an event object with a 'type', got {type(item).__name__}"
        )
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventValidationError("event has no 'type' field")
    return user_event(kind, run_id, item)


def _yaml_items(text: str) -> list[tuple[int, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EventsTextError(f"{where}not valid YAML: {problem}") from None
    if not isinstance(root, yaml.SequenceNode) or not isinstance(data, list):
        raise EventsTextError(
            "the body must be JSON Lines (one event object per line) or a YAML list "
            "(- type: started ...)"
        )
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, data, strict=True)]


def parse_events_text(text: str, run_id: str, *, max_errors: int = 5) -> list[BaseEvent]:
    """Events from JSON Lines or a YAML list, all validated before any is published.

    Each error names its line; ``#`` lines and blank lines in JSON Lines are skipped.
    """
    validate_run_id(run_id)
    lines = text.splitlines()
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not meaningful:
        raise EventsTextError(
            "no events in the body: write one JSON object per line, or a YAML list"
        )
    errors: list[tuple[int, str]] = []
    items: list[tuple[int, Any]] = []
    if meaningful[0].startswith("{"):
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                items.append((number, json.loads(stripped)))
            except json.JSONDecodeError as exc:
                errors.append((number, f"line {number}: not valid JSON: {exc.msg}"))
    else:
        items = _yaml_items(text)
    events: list[BaseEvent] = []
    for number, item in items:
        try:
            events.append(_event_from_item(item, run_id))
        except (EventValidationError, ValueError) as exc:
            errors.append((number, f"line {number}: {exc}"))
    if errors:
        errors.sort()
        more = len(errors) - max_errors
        shown = "; ".join(msg for _, msg in errors[:max_errors])
        if more > 0:
            shown += f" (and {more} more)"
        raise EventsTextError(f"nothing published: {shown}")
    if not events:
        raise EventsTextError("no events in the body")
    return events


# -- tracing a run --------------------------------------------------------------------------

MAX_OUTPUT_BYTES = 256_000
MAX_TRACEBACK_CHARS = 20_000


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` made JSON-safe: containers recursed, models dumped, anything else as repr."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth > 32:
        return repr(value)[:200]
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"), _depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    for method in ("tolist", "item", "to_dict"):  # numpy arrays/scalars, pandas objects
        fn = getattr(value, method, None)
        if callable(fn):
            try:
                return jsonable(fn(), _depth + 1)
            except Exception:
                break
    text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + "..."


def output_of(value: Any) -> dict[str, Any]:
    """A ``complete`` event's ``output``: a dict as itself, anything else under ``result``."""
    if value is None:
        return {}
    safe = jsonable(value)
    out = safe if isinstance(safe, dict) else {"result": safe}
    text = json.dumps(out, ensure_ascii=False)
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        return {"result": repr(value)[:2000], "truncated": True, "size_bytes": len(text)}
    return out


def error_details(exc: BaseException, tb_text: str | None = None) -> dict[str, Any]:
    kind = type(exc)
    if tb_text is None:
        tb_text = "".join(traceback.format_exception(exc))
    if len(tb_text) > MAX_TRACEBACK_CHARS:
        tb_text = "...\n" + tb_text[-MAX_TRACEBACK_CHARS:]
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else (f"{kind.__module__}.{kind.__qualname__}")
    )
    return {"exception_type": name, "traceback": tb_text}


CANCELLING = (KeyboardInterrupt, asyncio.CancelledError)


class Trace:
    """A traced run: ``started`` on entry, then ``complete``, ``error`` or ``cancelled``.

    ``with trace("run-1") as ctx:`` (or ``async with``) gives the run's ``StreamContext``; an
    exception is recorded as an ``error`` event and still raised, ``KeyboardInterrupt`` and
    task cancellation as ``cancelled``. If the body emits its own terminal event (for example
    ``ctx.emit_complete(output=...)``), no second one is sent.
    """

    def __init__(
        self,
        run_id: str,
        *,
        agent: str | None = None,
        framework: str | None = None,
        events: EventsFilter | str | list[str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        if isinstance(events, str):
            events = EventsFilter.parse(events)
        self.engine = engine or get_engine()
        self.ctx: StreamContext = self.engine.context(
            run_id, agent_name=agent, framework=framework, events_filter=events
        )
        self.output: Any = None
        self._t0: float | None = None
        self._scope: contextlib.ExitStack | None = None

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def finished(self) -> bool:
        last = self.ctx.last_event
        return last is not None and last.is_terminal

    def _latency(self) -> float | None:
        return None if self._t0 is None else round(time.perf_counter() - self._t0, 6)

    # sync steps, shared by the context manager and %%publish

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self.ctx.sync_emit_started()

    def complete(self, output: Any = None) -> None:
        if not self.finished:
            self.ctx.sync_emit_complete(output_of(output), self._latency())

    def fail(self, exc: BaseException, tb_text: str | None = None) -> None:
        if not self.finished:
            message = str(exc) or type(exc).__name__
            self.ctx.sync_emit_error(message, type(exc).__name__, error_details(exc, tb_text))

    def cancel(self, reason: str) -> None:
        if not self.finished:
            self.ctx.sync_emit_cancelled(reason)

    def end(self, exc: BaseException | None, tb_text: str | None = None) -> None:
        """Emit the terminal event for how the body ended."""
        if exc is None:
            self.complete(self.output)
        elif isinstance(exc, CANCELLING):
            self.cancel(f"interrupted ({type(exc).__name__})")
        else:
            self.fail(exc, tb_text)

    def __enter__(self) -> StreamContext:
        self.start()
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(context_scope(self.ctx))
        return self.ctx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.close()
        self.end(exc)

    async def __aenter__(self) -> StreamContext:
        self._t0 = time.perf_counter()
        await self.ctx.emit_started()
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(context_scope(self.ctx))
        return self.ctx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.close()
        if self.finished:
            return
        if exc is None:
            await self.ctx.emit_complete(output_of(self.output), self._latency())
        elif isinstance(exc, CANCELLING):
            await self.ctx.emit_cancelled(f"interrupted ({type(exc).__name__})")
        else:
            await self.ctx.emit_error(
                str(exc) or type(exc).__name__, type(exc).__name__, error_details(exc)
            )


def trace(
    run_id: str,
    *,
    agent: str | None = None,
    framework: str | None = None,
    events: EventsFilter | str | list[str] | None = None,
    engine: Engine | None = None,
) -> Trace:
    """Trace a block of code as a run: ``with trace("r1") as ctx: ...`` or ``async with``.

    Set ``t.output`` on the ``Trace`` (``with trace(...) as ctx`` gives the context; keep the
    ``Trace`` object to set it) to fill the ``complete`` event's output.
    """
    return Trace(run_id, agent=agent, framework=framework, events=events, engine=engine)


# -- printing a trace in a terminal ----------------------------------------------------------


class TracePrinter:
    """Prints events as they arrive: one line each, tokens joined on one line as they stream.

    Event content is untrusted, so control characters are shown escaped, never sent to the
    terminal. With ``as_json`` each event is one JSON line (the wire form).
    """

    def __init__(self, stream: IO[str] | None = None, *, as_json: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.t0: datetime | None = None
        self.count = 0
        self.last: BaseEvent | None = None
        self._in_tokens = False

    def _head(self, event: BaseEvent) -> str:
        if self.t0 is None:
            self.t0 = event.timestamp
        seq = str(event.sequence) if event.sequence else "-"
        return f"{seq:>5}  {_offset(event, self.t0):>8}  {event.type:<16} "

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
        self.stream.write((self._head(event) + safe_text(summarize(event))).rstrip() + "\n")
        self.stream.flush()

    def _end_tokens(self) -> None:
        if self._in_tokens:
            self.stream.write("\n")
            self._in_tokens = False

    def close(self) -> None:
        self._end_tokens()
        self.stream.flush()


# -- the demo agent ---------------------------------------------------------------------------

DEMO_QUESTION = "Which river runs through the most countries?"
DEMO_ANSWER = (
    "The Danube flows through ten countries: Germany, Austria, Slovakia, Hungary, Croatia, "
    "Serbia, Romania, Bulgaria, Moldova and Ukraine, more than any other river."
)


async def simulate_agent(
    ctx: StreamContext,
    *,
    speed: float = 1.0,
    fail: bool = False,
    seed: int | None = None,
) -> BaseEvent | None:
    """A made-up agent run with realistic timing (about 3 s at ``speed`` 1): started, a plan
    step, a tool call, progress, a checkpoint, a streamed answer and complete, or an error
    after the tool call when ``fail``. Returns the terminal event."""
    rng = random.Random(seed)
    t0 = time.perf_counter()

    async def pause(seconds: float) -> None:
        if speed > 0 and math.isfinite(speed):
            await asyncio.sleep(seconds * rng.uniform(0.7, 1.3) / speed)

    await ctx.emit_started(agent_name="demo-researcher", framework="dockrion-nb demo")
    await ctx.emit_progress("plan", 0.05, "reading the question")
    async with ctx.step("plan", input_keys=["question"], output_keys=["queries"]):
        await pause(0.4)
    await ctx.emit("tool_call", tool="search", query="rivers by number of countries")
    await ctx.emit_progress("search", 0.25, "searching 3 sources")
    async with ctx.step("search", input_keys=["queries"], output_keys=["documents"]):
        await pause(0.8)
        await ctx.emit_heartbeat()
        await pause(0.4)
    if fail:
        return await ctx.emit_error(
            "search tool timed out after 3 attempts",
            "TOOL_TIMEOUT",
            {"tool": "search", "attempts": 3, "timeout_seconds": 10},
        )
    await ctx.emit_progress("search", 0.5, "3 documents found")
    await ctx.checkpoint(
        "documents", {"count": 3, "top": "List of rivers of Europe", "scores": [0.92, 0.87, 0.55]}
    )
    await ctx.emit_progress("answer", 0.6, "writing the answer")
    words = DEMO_ANSWER.split(" ")
    async with ctx.step("answer", input_keys=["documents"], output_keys=["answer"]):
        for i, word in enumerate(words):
            last = i == len(words) - 1
            await ctx.emit_token(word if i == 0 else " " + word, "stop" if last else None)
            await pause(0.06)
    await ctx.emit_progress("answer", 1.0, "done")
    return await ctx.emit_complete(
        {"answer": DEMO_ANSWER, "question": DEMO_QUESTION, "tokens": len(words)},
        round(time.perf_counter() - t0, 3),
    )


async def follow_run(
    bus: EventBus,
    run_id: str,
    printer: TracePrinter,
    *,
    from_sequence: int = 1,
    types: Sequence[str] | None = None,
) -> BaseEvent | None:
    """Print a run's events (replay then live) until its terminal event; returns that event."""
    events = bus.subscribe(run_id, from_sequence)
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


__all__ = [
    "EventJSON",
    "EventTable",
    "EventsTextError",
    "NoEventsError",
    "RunTable",
    "Trace",
    "TracePrinter",
    "aselect_events",
    "backend_settings",
    "build_config",
    "check_types",
    "jsonable",
    "no_events",
    "output_of",
    "parse_events_text",
    "parse_fields",
    "publish",
    "publish_many",
    "replay",
    "runs",
    "select_events",
    "simulate_agent",
    "to_dataframe",
    "trace",
    "use_backend",
    "user_event",
    "watch",
]
