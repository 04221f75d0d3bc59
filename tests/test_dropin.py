"""``dockrion_nb`` as a drop-in for ``dockrion_events`` 0.0.3.

Every public name of theirs exists in ours with a compatible signature (each of their
parameters present, in the same order, with the same default; ours only add parameters with
defaults), and each usage example from Dockrion's docstrings and runtime runs twice, as
written, once importing ``dockrion_events`` and once with ``dockrion_nb`` in its place, with
the same observable results. Where ours differs on purpose (behaviour, never a signature), a
test shows both sides and the README's "Coming from Dockrion" lists it.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel

import dockrion_nb

theirs_module = pytest.importorskip("dockrion_events")
MODULES = ["dockrion_events", "dockrion_nb"]
PUBLIC = [*theirs_module.__all__, "RedisBackend"]

# Pydantic hooks on their models, not API: serializers and validators under their own names.
NOT_API = {"serialize_datetime", "serialize_status", "validate_progress"}

# -- names and signatures -------------------------------------------------------------------------


def _params(fn: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]


POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def assert_compatible(where: str, theirs: Any, ours: Any) -> None:
    """Calls written for ``theirs`` bind the same way to ``ours``."""
    t, o = _params(theirs), _params(ours)
    t_pos = [p for p in t if p.kind in POSITIONAL]
    o_pos = [p for p in o if p.kind in POSITIONAL]
    assert [p.name for p in o_pos[: len(t_pos)]] == [p.name for p in t_pos], where
    for extra in o_pos[len(t_pos) :]:
        assert extra.default is not inspect.Parameter.empty, f"{where}: new required {extra}"
    o_by_name = {p.name: p for p in o}
    for p in t:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            assert any(q.kind is inspect.Parameter.VAR_KEYWORD for q in o), f"{where}: **{p.name}"
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            assert any(q.kind is inspect.Parameter.VAR_POSITIONAL for q in o), f"{where}: *{p.name}"
            continue
        q = o_by_name.get(p.name)
        assert q is not None, f"{where}: parameter {p.name!r} missing"
        if p.default is not inspect.Parameter.empty:
            assert q.default == p.default, (
                f"{where}: {p.name} default {q.default!r} != {p.default!r}"
            )
    for q in o:
        if q.name not in {p.name for p in t} and q.kind not in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            assert q.default is not inspect.Parameter.empty, f"{where}: new required {q.name}"


def _call_style(fn: Any) -> str:
    if inspect.isasyncgenfunction(fn):
        return "async-iter"
    if inspect.iscoroutinefunction(fn):
        return "await"
    return "call"


def assert_same_call_style(where: str, theirs: Any, ours: Any) -> None:
    t, o = _call_style(theirs), _call_style(ours)
    if t == "async-iter":  # ``async for x in f()``: a plain def returning an async iterator too
        hints = inspect.signature(ours).return_annotation
        assert o == "async-iter" or "AsyncIterator" in str(hints), where
    else:
        assert o == t, f"{where}: {t} in Dockrion, {o} here"


def _members(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stop = {object, BaseModel, Enum, str}
    for klass in reversed(cls.__mro__):
        if klass in stop or klass.__module__.startswith(("typing", "pydantic")):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name not in ("__init__", "__len__"):
                continue
            if name.startswith("model_") or name in NOT_API:
                continue
            out[name] = value
    return out


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_of_dockrion_events_is_ours_with_a_compatible_signature(
    name: str,
) -> None:
    theirs, ours = getattr(theirs_module, name), getattr(dockrion_nb, name)
    if not inspect.isclass(theirs):
        assert callable(ours)
        assert_compatible(name, theirs, ours)
        return
    assert inspect.isclass(ours)
    if issubclass(theirs, Enum):
        assert [(m.name, m.value) for m in theirs] == [(m.name, m.value) for m in ours]
        assert str(ours.RUNNING) == str(theirs.RUNNING)  # shown in error messages
        return
    if issubclass(theirs, BaseModel):
        assert issubclass(ours, BaseModel)
        for field, info in theirs.model_fields.items():
            mine = ours.model_fields.get(field)
            assert mine is not None, f"{name}.{field} missing"
            assert mine.is_required() == info.is_required(), f"{name}.{field}"
            if info.default_factory is not None:
                assert mine.default_factory is not None
                assert mine.default_factory() == info.default_factory() or field in (
                    "id",
                    "timestamp",
                    "created_at",
                ), f"{name}.{field}"
            elif not info.is_required():
                assert mine.default == info.default, f"{name}.{field}"
    elif "__init__" in vars(theirs):
        assert_compatible(f"{name}.__init__", theirs.__init__, ours.__init__)
    for member, value in _members(theirs).items():
        where = f"{name}.{member}"
        assert hasattr(ours, member), f"{where} missing"
        mine = inspect.getattr_static(ours, member)
        if isinstance(value, property):
            assert isinstance(mine, property), where
        elif isinstance(value, staticmethod | classmethod) or inspect.isfunction(value):
            fn_t = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            fn_o = mine.__func__ if isinstance(mine, staticmethod | classmethod) else mine
            if member == "__init__":
                continue
            assert_compatible(where, fn_t, fn_o)
            assert_same_call_style(where, fn_t, fn_o)
        elif not callable(value):
            assert getattr(ours, member) == value, where


def test_dockrions_module_paths_that_its_examples_import_exist_here() -> None:
    """``dockrion_events.models``, ``.backends``, ``.backends.memory``, ``.backends.redis``,
    ``.bus``, ``.context`` and ``.streaming``; ``filter`` and ``run_manager`` are not
    mirrored (their names are importable from the top, and no example imports them)."""
    pairs = {
        "models": ["ProgressEvent", "parse_event", "create_event", "is_terminal_event"],
        "backends": ["EventBackend", "InMemoryBackend", "RedisBackend"],
        "backends.memory": ["InMemoryBackend"],
        "backends.redis": ["RedisBackend"],
        "backends.base": ["EventBackend", "BackendError", "BackendConnectionError"],
        "bus": ["EventBus", "EventBusFactory", "create_event_bus"],
        "context": ["StreamContext", "get_current_context", "set_current_context"],
        "streaming": ["StreamingBackend", "LangGraphBackend", "QueueBackend"],
    }
    for path, names in pairs.items():
        theirs = importlib.import_module(f"dockrion_events.{path}")
        ours = importlib.import_module(f"dockrion_nb.{path}")
        for n in names:
            assert hasattr(theirs, n) and hasattr(ours, n), f"{path}.{n}"


# -- Dockrion's examples, run both ways -----------------------------------------------------------


def load(source: str, module: str) -> dict[str, Any]:
    """Run example ``source`` (written against ``dockrion_events``) with ``module`` imported in
    its place: the one-line switch, applied to every import of the example."""
    code = textwrap.dedent(source).replace("dockrion_events", module)
    namespace: dict[str, Any] = {"__name__": f"example_{module}"}
    exec(compile(code, f"<example for {module}>", "exec"), namespace)
    return namespace


async def both(source: str) -> list[Any]:
    """The results of ``example()`` (sync or async) for each module."""
    out = []
    for module in MODULES:
        fn = load(source, module)["example"]
        out.append(await fn() if inspect.iscoroutinefunction(fn) else fn())
    return out


def shape(event: Any) -> dict[str, Any]:
    """An event without what differs on every run (its id and timestamp)."""
    data = event if isinstance(event, dict) else event.to_dict()
    return {k: v for k, v in data.items() if k not in ("id", "timestamp")}


async def test_package_docstring_example_queue_mode_with_the_langgraph_backend() -> None:
    source = """
    from dockrion_events import (
        StreamContext,
        EventsFilter,
        LangGraphBackend,
        get_current_context,
    )
    from test_dropin import shape

    def example():
        backend = LangGraphBackend()
        context = StreamContext(
            run_id="run-123",
            queue_mode=True,
            events_filter=EventsFilter("chat"),
            streaming_backend=backend,
        )
        emitted = context.sync_emit_progress("parsing", 0.5, "Halfway done")
        skipped = context.sync_checkpoint("cp", {"a": 1})  # not in the chat preset
        return emitted, skipped, [shape(e) for e in context.drain_queued_events()]
    """
    theirs, ours = await both(source)
    assert (
        theirs
        == ours
        == (
            True,
            False,
            [
                {
                    "type": "progress",
                    "run_id": "run-123",
                    "sequence": 1,
                    "step": "parsing",
                    "progress": 0.5,
                    "message": "Halfway done",
                }
            ],
        )
    )


async def test_context_docstring_examples_filter_and_emit_through_a_bus() -> None:
    source = """
    from dockrion_events import EventBus, EventsFilter, InMemoryBackend, StreamContext
    from test_dropin import shape

    async def example():
        backend = InMemoryBackend()
        bus = EventBus(backend)
        context = StreamContext(run_id="run-123", bus=bus)

        await context.emit_progress("parsing", 0.5, "Halfway done")
        await context.checkpoint("intermediate", {"data": 123})
        await context.emit_token("Hello")
        await context.emit_step("process_node", duration_ms=150)
        await context.emit("custom_event", {"key": "value"})

        filter = EventsFilter(["token", "step"])
        filtered = StreamContext(run_id="run-456", bus=bus, events_filter=filter)
        kept = await filtered.emit_token("Hello")
        skipped = await filtered.emit_progress("step", 0.5)
        started = await filtered.emit_started()
        return (
            [shape(e) for e in await bus.get_events("run-123")],
            [shape(e) for e in await bus.get_events("run-456")],
            kept.sequence, skipped, started.sequence,
        )
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert [e["type"] for e in ours[0]] == [
        "progress",
        "checkpoint",
        "token",
        "step",
        "custom_event",
    ]
    assert ours[0][4] == {
        "type": "custom_event",
        "run_id": "run-123",
        "sequence": 5,
        "key": "value",
    }
    assert ours[2:] == (1, None, 2)


