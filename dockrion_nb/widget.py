"""``RunView``: the live view of one run, an anywidget fed from the engine thread.

Data path: the engine subscribes to the run (replay first, then live, each sequence once), keeps
the parsed events here, and sends them to the browser as batched custom messages: at most about
20 comm messages a second per widget (the Jupyter server drops IOPub traffic past 1,000 msg/s
and a burst can wedge the kernel's IOPub queue), with consecutive tokens merged. Synced traits
carry only small state (status, counts, timestamps). A front end that starts late (a page
reload, a notebook opened twice) asks by message for what it missed and gets it back in chunks,
pull style. Every trait change and every message leaves from the engine thread, because
ipywidgets' sync bookkeeping is not thread safe and the kernel thread may be busy in a cell.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anywidget
import traitlets as t
from pydantic_core import PydanticSerializationError

from .displays import Displays, latest_parent
from .engine import Engine, Settling, get_engine
from .events import (
    GAP_TYPE,
    TERMINAL_TYPES,
    BaseEvent,
    CompleteEvent,
    GapEvent,
    TokenEvent,
    clip,
    summarize,
    validate_run_id,
)
from .filters import EventsFilter
from .redaction import scrub
from .runstore import run_status
from .static_view import run_html
from .tables import to_dataframe

if TYPE_CHECKING:
    from .bus import EventBus

MSG_INTERVAL = 0.05
"""Seconds of budget each comm message costs: 20 messages a second per widget at most."""
MAX_BATCH = 5000
"""Events per custom message; a fuller batch waits for the next send slot (backpressure)."""
REPLAY_BATCH = 50_000
"""Events per custom message while the view catches up on stored events: the budget counts
messages, not bytes (Jupyter's data rate limit counts stream output only), and the browser folds
one large batch faster than many small ones (100,000 stored events: 2-3 messages, not 20)."""
REPLAY_CHUNK = 5000
"""Events per answer to a front end's replay request."""
PUMP_YIELD = 2000
"""Events the reader takes from a stored run before it lets the loop run the view's sends."""
PUMP_HIGH_WATER = REPLAY_BATCH
"""Events read ahead from the subscription before the reader waits for the sender (one
catch-up batch)."""

RUN_STATUS_POLL = 2.0
"""Seconds between reads of the run's recorded status (``RunManager``) while the view follows;
lifecycle events (started, complete, error, cancelled) trigger a read at once."""

SNAPSHOT_CHARS = 200_000
"""About how much JSON the ``snapshot`` trait holds: the run's last events, for saved notebooks."""

STATUSES = ("waiting", "running", "complete", "error", "cancelled")
FINAL_STATE = [
    "run_id",
    "backend",
    "status",
    "run_status",
    "connection",
    "note",
    "event_count",
    "type_counts",
    "sent_upto",
    "last_sequence",
    "first_timestamp",
    "last_timestamp",
    "latency_seconds",
    "can_cancel",
]
"""The traits sent again when a view stops following (``snapshot`` goes with them)."""
CONNECTIONS = ("replay", "live", "reconnecting", "closed")


class EventSource(Protocol):
    """Where a view reads a run from when it is not the notebook's bus (e.g.
    ``integrations.dockrion_server.ServerSource``): ``source(run_id, from_sequence, live)``
    yields the run's events. Optional: ``name`` (shown as the view's backend),
    ``add_state_listener(fn) -> remover`` (``"live"``/``"reconnecting"``, as the Redis backend
    reports) and ``async cancel(run_id)``, which gives the view its cancel button."""

    def __call__(self, run_id: str, from_sequence: int, live: bool) -> AsyncIterator[BaseEvent]: ...


def _asset_dir() -> Path:
    """``static/`` inside an installed wheel, ``js/`` at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "static", here.parent / "js"):
        if (candidate / "widget.js").is_file() and (candidate / "widget.css").is_file():
            return candidate
    raise ImportError(
        f"dockrion_nb's widget front end (widget.js, widget.css) is missing: looked in "
        f"{here / 'static'} and {here.parent / 'js'}; reinstall dockrion-nb"
    )


ASSET_DIR = _asset_dir()
ESM_PATH = ASSET_DIR / "widget.js"
CSS_PATH = ASSET_DIR / "widget.css"


# -- wire format ------------------------------------------------------------------------------


def encode_events(
    events: Sequence[BaseEvent], unsendable: list[tuple[BaseEvent, str]] | None = None
) -> list[dict[str, Any]]:
    """Events as the front end reads them: each event's wire dict without ``run_id``, except
    that consecutive tokens (sequence n, n+1, ...) become one entry with ``parts`` (their
    contents) and ``dt`` (milliseconds after the first one's timestamp).

    An event that cannot be encoded (publish refuses those, but one may come from a backend
    written by others) is left out and added to ``unsendable`` with the reason, so one bad
    event never stops a view."""
    out: list[dict[str, Any]] = []
    run: dict[str, Any] | None = None
    parts: list[str] = []
    dts: list[int] = []
    run_start = 0.0
    run_last = -1
    for event in events:
        if isinstance(event, TokenEvent) and event.sequence:
            fields = event.__dict__  # one read per field: most of a run is tokens
            content, seq, stamp = fields["content"], fields["sequence"], fields["timestamp"]
            if not content.isascii() and not _is_utf8_text(content):
                if unsendable is not None:
                    unsendable.append((event, "content: str with a lone surrogate"))
                run = None
                continue
            ts = stamp.timestamp()
            finish = fields["finish_reason"]
            if run is not None and seq == run_last + 1:
                parts.append(content)
                dts.append(round((ts - run_start) * 1000))
                if finish is not None:
                    run["finish_reason"] = finish
                run_last = seq
                continue
            parts, dts = [content], [0]
            run = {
                "type": "token",
                "sequence": seq,
                "timestamp": stamp.isoformat(),
                "parts": parts,
                "dt": dts,
                "finish_reason": finish,
            }
            run_start, run_last = ts, seq
            out.append(run)
            continue
        run = None
        try:
            data = event.to_dict()
            # what the kernel's packer does with it (ensure_ascii=False, then UTF-8: a lone
            # surrogate passes json.dumps' default escaping but fails there)
            json.dumps(data, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError, PydanticSerializationError) as exc:
            if unsendable is not None:
                unsendable.append((event, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        data.pop("run_id", None)
        out.append(data)
    return out


def _is_utf8_text(text: str) -> bool:
    """Whether ``text`` survives the trip to the browser as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def build_snapshot(events: Sequence[BaseEvent], limit: int = SNAPSHOT_CHARS) -> dict[str, Any]:
    """The run as a saved notebook shows it without a kernel: its last events (wire entries,
    tokens merged) that fit in about ``limit`` characters of JSON, plus its ``started`` event,
    and a note saying how much was kept. Custom messages are not saved with a notebook; this
    trait is. Only the tail is encoded (a window that grows until it holds ``limit``), and a
    run of tokens longer than the budget keeps its last tokens."""
    window = max(64, limit // 8)
    while True:
        entries = encode_events(events[-window:])
        sizes = [len(json.dumps(entry, default=str)) for entry in entries]
        if window >= len(events) or sum(sizes) > limit:
            break
        window *= 4
    kept: list[dict[str, Any]] = []
    size = 0
    for entry, cost in zip(reversed(entries), reversed(sizes), strict=True):
        if size + cost > limit:
            if "parts" in entry and (limit - size > 100 or not kept):
                kept.append(_token_tail(entry, limit - size))  # its last tokens that fit
            elif not kept:
                kept.append(entry)  # one entry at least
            break
        kept.append(entry)
        size += cost
    kept.reverse()
    first = events[0] if events else None
    started_kept = bool(kept) and first is not None and kept[0].get("sequence") == first.sequence
    if first is not None and first.type == "started" and not started_kept:
        kept[:0] = encode_events([first])
    shown = sum(len(e["parts"]) if "parts" in e else 1 for e in kept)
    total = len(events)
    note = (
        f"saved view: {total} events"
        if shown >= total
        else f"saved view: the last {shown} of {total} events"
    )
    return {"events": kept, "note": note, "total": total}


def _token_tail(entry: dict[str, Any], limit: int) -> dict[str, Any]:
    """The last tokens of a merged token entry that fit in about ``limit`` characters."""
    parts, dts = entry["parts"], entry["dt"]
    size, skip = 0, len(parts)
    while skip > 0:
        cost = len(json.dumps(parts[skip - 1])) + len(str(dts[skip - 1])) + 4  # and ", " twice
        if size + cost > limit:
            break
        size += cost
        skip -= 1
    skip = min(skip, len(parts) - 1)  # the last token at least
    start = datetime.fromisoformat(entry["timestamp"]) + timedelta(milliseconds=dts[skip])
    return {
        **entry,
        "sequence": entry["sequence"] + skip,
        "timestamp": start.isoformat(),
        "parts": parts[skip:],
        "dt": [d - dts[skip] for d in dts[skip:]],
    }


def _key(event: BaseEvent, last: float) -> float:
    """Sort key of a stored event: its sequence; a gap sits just before the events it misses."""
    if event.sequence:
        return float(event.sequence)
    if isinstance(event, GapEvent):
        return max(last, event.from_sequence - 0.5)
    return last


def _types_filter(types: EventsFilter | str | Iterable[str] | None) -> EventsFilter | None:
    if types is None or isinstance(types, EventsFilter):
        return types
    if isinstance(types, str):
        return EventsFilter.parse(types)
    return EventsFilter(list(types))


# -- the widget -------------------------------------------------------------------------------


class RunView(anywidget.AnyWidget):
    """A live view of run ``run_id``: replayed events from ``from_sequence`` on, then live ones.

    ``types`` keeps only some event types (a preset such as ``"chat"`` or a list such as
    ``["token", "custom:score"]``; lifecycle events and gaps always pass). ``live=False`` stops
    after the replay. ``max_events`` bounds what the kernel and the browser keep (the oldest go
    first). ``engine`` defaults to the process's engine. ``source`` follows the run somewhere
    else than the bus (an ``EventSource``, such as a Dockrion server); such a view keeps
    following when the notebook's backend is switched.
    """

    _esm = ESM_PATH
    _css = CSS_PATH

    run_id = t.Unicode("").tag(sync=True)
    backend = t.Unicode("").tag(sync=True)
    status = t.Unicode("waiting").tag(sync=True)
    # What a ``RunManager`` recorded for the run (accepted, running, completed, failed,
    # cancelled; on Redis by any process); "" when it has no record.
    run_status = t.Unicode("").tag(sync=True)
    connection = t.Unicode("replay").tag(sync=True)
    note = t.Unicode("").tag(sync=True)
    event_count = t.Int(0).tag(sync=True)
    type_counts = t.Dict().tag(sync=True)
    sent_upto = t.Int(0).tag(sync=True)
    last_sequence = t.Int(0).tag(sync=True)
    first_timestamp = t.Unicode("").tag(sync=True)
    last_timestamp = t.Unicode("").tag(sync=True)
    latency_seconds = t.Float(None, allow_none=True).tag(sync=True)
    from_sequence = t.Int(1).tag(sync=True)
    live = t.Bool(True).tag(sync=True)
    types = t.List(t.Unicode(), allow_none=True, default_value=None).tag(sync=True)
    max_events = t.Int(None, allow_none=True).tag(sync=True)
    can_cancel = t.Bool(False).tag(sync=True)
    # Set once the view stops following: what a saved notebook shows with no kernel behind it.
    snapshot = t.Dict(allow_none=True, default_value=None).tag(sync=True)
    # Names this widget's event store in the page, shared by all its views.
    _store_key = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        run_id: str,
        *,
        from_sequence: int = 1,
        types: EventsFilter | str | Iterable[str] | None = None,
        live: bool = True,
        max_events: int | None = None,
        engine: Engine | None = None,
        source: EventSource | None = None,
        **kwargs: Any,
    ) -> None:
        validate_run_id(run_id)
        if from_sequence < 0:
            raise ValueError(f"from_sequence must be >= 0, not {from_sequence}")
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be >= 1 or None, not {max_events}")
        self._filter = _types_filter(types)
        self._engine = engine or get_engine()
        bus = self._engine.bus
        type_list: list[str] | None = None
        if isinstance(types, str):
            type_list = [types]
        elif isinstance(types, EventsFilter):
            type_list = [str(types.config)]
        elif types is not None:
            type_list = [str(x) for x in types]
        super().__init__(
            run_id=run_id,
            backend=str(getattr(source, "name", "source")) if source else bus.backend_name,
            can_cancel=callable(getattr(source, "cancel", None)),
            from_sequence=max(1, from_sequence),
            live=live,
            types=type_list,
            max_events=max_events,
            _store_key=uuid.uuid4().hex,
            **kwargs,
        )
        self._source = source
        self._cancelling: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._events: list[BaseEvent] = []
        self._keys: list[float] = []
        self._pending: list[BaseEvent] = []
        self._counts: Counter[str] = Counter()
        self._last_key = 0.0
        self._last_seq = 0
        self._sent_upto = 0
        self._next_slot = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._replay_requests: list[int] = []
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._settled = threading.Event()
        self._ended = threading.Event()
        self._closing = False
        self._caught_up = False
        self._run_status_due: asyncio.Event | None = None
        self._remove_switch_listener: Any = None
        self._unsendable_seen: set[int] = set()
        self._problem_note = ""
        self._end_note = ""
        # each display of this view and what its static HTML showed (see _static_key)
        self._displays = Displays()
        self.messages_sent = 0
        self.on_msg(self._on_front_end_msg)
        ref = weakref.ref(self)

        def switched(new_bus: EventBus) -> None:
            view = ref()
            if view is not None and not view._closing:
                view._call_soon(view._backend_switched, new_bus.backend_name)

        if source is None:
            remover = self._engine.on_switch(switched)
            self._remove_switch_listener = remover if callable(remover) else None
            if live:
                # held by the view: a traced run of this process waits for it at its end
                self._settling = Settling(self.run_id, self._settled)
                self._engine.add_follower(self._settling)
        self._start(bus)

    def _start(self, bus: EventBus) -> None:
        """Start following on the engine (last step of the constructor; a test seam)."""
        # A view of another source is not the bus's: a backend switch does not end it.
        start = self._engine.spawn if self._source is None else self._engine.submit
        self._future = start(self._follow(bus))

    def _open(self, bus: EventBus, after: int) -> AsyncIterator[BaseEvent]:
        """The run's events from ``after`` on, from the source or else the bus."""
        if self._source is None:
            return bus.subscribe(self.run_id, after, live=self.live)
        return self._source(self.run_id, after, self.live)

    # -- Python API ---------------------------------------------------------------------------

    @property
    def events(self) -> list[BaseEvent]:
        """The events received so far (a copy), in sequence order."""
        with self._lock:
            cap = self.max_events
            return list(self._events[-cap:] if cap is not None else self._events)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run's terminal event has reached the view and the view has stopped
        following (its saved state and static HTML are final then), or the subscription ended,
        and return ``status``; after ``timeout`` seconds return the status as it is."""
        if self._engine.in_engine_thread:
            raise RuntimeError("RunView.wait() would block the engine thread that feeds it")
        self._settled.wait(timeout)
        return str(self.status)

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per event, with the columns of
        ``replay(as_="df")``: sequence, type, timestamp, elapsed_s (from the first event the
        view holds), summary, then each event's own fields (pandas is optional)."""
        try:
            return to_dataframe(self.events)
        except ImportError as exc:
            raise ImportError(
                "RunView.to_dataframe() needs pandas; install it with `pip install pandas`"
            ) from exc

    def close(self) -> None:
        """End the subscription, then close the widget's comm (its views disappear)."""
        if "_future" not in self.__dict__:  # the constructor failed part way
            with contextlib.suppress(Exception):
                super().close()
            return
        if not self._closing:
            self._closing = True
            if not self._engine.closed and not self._engine.in_engine_thread:
                with contextlib.suppress(Exception):
                    self._engine.run(self._stop(), timeout=10)
            else:
                self._future.cancel()
            self._settled.set()
            if self._remove_switch_listener is not None:
                self._remove_switch_listener()
        super().close()
        # ipywidgets drops the repr on close; keep the static summary for later displays.
        self.__dict__.pop("_repr_mimebundle_", None)

    def cancel(self, reason: str | None = None, timeout: float = 30.0) -> Any:
        """Ask the view's source to cancel the run (what the cancel button does); returns
        the source's answer. A view of the notebook's bus has nothing to ask."""
        cancel: Callable[..., Any] | None = getattr(self._source, "cancel", None)
        if not callable(cancel):
            raise ValueError(f"this view of run {self.run_id} follows a source that cannot cancel")
        return self._engine.run(cancel(self.run_id, reason=reason), timeout=timeout)

    @property
    def following(self) -> bool:
        """Whether the subscription still runs."""
        return not self._ended.is_set()

    # -- static fallback ----------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.comm is not None:
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle:
                data, metadata = dict(bundle[0]), dict(bundle[1])
        data["text/plain"] = self._summary_text()
        data["text/html"] = self._summary_html()
        return data, metadata

    def _ipython_display_(self) -> None:
        """Display with a display id, so the static text/HTML (what nbconvert, nbviewer and
        GitHub show) can be replaced by the final view when the view stops following."""
        self._displays.show(self._static_key, self._repr_mimebundle_)

    def refresh_static(self) -> None:
        """Replace the static text/HTML of every display of this view with the view as it is
        now. Automatic when the view stops following (the run ended, a replay finished), for
        each display shown before that; call it for a view shown later that is still
        following, or to be sure. Sent under the kernel's latest request, so nbclient records
        it."""
        self._refresh_static(force=True)

    def _static_key(self) -> tuple[Any, ...]:
        """What the static HTML depends on: a display whose key is unchanged is final."""
        with self._lock:
            total = sum(self._counts.values())
        return (self.status, total, self._last_seq, self.backend)

    def _refresh_static(self, force: bool = False) -> None:
        """Update the static part of every display whose view has changed since it was shown
        (at the end of following, engine thread), or of all of them (``force``). A front end
        draws the widget again when its output is updated; the view keeps what the user set
        (filters, scroll, time travel) in its store in the page, so it comes back as it was."""
        if self.comm is None or self._closing:
            return  # a closed widget's output must not turn into static HTML
        self._displays.refresh(self._static_key, self._repr_mimebundle_, force)

    def _summary_counts(self) -> tuple[int, str]:
        with self._lock:
            counts = dict(self._counts)
        total = sum(counts.values())
        return total, ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    def _summary_text(self, last: int = 5) -> str:
        total, counts = self._summary_counts()
        lines = [f"RunView({self.run_id}) {self.status}, {total} events ({self.backend})"]
        if counts:
            lines.append(f"  {counts}")
        for event in self.events[-last:]:
            lines.append(f"  #{event.sequence} {event.type}: {clip(summarize(event), 100)}")
        return "\n".join(lines)

    def _summary_html(self) -> str:
        return run_html(self.run_id, self.backend, self.status, self.events)

    # -- engine thread: following the run ------------------------------------------------------

    def _call_soon(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):
            self._engine.loop.call_soon_threadsafe(fn, *args)

    async def _follow(self, bus: EventBus) -> None:
        """Read the subscription through a buffer, so that "buffer empty" means caught up."""
        self._task = asyncio.current_task()
        buffer: deque[BaseEvent] = deque()  # the reader appends, the loop below takes
        ready = asyncio.Event()  # something to look at: events, the reader's end or return
        room = asyncio.Event()
        room.set()
        paused = [False]  # the reader waits for room
        finished = [False]  # the reader has ended (the source ran out, or failed)
        failure: list[BaseException] = []
        after = max(self.from_sequence, self._last_seq + 1)

        async def pump() -> None:
            source: AsyncIterator[BaseEvent] | None = None
            try:
                source = self._open(bus, after)
                async for event in source:
                    buffer.append(event)
                    if not ready.is_set():
                        ready.set()
                    waiting = len(buffer)
                    if waiting >= PUMP_HIGH_WATER or waiting % PUMP_YIELD == 0:
                        # The buffer may run empty meanwhile: not caught up yet. A stored run
                        # is read with no pause of its own, so every PUMP_YIELD events the
                        # loop gets to send what was taken in: the page draws while we read.
                        paused[0] = True
                        if waiting >= PUMP_HIGH_WATER:
                            room.clear()
                            await room.wait()
                        else:
                            await asyncio.sleep(0)
                        paused[0] = False
                        ready.set()  # back: look again whether the view has caught up
            except Exception as exc:
                failure.append(exc)
            finally:
                finished[0] = True
                ready.set()
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()

        # whatever knows the connection state: the source, else the backend
        state_owner = bus.backend if self._source is None else self._source
        add_listener = getattr(state_owner, "add_state_listener", None)
        remove_listener = add_listener(self._backend_state) if callable(add_listener) else None
        reader = asyncio.create_task(pump())
        self._run_status_due = asyncio.Event()
        # A run's recorded status lives in the bus's store; another source's run is not there.
        status_reader = asyncio.create_task(
            self._follow_run_status(bus, self._run_status_due)
            if self._source is None
            else asyncio.sleep(0)
        )
        ended_by_terminal = False
        try:
            while True:
                if not buffer and not finished[0]:
                    ready.clear()
                    await ready.wait()
                if len(buffer) <= MAX_BATCH:
                    batch = list(buffer)
                    buffer.clear()
                else:
                    batch = [buffer.popleft() for _ in range(MAX_BATCH)]
                if not room.is_set() and len(buffer) < PUMP_HIGH_WATER // 2:
                    room.set()
                if batch:
                    self._accept_all(batch)
                elif finished[0]:
                    break
                # an empty buffer while the reader waits for room is not the end of the replay
                if not buffer and not paused[0] and not finished[0]:
                    self._caught_up = True
                    if self.status in TERMINAL_TYPES:
                        ended_by_terminal = True
                        break
                    if self.live and self.connection == "replay":
                        self._set_state(connection="live")
                await self._flush_soon()
            # the last batch also waits for its send slot (the budget holds to the end)
            delay = self._next_slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            if callable(remove_listener):
                remove_listener()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            status_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await status_reader
            if not self._closing and self._source is None:  # the last word, after the end
                with contextlib.suppress(Exception):
                    await self._read_run_status(bus)
            note = ""
            if failure:
                note = "subscription failed: " + scrub(str(failure[0]))
            elif ended_by_terminal:
                note = f"run finished ({self.status})"
            self._end_note = note
            if note and self._problem_note:
                note = f"{note}; {self._problem_note}"
            self._set_state(connection="closed", **({"note": note} if note else {}))
            self._flush_now()
            # after the last events have gone: building it must not delay them
            with self._lock:
                snapshot = build_snapshot(self._events)
            with latest_parent():
                self._set_state(snapshot=snapshot)
                self._send_final_state()
                self._refresh_static()
            self._ended.set()
            self._settled.set()

    def _send_final_state(self) -> None:
        """Send every small trait once more, under the latest request: the earlier updates
        went under the cell that created the view, which a front end that saves per running
        cell (nbclient) dropped, so a saved notebook would keep a stale "waiting" view."""
        if self.comm is None or self._closing:
            return
        with contextlib.suppress(Exception):
            self.send_state(key=FINAL_STATE)

    def _accept_all(self, events: list[BaseEvent]) -> None:
        """Keep a batch of events (engine thread), in order: dedupe, filter, status, store,
        queue for sending. Traits and the lock are touched once per batch, not per event: a
        stored run of 100,000 events arrives in batches of thousands."""
        last_seq = self._last_seq
        last_key = self._last_key
        flt = self._filter
        kept: list[BaseEvent] = []
        keys: list[float] = []
        types: list[str] = []
        status = self.status
        for event in events:
            seq = event.sequence
            if seq:
                if seq <= last_seq:
                    continue
                last_seq = seq
            kind = event.type
            if flt is not None and kind != GAP_TYPE and not flt.is_allowed(kind):
                continue
            last_key = float(seq) if seq else _key(event, last_key)
            kept.append(event)
            keys.append(last_key)
            types.append(kind)
            if kind in TERMINAL_TYPES or kind == "started":  # a few per run: the slow path
                if self._run_status_due:
                    self._run_status_due.set()
                if kind in TERMINAL_TYPES:
                    if status not in TERMINAL_TYPES:
                        status = kind
                        changes: dict[str, Any] = {"status": kind}
                        if isinstance(event, CompleteEvent) and event.latency_seconds is not None:
                            changes["latency_seconds"] = event.latency_seconds
                        self._set_state(**changes)
                    continue
            if status == "waiting" and kind != GAP_TYPE:
                status = "running"
                self.status = "running"
        self._last_seq = last_seq
        if not kept:
            return
        self._last_key = last_key
        cap = self.max_events
        with self._lock:
            self._events += kept
            self._keys += keys
            self._counts.update(types)
            if cap is not None and len(self._events) > cap + max(64, cap // 4):
                del self._events[: len(self._events) - cap]
                del self._keys[: len(self._keys) - cap]
        self._pending += kept
        self._dirty = True

    async def _read_run_status(self, bus: EventBus) -> str:
        status = await run_status(bus, self.run_id) or ""
        if status != self.run_status:
            self._set_state(run_status=status)
        return status

    async def _follow_run_status(self, bus: EventBus, due: asyncio.Event) -> None:
        """Keep ``run_status`` current: read it now, on each lifecycle event, and every
        ``RUN_STATUS_POLL`` seconds (a status can change with no event, ``update_status``)."""
        while True:
            due.clear()
            try:
                await self._read_run_status(bus)
            except Exception as exc:  # a view keeps following without it
                self._set_state(note="run status unavailable: " + scrub(str(exc)))
                return
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancellation that
            # ends this task when ``due`` is set at the same moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RUN_STATUS_POLL):
                    await due.wait()

    def _backend_state(self, state: str) -> None:
        """The backend's connection state (Redis: ``live``/``reconnecting``), engine thread."""
        if state == "reconnecting" and self.connection in ("live", "replay"):
            self._set_state(connection="reconnecting")
        elif state == "live" and self.connection == "reconnecting":
            self._set_state(connection="live" if self._caught_up else "replay")

    def _set_state(self, **changes: Any) -> None:
        """Change traits together, in one comm message (engine thread only)."""
        with self.hold_sync():
            for name, value in changes.items():
                setattr(self, name, value)

    async def _flush_soon(self) -> None:
        """Send what is pending within the message budget; wait when a batch is full."""
        if not (self._pending or self._replay_requests or self._dirty):
            return
        now = time.monotonic()
        if now >= self._next_slot:
            self._flush_now()
        elif len(self._pending) >= (MAX_BATCH if self._caught_up else REPLAY_BATCH):
            await asyncio.sleep(self._next_slot - now)
            self._flush_now()
        elif self._timer is None:
            self._timer = self._engine.loop.call_at(
                self._engine.loop.time() + (self._next_slot - now), self._flush_now
            )

    def _flush_now(self) -> None:
        """Send pending events, one replay chunk and the changed traits (engine thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._can_send():
            self._pending.clear()
            self._settled.set()
            return
        sent = 0
        unsendable: list[tuple[BaseEvent, str]] = []
        pending, self._pending = self._pending, []
        if pending:
            last = max((e.sequence for e in pending), default=0)
            last = max(last, self._sent_upto)
            self._emit_entries(
                {
                    "kind": "events",
                    "prev": self._sent_upto,
                    "last": last,
                    "events": encode_events(pending, unsendable),
                }
            )
            self._sent_upto = last
            sent += 1
        if self._replay_requests:
            after = self._replay_requests.pop(0)
            self._emit_entries(self._replay_chunk(after, unsendable))
            sent += 1
        if unsendable:
            self._note_unsendable(unsendable)
        if self._dirty or pending:
            self._dirty = False
            with self._lock:
                counts = dict(self._counts)
                first = self._events[0].timestamp.isoformat() if self._events else ""
                last_ts = self._events[-1].timestamp.isoformat() if self._events else ""
            with self.hold_sync():
                self.sent_upto = self._sent_upto
                self.last_sequence = self._last_seq
                self.event_count = sum(counts.values())
                self.type_counts = counts
                if first and not self.first_timestamp:
                    self.first_timestamp = first
                if last_ts:
                    self.last_timestamp = last_ts
            sent += 1
        self.messages_sent += sent
        self._next_slot = time.monotonic() + MSG_INTERVAL * max(1, sent)
        if self._replay_requests and self._timer is None:
            self._timer = self._engine.loop.call_later(MSG_INTERVAL * sent, self._flush_now)

    def _emit(self, payload: dict[str, Any]) -> None:
        """One custom message to the front end (a test seam: subclasses capture it)."""
        self.send(payload)

    def _emit_entries(self, payload: dict[str, Any]) -> None:
        """``_emit`` a batch of event entries; should the comm still refuse it (``encode_events``
        checks what it knows of), send it again without the entries it cannot pack, and say so
        in the note: one bad event never stops a view."""
        try:
            self._emit(payload)
            return
        except (ValueError, TypeError, RecursionError) as exc:
            first_error = f"{type(exc).__name__}: {exc}"[:200]
        kept: list[dict[str, Any]] = []
        dropped: list[int] = []
        for entry in payload["events"]:
            try:
                json.dumps(entry, allow_nan=False, ensure_ascii=False).encode("utf-8")
            except (ValueError, TypeError, RecursionError):
                dropped.append(entry.get("sequence", 0))
                continue
            kept.append(entry)
        self._emit({**payload, "events": kept})
        more = f" (and {len(dropped) - 1} more)" if len(dropped) > 1 else ""
        first = dropped[0] if dropped else "?"
        self._set_problem_note(f"event #{first} could not be shown{more}: {first_error}")

    def _can_send(self) -> bool:
        """Whether messages have somewhere to go (a comm; a comparison's relay)."""
        return self.comm is not None

    def _replay_chunk(
        self, after: int, unsendable: list[tuple[BaseEvent, str]] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            start = bisect.bisect_right(self._keys, after)
            chunk = self._events[start : start + REPLAY_CHUNK]
            more = start + REPLAY_CHUNK < len(self._events)
        last = max([after, *(e.sequence for e in chunk)])
        return {
            "kind": "replay",
            "after": after,
            "last": last,
            "events": encode_events(chunk, unsendable),
            "more": more,
        }

    def _note_unsendable(self, unsendable: list[tuple[BaseEvent, str]]) -> None:
        """Say in the view's note which events could not be shown, once each; the view goes on
        with the next events."""
        fresh = [(e, why) for e, why in unsendable if id(e) not in self._unsendable_seen]
        if not fresh:
            return
        for event, _ in fresh:
            self._unsendable_seen.add(id(event))
        event, why = fresh[0]
        more = f" (and {len(fresh) - 1} more)" if len(fresh) > 1 else ""
        self._set_problem_note(
            f"event #{event.sequence} ({event.type}) could not be shown{more}: {why}"
        )

    def _set_problem_note(self, text: str) -> None:
        self._problem_note = scrub(text)
        end = self._end_note
        self.note = f"{end}; {self._problem_note}" if end else self._problem_note

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Kernel thread: the front end asks for events after a sequence (pull style)."""
        if isinstance(content, dict) and content.get("kind") == "replay":
            after = content.get("after", 0)
            if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
                self._call_soon(self._queue_replay, after)
        elif isinstance(content, dict) and content.get("kind") == "cancel" and self.can_cancel:
            self._call_soon(self._cancel_from_front_end)

    def _cancel_from_front_end(self) -> None:
        """The cancel button (engine thread): ask the source, and say how it went."""
        ask = getattr(self._source, "cancel", None)
        if self.status in TERMINAL_TYPES or self._closing or not callable(ask):
            return

        async def cancel() -> None:
            try:
                await ask(self.run_id)
            except Exception as exc:
                self._set_state(note="cancel failed: " + scrub(str(exc)))
            else:
                if self.status not in TERMINAL_TYPES:
                    self._set_state(note="cancel requested")

        self._set_state(note="cancelling...")
        self._cancelling = self._engine.loop.create_task(cancel())

    def _queue_replay(self, after: int) -> None:
        if after not in self._replay_requests:
            self._replay_requests.append(after)
        now = time.monotonic()
        if now >= self._next_slot:
            self._flush_now()
        elif self._timer is None:
            self._timer = self._engine.loop.call_later(self._next_slot - now, self._flush_now)

    def _backend_switched(self, name: str) -> None:
        self._set_state(
            connection="closed",
            note=f"backend switched to {name}; this view stopped following. "
            "Open a new view to follow the run there.",
        )
        self._flush_now()

    async def _stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        elif task is None:
            self._future.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._replay_requests.clear()


__all__ = [
    "CONNECTIONS",
    "ESM_PATH",
    "SNAPSHOT_CHARS",
    "STATUSES",
    "RunView",
    "build_snapshot",
    "encode_events",
]
