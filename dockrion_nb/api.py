"""The plain Python API: every magic and CLI verb as a function.

The magics and the CLI are thin doors onto these functions, so scripts and notebook front ends
without IPython magics get the same behaviour: ``use_backend``, ``publish``, ``trace``,
``watch``, ``replay``, ``compare`` and ``runs``. Functions here are synchronous and run their
I/O on the engine's loop; ``trace`` also works as an ``async with`` block.

The verbs stay thin: options become a config in ``backend_options``, stored events are chosen
in ``selection``, shown by ``tables`` (or the ``widget``), typed events are parsed in
``eventtext`` and runs are traced by ``tracing``. Those names are re-exported here, so
``from dockrion_nb import api; api.parse_events_text(...)`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from .backend_options import build_config
from .config import StreamingConfig
from .demo import simulate_agent
from .engine import Engine, get_engine
from .events import BaseEvent, parse_event, validate_run_id
from .eventtext import EventsTextError, parse_events_text, parse_fields, user_event
from .filters import EventsFilter
from .runstore import list_runs_with_status
from .selection import NoEventsError, aselect_events, check_types, no_events, select_events
from .tables import EventJSON, EventTable, RunTable, to_dataframe
from .terminal import TracePrinter
from .terminal import follow_run as follow_run
from .tracing import RunExistsError, Trace, TraceMode, jsonable, output_of

if TYPE_CHECKING:
    from .comparison import CompareView
    from .widget import RunView

ReplayView = Literal["widget", "table", "json", "df", "events"]
REPLAY_VIEWS: tuple[str, ...] = ("widget", "table", "json", "df", "events")


# -- choosing the backend ---------------------------------------------------------------------


def use_backend(
    backend: str | StreamingConfig | None = None,
    *,
    url: str | None = None,
    ttl: int | None = None,
    max_events: int | None = None,
    pool_size: int | None = None,
    max_runs: int | None = None,
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
            max_runs=max_runs,
            dockfile=dockfile,
        )
    )
    eng.use(cfg)
    return eng.describe()


def backend_settings(engine: Engine | None = None) -> dict[str, Any]:
    """The active backend's settings (passwords masked)."""
    return (engine or get_engine()).describe()


# -- the verbs ----------------------------------------------------------------------------


def _display(obj: Any) -> None:
    """Show ``obj`` in the front end (tests replace this to capture what ``watch`` shows)."""
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        print(repr(obj))
        return
    display(obj)  # type: ignore[no-untyped-call,unused-ignore]


def watch(
    run_id: str,
    *,
    from_sequence: int = 1,
    types: str | Iterable[str] | None = None,
    max_events: int | None = None,
    display: bool = True,
    engine: Engine | None = None,
    server: str | None = None,
    api_key: str | None = None,
) -> RunView:
    """A live view of a run (replay, then live); shown at once when ``display`` is true.

    A run with no events yet is not an error: the view waits for it. With ``server`` (a
    Dockrion server's URL, ``[server]`` extra) the view follows that server's run over its
    HTTP/SSE API instead of the notebook's backend, and can cancel it; ``api_key`` defaults to
    ``$DOCKRION_API_KEY``. An unreachable server or a run it does not know is an error here.
    """
    from .widget import RunView

    validate_run_id(run_id)
    if from_sequence < 1:
        raise ValueError(f"from_sequence must be 1 or more, not {from_sequence}")
    eng = engine or get_engine()
    source = None
    if server is not None:
        mod = _dockrion_server()
        source = mod.ServerSource(server, api_key=api_key)
        eng.run(mod.get_run(source.server, run_id))
    view = RunView(
        run_id,
        from_sequence=from_sequence,
        types=check_types(types),
        live=True,
        max_events=max_events,
        engine=eng,
        source=source,
    )
    if display:
        _display(view)
    return view


def _dockrion_server() -> Any:
    """The Dockrion server integration, imported on first use (it needs httpx)."""
    from .integrations import load_module

    return load_module(
        "dockrion_nb.integrations.dockrion_server", "server", "following a Dockrion server"
    )


def start_server_run(
    server: str,
    payload: Mapping[str, Any],
    *,
    run_id: str | None = None,
    api_key: str | None = None,
    engine: Engine | None = None,
) -> str:
    """Start a run on a Dockrion server (``POST /runs`` with ``payload``, the agent's input);
    returns its run id. Watch it with ``watch(run_id, server=server)``."""
    mod = _dockrion_server()
    eng = engine or get_engine()
    answer = eng.run(mod.start_run(server, payload, run_id, api_key=api_key))
    return str(answer["run_id"])