def test_sync_emitters_with_no_loop_running_as_in_the_context_docstring() -> None:
    source = """
    import asyncio
    from dockrion_events import EventBus, EventsFilter, InMemoryBackend, StreamContext
    from test_dropin import shape

    def example():
        bus = EventBus(InMemoryBackend())
        filter = EventsFilter(["token", "step"])
        context = StreamContext(run_id="run-123", bus=bus, events_filter=filter)
        # This will emit (token is allowed)
        a = context.sync_emit_token("Hello")
        # This will be silently skipped (progress not allowed)
        b = context.sync_emit_progress("step", 0.5)
        c = context.sync_emit("fraud_check", {"score": 0.1})
        return a, b, c, [shape(e) for e in asyncio.run(bus.get_events("run-123"))]
    """
    results = [load(source, m)["example"]() for m in MODULES]
    assert results[0] == results[1]
    assert results[1][:3] == (True, False, False)
    assert results[1][3] == [
        {
            "type": "token",
            "run_id": "run-123",
            "sequence": 1,
            "content": "Hello",
            "finish_reason": None,
        }
    ]


async def test_drain_queued_events_doctest() -> None:
    source = """
    from dockrion_events import StreamContext

    def example():
        context = StreamContext(run_id="123", queue_mode=True)
        context.sync_emit_token("Hello")
        context.sync_emit_token(" world")
        before = (context.has_queued_events(), context.queue_size())
        events = context.drain_queued_events()
        return before, len(events), [e.content for e in events], context.drain_queued_events()
    """
    theirs, ours = await both(source)
    assert theirs == ours == ((True, 2), 2, ["Hello", " world"], [])


async def test_context_access_examples() -> None:
    source = """
    from dockrion_events import (
        StreamContext, context_scope, get_current_context, set_current_context,
    )

    def my_node(state):
        context = get_current_context()
        if context:
            context.sync_emit_step("my_node")
        return state

    def example():
        outer = StreamContext(run_id="outer", queue_mode=True)
        inner = StreamContext(run_id="inner", queue_mode=True)
        set_current_context(outer)
        my_node({})
        with context_scope(inner) as scoped:
            my_node({})
            inside = get_current_context() is scoped is inner
        after = get_current_context() is outer
        set_current_context(None)
        none = get_current_context() is None
        return inside, after, none, outer.queue_size(), inner.queue_size()
    """
    theirs, ours = await both(source)
    assert theirs == ours == (True, True, True, 1, 1)


async def test_models_docstring_examples() -> None:
    source = """
    from dockrion_events.models import ProgressEvent, parse_event, create_event
    from dockrion_events import is_terminal_event, CompleteEvent, BaseEvent

    def example():
        event = ProgressEvent(
            run_id="run-123", step="parsing", progress=0.5, message="Halfway done"
        )
        event_dict = {"type": "progress", "run_id": "run-123", "step": "parsing", "progress": 0.5}
        parsed = parse_event(event_dict)
        made = create_event("progress", "run-123", 5, step="parsing", progress=0.5)
        custom = parse_event({"type": "fraud_check", "run_id": "run-123", "score": 1})
        try:
            parse_event({"run_id": "run-123"})
        except ValueError as exc:
            missing = str(exc).startswith("Event data missing 'type' field")
        clamped = ProgressEvent(run_id="r", step="s", progress=7).progress
        return (
            event.type, isinstance(parsed, ProgressEvent), made.sequence, made.progress,
            isinstance(custom, BaseEvent), custom.type, custom.to_dict()["score"], missing,
            clamped, is_terminal_event(CompleteEvent(run_id="r")), is_terminal_event(event),
            event.to_dict()["message"],
        )
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert ours == (
        "progress",
        True,
        5,
        0.5,
        True,
        "fraud_check",
        1,
        True,
        1.0,
        True,
        False,
        "Halfway done",
    )


async def test_to_sse_frames_match_for_the_same_event() -> None:
    source = """
    from datetime import datetime, timezone
    from dockrion_events import TokenEvent, ErrorEvent

    def example():
        when = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
        return [
            TokenEvent(id="evt-1", run_id="r", sequence=3, timestamp=when, content="ü\\n").to_sse(),
            ErrorEvent(id="evt-2", run_id="r", sequence=4, timestamp=when, error="x",
                       details={"a": [1, 2.5, None]}).to_sse(),
        ]
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert ours[0].startswith("event: token\ndata: {") and ours[0].endswith("}\n\n")