def cancel_server_run(
    server: str,
    run_id: str,
    *,
    reason: str | None = None,
    api_key: str | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Ask a Dockrion server to cancel a run (``DELETE /runs/ID``); returns its answer. The
    server publishes ``cancelled``, which ends every view of the run; Dockrion 0.0.3 does not
    stop the agent's code itself."""
    mod = _dockrion_server()
    eng = engine or get_engine()
    answer: dict[str, Any] = eng.run(mod.cancel_run(server, run_id, reason=reason, api_key=api_key))
    return answer


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
    if as_ == "json":
        return EventJSON(events)
    start = _run_start(run_id, events, eng)
    if as_ == "table":
        title = f"run {run_id}: {len(events)} events on {eng.location()}"
        return EventTable(events, title, run_start=start)
    if as_ == "df":
        return to_dataframe(events, run_start=start)
    from .widget import RunView

    first = next((e.sequence for e in events if e.sequence), from_sequence)
    view = RunView(run_id, from_sequence=first, types=wanted, live=False, engine=eng)
    # A replay view ends with the stored events; wait for them so the returned view (and its
    # static text/HTML, which nbviewer shows) already holds every event.
    view.wait(timeout=30)
    return view


def compare(
    *run_ids: str,
    live: bool = True,
    max_events: int | None = None,
    display: bool = True,
    engine: Engine | None = None,
) -> CompareView:
    """Two or more runs side by side (``compare("run-a", "run-b")``): outputs, step waterfalls
    on one time axis, tokens, time to first token, latency, errors and a diff of the final
    outputs. Stored runs and live ones alike; shown at once when ``display`` is true."""
    from .comparison import CompareView

    if len(run_ids) == 1 and not isinstance(run_ids[0], str):
        run_ids = tuple(run_ids[0])  # compare(["a", "b"]) works too
    view = CompareView(run_ids, live=live, max_events=max_events, engine=engine or get_engine())
    if display:
        _display(view)
    return view


def _run_start(run_id: str, events: list[BaseEvent], engine: Engine) -> datetime | None:
    """When the run began (its first stored event), so tables and frames count time from
    there even when they show only its end (``last``, ``from_sequence``)."""
    if not events or events[0].sequence <= 1:
        return events[0].timestamp if events else None
    found = engine.run(engine.bus.list_runs(run_id))
    first = found[0].first_timestamp if found else None
    if isinstance(first, str):
        try:
            return datetime.fromisoformat(first)
        except ValueError:
            return None
    return first if isinstance(first, datetime) else None


def runs(pattern: str | None = None, *, engine: Engine | None = None) -> RunTable:
    """The runs the active backend holds (``pattern`` is a glob on the run id), with the
    status ``RunManager`` recorded for each (on Redis, by any process)."""
    eng = engine or get_engine()
    return RunTable(eng.run(list_runs_with_status(eng.bus, pattern or None)), eng.location())


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
    stored = eng.run(eng.bus.publish(run_id, model))
    if stored.is_terminal:
        eng.settle_followers(run_id)  # this process's live views show the end first
    return stored


def publish_many(
    run_id: str, events: Iterable[BaseEvent | Mapping[str, Any]], *, engine: Engine | None = None
) -> list[BaseEvent]:
    """Publish a batch in order (one round trip on Redis); returns them with sequences."""
    validate_run_id(run_id)
    eng = engine or get_engine()
    stored = eng.run(eng.bus.publish_many(run_id, list(events)))
    if any(event.is_terminal for event in stored):
        eng.settle_followers(run_id)  # this process's live views show the end first
    return stored


# -- tracing a run --------------------------------------------------------------------------


def trace(
    run_id: str,
    *,
    agent: str | None = None,
    framework: str | None = None,
    events: EventsFilter | str | list[str] | None = None,
    integrations: Iterable[str] = (),
    mode: TraceMode = "new",
    engine: Engine | None = None,
) -> Trace:
    """Trace a block of code as a run: ``with trace("r1") as ctx: ...`` or ``async with``.

    Set ``t.output`` on the ``Trace`` (``with trace(...) as ctx`` gives the context; keep the
    ``Trace`` object to set it) to fill the ``complete`` event's output. ``integrations``
    (``"langchain"``, ``"instrument"``) traces what the block runs with no emits of its own,
    as ``%%publish --langchain --instrument`` does.

    A run id that already holds events (a re-run) raises ``RunExistsError`` unless ``mode``
    says what to do: ``"replace"`` clears the old run first, ``"append"`` adds to it (the new
    ``started`` begins a second attempt).
    """
    return Trace(
        run_id,
        agent=agent,
        framework=framework,
        events=events,
        integrations=integrations,
        mode=mode,
        engine=engine,
    )


__all__ = [
    "EventJSON",
    "EventTable",
    "EventsTextError",
    "NoEventsError",
    "RunExistsError",
    "RunTable",
    "Trace",
    "TracePrinter",
    "aselect_events",
    "backend_settings",
    "build_config",
    "cancel_server_run",
    "check_types",
    "compare",
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
    "start_server_run",
    "to_dataframe",
    "trace",
    "use_backend",
    "user_event",
    "watch",
]