async def test_bus_docstring_example_publish_subscribe_and_replay() -> None:
    source = """
    import asyncio
    from dockrion_events import EventBus, InMemoryBackend, ProgressEvent, is_terminal_event
    from dockrion_events import CompleteEvent

    async def example():
        backend = InMemoryBackend()
        bus = EventBus(backend)
        for i in range(1, 7):
            await bus.publish("run-123", ProgressEvent(
                run_id="run-123", sequence=i, step="parsing", progress=i / 10
            ))
        received = []

        async def subscriber():
            async for event in bus.subscribe("run-123", from_sequence=5):
                received.append((event.type, event.sequence))
                if is_terminal_event(event):
                    break

        task = asyncio.create_task(subscriber())
        while backend.get_subscriber_count("run:run-123") == 0:
            await asyncio.sleep(0.01)
        await bus.publish("run-123", CompleteEvent(run_id="run-123", sequence=7))
        await asyncio.wait_for(task, 10)
        events = await bus.get_events("run-123", from_sequence=5)
        raw = await bus.get_events_raw("run-123", from_sequence=6)
        count = backend.get_event_count("run-123")
        await bus.close()
        return received, [e.sequence for e in events], [r["sequence"] for r in raw], count
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert ours == ([("progress", 5), ("progress", 6), ("complete", 7)], [5, 6, 7], [6, 7], 7)


async def test_backends_docstring_example_on_dockrions_protocol() -> None:
    source = """
    import asyncio
    from dockrion_events.backends import EventBackend, InMemoryBackend

    async def example():
        backend: EventBackend = InMemoryBackend()
        got = []

        async def listen():
            async for event in backend.subscribe("run:abc123"):
                got.append(event["type"])
                return

        task = asyncio.create_task(listen())
        while backend.get_subscriber_count("run:abc123") == 0:
            await asyncio.sleep(0.01)
        await backend.publish("run:abc123", {"type": "progress", "run_id": "abc123", "sequence": 1})
        await backend.store_event("abc123", {"type": "progress", "run_id": "abc123", "sequence": 1})
        await asyncio.wait_for(task, 10)
        stored = await backend.get_events("abc123", from_sequence=1)
        await backend.clear_run("abc123")
        after = await backend.get_events("abc123")
        await backend.close()
        return isinstance(backend, EventBackend), got, [e["sequence"] for e in stored], after
    """
    theirs, ours = await both(source)
    assert theirs == ours == (True, ["progress"], [1], [])


async def test_filter_docstring_examples() -> None:
    source = """
    from dockrion_events import EventsFilter

    def example():
        everything = EventsFilter(None)
        chat = EventsFilter("chat")
        explicit = EventsFilter(["token", "step", "custom:fraud_check"])
        minimal = EventsFilter("minimal")
        filt = EventsFilter(["token", "progress"])
        return (
            everything.is_allowed("token"), everything.allows_all_custom,
            chat.is_allowed("progress"), chat.is_allowed("checkpoint"),
            explicit.is_allowed("token"), explicit.is_allowed("progress"),
            explicit.is_allowed("started"), explicit.is_allowed("custom", "fraud_check"),
            explicit.is_allowed("custom", "other"),
            explicit.get_langgraph_stream_modes(), minimal.get_langgraph_stream_modes(),
            chat.get_langgraph_stream_modes(),
            filt.is_native_event_allowed("messages", ""),
            filt.is_native_event_allowed("custom", "progress"),
            filt.is_native_event_allowed("custom", "checkpoint"),
            explicit.is_native_event_allowed("custom", "custom:fraud_check"),
            filt.is_native_event_allowed("values"), filt.is_native_event_allowed("other"),
            sorted(chat.get_allowed_events()), sorted(explicit.get_allowed_events()),
            [chat.allows_tokens, chat.allows_steps, chat.allows_progress,
             chat.allows_checkpoints, chat.allows_heartbeats, chat.allows_all_custom],
            repr(everything), repr(chat), repr(explicit), repr(EventsFilter("debug")),
            sorted(EventsFilter.MANDATORY_EVENTS), sorted(EventsFilter.CONFIGURABLE_EVENTS),
            {k: sorted(v) for k, v in EventsFilter.PRESETS.items()},
        )
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert ours[9:12] == (
        ["messages", "updates", "custom"],
        ["values"],
        ["messages", "updates", "custom"],
    )


async def test_filter_errors_start_with_dockrions_words() -> None:
    source = """
    from dockrion_events import EventsFilter, StreamContext

    def example():
        out = []
        for bad in ("chatty", ["tokens"], ["custom:"]):
            try:
                EventsFilter(bad)
            except ValueError as exc:
                out.append(str(exc).split(".")[0].split(":")[0])
        try:
            StreamContext(run_id="r")
        except ValueError as exc:
            out.append(str(exc)[:42])
        return out
    """
    theirs, ours = await both(source)
    assert (
        theirs
        == ours
        == [
            "Unknown events preset",
            "Unknown event type",
            "Custom event name cannot be empty in 'custom",
            "EventBus required when queue_mode is False",
        ]
    )


async def test_run_manager_docstring_example() -> None:
    source = """
    from dockrion_events import RunManager, EventBus, InMemoryBackend, RunStatus
    from test_dropin import shape

    async def example():
        backend = InMemoryBackend()
        bus = EventBus(backend)
        manager = RunManager(bus)

        # Create a run
        run = await manager.create_run()
        created = (len(run.run_id), run.status)
        await manager.start_run(run.run_id)
        # Update status
        await manager.update_status(run.run_id, RunStatus.RUNNING)
        # Set result
        await manager.set_result(run.run_id, {"answer": 42})
        fetched = await manager.get_run(run.run_id)
        body = fetched.to_response()
        return (
            created, fetched is run, run.status, body["status"], body["output"],
            [shape(e)["type"] for e in await bus.get_events(run.run_id)],
            manager.get_stats(), manager.is_terminal(run.run_id),
            [r.run_id == run.run_id for r in manager.list_runs(RunStatus.COMPLETED)],
        )
    """
    theirs, ours = await both(source)
    assert str(theirs[0][1]) == str(ours[0][1]) and theirs[1:3][0] == ours[1:3][0]
    assert [str(x) for x in theirs[2:]] == [str(x) for x in ours[2:]]
    assert ours[0][0] == 36 and ours[5] == ["started", "complete"]
    assert ours[6] == {
        "accepted": 0,
        "running": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "total": 1,
    }


async def test_dockrions_runtime_flow_with_its_error_handling() -> None:
    """The shape of ``dockrion_runtime.endpoints.runs``: create with a client id, start, run
    the agent with the context, finish; its SSE endpoint's loop; its ``except ValidationError``
    with a ``"not found"`` check."""
    source = """
    import asyncio
    from dockrion_common import ValidationError
    from dockrion_events import EventBus, EventsFilter, InMemoryBackend, RunManager
    from dockrion_events import is_terminal_event

    async def example():
        bus = EventBus(InMemoryBackend())
        manager = RunManager(event_bus=bus, allow_client_ids=True, agent_name="a", framework="f")
        run = await manager.create_run(run_id="client-1", agent_name="a", framework="f")
        frames = []

        async def sse(from_sequence):
            async for event in bus.subscribe(
                run.run_id, from_sequence=from_sequence, include_stored=(from_sequence > 0)
            ):
                frames.append(event.to_sse().split("\\n")[0])
                if is_terminal_event(event):
                    break

        live = asyncio.create_task(sse(0))
        while bus.backend.get_subscriber_count("run:client-1") == 0:
            await asyncio.sleep(0.01)
        await manager.start_run(run.run_id)
        context = await manager.get_context(run.run_id, events_filter=EventsFilter("chat"))
        context.sync_emit_token("hi")          # from sync agent code inside the loop
        context.sync_emit_progress("p", 0.5)
        await asyncio.sleep(0.05)
        await manager.set_result(run.run_id, output={"r": 1}, latency_seconds=0.1,
                                 metadata={"agent": "a"})
        await asyncio.wait_for(live, 10)
        await sse(2)  # a client resuming from sequence 2 gets the rest again, then stops
        codes = []
        for call in (manager.cancel_run("client-1"), manager.cancel_run("nope"),
                     manager.create_run(run_id="client-1")):
            try:
                await call
            except ValidationError as e:
                codes.append(404 if "not found" in str(e).lower() else 400)
        return frames, codes, run.metadata
    """
    theirs, ours = await both(source)
    assert theirs == ours
    assert ours[0] == [
        "event: started",
        "event: token",
        "event: progress",
        "event: complete",
        "event: token",
        "event: progress",
        "event: complete",
    ]
    assert ours[1:] == ([400, 404, 400], {"agent": "a"})


async def test_streaming_backends_outside_a_graph() -> None:
    source = """
    from dockrion_events import QueueBackend, LangGraphBackend, StreamingBackend
    from dockrion_events import StreamContext, TokenEvent

    def example():
        queue = QueueBackend()
        context = StreamContext(run_id="r", queue_mode=True, streaming_backend=queue)
        context.sync_emit_token("a")
        lg = LangGraphBackend()
        fallback = StreamContext(run_id="r", queue_mode=True, streaming_backend=lg)
        fallback.sync_emit_token("b")  # no graph running: queued instead
        return (
            queue.name, len(queue), [e.content for e in queue.drain()], len(queue),
            queue.is_available(), context.queue_size(),
            lg.name, lg.is_available(), lg.emit(TokenEvent(run_id="r", content="x")),
            fallback.queue_size(),
            isinstance(queue, StreamingBackend), isinstance(lg, StreamingBackend),
            context.streaming_backend is queue, context.queue_mode,
        )
    """
    theirs, ours = await both(source)
    assert (
        theirs
        == ours
        == ("queue", 1, ["a"], 0, True, 0, "langgraph", False, False, 1, True, True, True, True)
    )


async def test_event_bus_factory() -> None:
    source = """
    from dockrion_events.bus import EventBusFactory, create_event_bus

    async def example():
        bus = await EventBusFactory.create("memory", max_events_per_run=5)
        other = await create_event_bus()
        try:
            await EventBusFactory.create("kafka")
        except ValueError as exc:
            error = str(exc).startswith("Unknown backend type: kafka")
        return type(bus.backend).__name__, type(other.backend).__name__, error
    """
    theirs, ours = await both(source)
    assert theirs == ours == ("InMemoryBackend", "InMemoryBackend", True)


async def test_include_stored_false_is_live_only_both_ways() -> None:
    source = """
    import asyncio
    from dockrion_events import EventBus, InMemoryBackend, TokenEvent

    async def example():
        backend = InMemoryBackend()
        bus = EventBus(backend)
        await bus.publish("r", TokenEvent(run_id="r", sequence=1, content="old"))
        seen = []

        async def follow():
            async for event in bus.subscribe("r", from_sequence=1, include_stored=False):
                seen.append(event.content)
                if event.content == "new2":
                    return

        task = asyncio.create_task(follow())
        while backend.get_subscriber_count("run:r") == 0:
            await asyncio.sleep(0.01)
        for i, word in enumerate(["new1", "new2"], start=2):
            await bus.publish("r", TokenEvent(run_id="r", sequence=i, content=word))
        await asyncio.wait_for(task, 10)
        return seen
    """
    theirs, ours = await both(source)
    assert theirs == ours == ["new1", "new2"]


# -- where ours is deliberately better ------------------------------------------------------------


async def test_from_sequence_zero_replays_everything_here_and_nothing_in_dockrion() -> None:
    source = """
    import asyncio
    from dockrion_events import EventBus, InMemoryBackend, TokenEvent, CompleteEvent

    async def example():
        backend = InMemoryBackend()
        bus = EventBus(backend)
        await bus.publish("r", TokenEvent(run_id="r", sequence=1, content="before"))
        seen = []

        async def follow():
            async for event in bus.subscribe("r"):  # from_sequence=0, include_stored=True
                seen.append(event.type)
                if event.type == "complete":
                    return

        task = asyncio.create_task(follow())
        while backend.get_subscriber_count("run:r") == 0:
            await asyncio.sleep(0.01)
        await bus.publish("r", CompleteEvent(run_id="r", sequence=2))
        await asyncio.wait_for(task, 10)
        return seen
    """
    theirs, ours = await both(source)
    assert theirs == ["complete"]  # Dockrion replays only when from_sequence > 0
    assert ours == ["token", "complete"]  # ours: the whole run, then live


async def test_a_custom_type_passed_alone_is_judged_as_custom_here() -> None:
    source = """
    from dockrion_events import EventsFilter

    def example():
        f = EventsFilter(["custom:fraud_check"])
        return f.is_allowed("fraud_check"), f.is_allowed("custom:fraud_check"), f.is_allowed("x")
    """
    theirs, ours = await both(source)
    assert theirs == (False, False, False)  # a stored custom event would be filtered out
    assert ours == (True, True, False)


async def test_what_ours_refuses_that_dockrion_accepts() -> None:
    """Each would store or hand out something broken: a shared event changed in place, an event
    that does not parse back, a run id Redis keys and globs mishandle, a dict that is no event."""
    source = """
    from dockrion_events import EventBus, InMemoryBackend, StreamContext, TokenEvent

    async def example():
        refused = []
        event = TokenEvent(run_id="r", content="x")
        try:
            event.sequence = 5
        except Exception:
            refused.append("frozen")
        bus = EventBus(InMemoryBackend())
        try:
            await StreamContext(run_id="r", bus=bus).emit("token", {"content": "x"})
        except ValueError:
            refused.append("builtin name")
        try:
            StreamContext(run_id="a b:c", queue_mode=True).sync_emit_token("x")
        except ValueError:
            refused.append("run id")
        try:
            await bus.publish_raw("r", {"type": "token"})
        except ValueError:
            refused.append("raw")
        return refused
    """
    theirs, ours = await both(source)
    assert theirs == []
    assert ours == ["frozen", "builtin name", "run id", "raw"]


async def test_timestamps_are_kept_in_utc_here_and_as_given_in_dockrion() -> None:
    """A naive timestamp is read as UTC and one with another offset is converted to UTC, so
    every event carries an offset (elapsed times subtract them; a naive one mixed with aware
    ones cannot be) and reads back equal. Dockrion writes what it was given."""
    source = """
    from datetime import datetime, timedelta, timezone
    from dockrion_events import TokenEvent

    def example():
        naive = datetime(2025, 5, 6, 7, 8, 9)
        paris = datetime(2025, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        out = []
        for when in (naive, paris):
            event = TokenEvent(run_id="r", sequence=1, timestamp=when, content="x")
            out.append((event.to_dict()["timestamp"], '"timestamp":"' in event.to_sse()))
        return out
    """
    theirs, ours = await both(source)
    assert theirs == [("2025-05-06T07:08:09", True), ("2025-05-06T07:08:09+02:00", True)]
    assert ours == [("2025-05-06T07:08:09+00:00", True), ("2025-05-06T05:08:09+00:00", True)]


async def test_publish_refuses_what_dockrion_stores() -> None:
    """Content that is not JSON, a sequence past 2**53-1 and a ``gap`` event: Dockrion stores
    the first two (the first then fails in its own serialiser or reader) and the third (which
    our subscribers would read as a real loss); ours refuses each before anything is stored."""
    source = """
    from dockrion_events import CheckpointEvent, EventBus, InMemoryBackend, TokenEvent

    async def example():
        bus = EventBus(InMemoryBackend())
        outcomes = []
        for make in (
            lambda: CheckpointEvent(run_id="r", name="n", data={"o": {1, 2}}),
            lambda: TokenEvent(run_id="r", content="x", sequence=2**53),
            lambda: {"type": "gap", "run_id": "r"},
        ):
            try:
                event = make()
                if isinstance(event, dict):
                    await bus.publish_raw("r", event)
                else:
                    await bus.publish("r", event)
                outcomes.append("stored")
            except (ValueError, TypeError):
                outcomes.append("refused")
        return outcomes, len(await bus.backend.get_events("r"))
    """
    theirs, ours = await both(source)
    assert theirs == (["stored", "stored", "stored"], 3)
    assert ours == (["refused", "refused", "refused"], 0)


def test_deliberate_differences_are_listed_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Coming from Dockrion", 1)[1].split("\n## ", 1)[0]
    assert "from dockrion_nb import" in section
    for words in [
        "from_sequence=0",
        "include_stored",
        "custom:<name>",
        "prefix_custom",
        "graph.invoke",
        'is_allowed("fraud_check")',
        "frozen",
        "publish_raw",
        "run ids",
        "ValidationError",
        "runstate:run:",
        "to_sse(with_id=True)",
        "naive `timestamp=`",
        "converted",
        "sequence is 0",
        "`EventContentError`",
        "1..2**53-1",
        "`gap` events",
        "`backend.store_event`",
        '`"7"` is refused',
        'document_id="doc_123")`',
    ]:
        assert words in section, words
