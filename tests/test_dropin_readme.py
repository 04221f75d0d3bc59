"""The examples of ``dockrion_events``' README, run with ``dockrion_events`` and again with
``dockrion_nb`` imported in its place.

The README ("# Dockrion Events", the events package's own, in Dockrion's repository) is not in
the installed ``dockrion`` 0.0.3 package, so each Python block of its "Usage" and "Backends"
sections is transcribed below as written, in its order. The test changes nothing in a block
but the module its imports name; what a block leaves undefined (``data``, ``run_id``,
``event``, ``event_bus``, ``context``) the harness defines first, with the same value for both
modules, and ``print`` is collected instead of written. Top-level ``await`` runs as it does in
a notebook cell; the one block that ends in a bare ``yield`` runs as the body of a generator.

Dockrion's usage docs (``docs/usage/02-the-dockfile/streaming/stream-context.md``, "StreamContext
for Agent Authors") show three more blocks, run the same way at the end.

Results must be equal both ways, except where the README of ``dockrion_nb`` lists the
difference ("Coming from Dockrion"); those places assert each side.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import textwrap
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("dockrion_events")

MODULES = ("dockrion_events", "dockrion_nb")

# -- the README's blocks, as written ---------------------------------------------------------------

EVENT_MODELS = """
from dockrion_events import (
    StartedEvent,
    ProgressEvent,
    CheckpointEvent,
    TokenEvent,
    StepEvent,
    CompleteEvent,
    ErrorEvent,
)

# Events are automatically created by StreamContext
# but can also be created manually for testing
event = ProgressEvent(
    run_id="run-123",
    step="parsing",
    progress=0.5,
    message="Parsing document..."
)
"""

STREAM_CONTEXT = """
from dockrion_events import StreamContext, get_current_context

# In handler mode - context is passed as parameter
def my_handler(payload: dict, context: StreamContext) -> dict:
    context.emit_progress("processing", 0.1, "Starting...")

    # Do work...
    context.checkpoint("intermediate", {"parsed": data})

    context.emit_progress("processing", 0.9, "Almost done...")
    return {"result": "done"}

# Alternative: access via thread-local
def my_node(state):
    context = get_current_context()
    if context:
        context.emit_step("my_node", duration_ms=150)
    return state
"""

QUEUE_MODE = """
from dockrion_events import StreamContext, EventsFilter

# Create queue-mode context (no EventBus required)
filter = EventsFilter(["token", "step"])
context = StreamContext(
    run_id="run-123",
    queue_mode=True,
    events_filter=filter,
)

# Emit events (stored in internal queue)
context.sync_emit_token("Hello")
context.sync_emit_step("processing")

# Drain events for streaming
events = context.drain_queued_events()
for event in events:
    yield event.to_sse()
"""

EVENT_FILTERING = """
from dockrion_events import EventsFilter

# Preset: optimized for chat UIs
filter = EventsFilter("chat")  # token, step, heartbeat

# Preset: all events for debugging
filter = EventsFilter("debug")

# Preset: only lifecycle events
filter = EventsFilter("minimal")  # started, complete, error, cancelled

# Explicit list
filter = EventsFilter(["token", "step", "custom:fraud_check"])

# Check if event is allowed
if filter.is_allowed("token"):
    context.emit_token("Hello")

# Get LangGraph stream modes
modes = filter.get_langgraph_stream_modes()  # ["messages", "updates"]
"""

EVENT_BUS = """
from dockrion_events import EventBus, InMemoryBackend

# Create backend and bus
backend = InMemoryBackend()
bus = EventBus(backend)

# Publish events
await bus.publish(run_id, event)

# Subscribe to events
async for event in bus.subscribe(run_id):
    print(f"Received: {event.type}")
"""

RUN_MANAGER = """
from dockrion_events import RunManager, RunStatus

manager = RunManager(event_bus)

# Create a run
run = await manager.create_run()
print(f"Created run: {run.run_id}")

# Update status
await manager.update_status(run.run_id, RunStatus.RUNNING)

# Set result on completion
await manager.set_result(run.run_id, {"output": "done"})
"""

INMEMORY_BACKEND = """
from dockrion_events import InMemoryBackend

backend = InMemoryBackend()
"""

REDIS_BACKEND = """
from dockrion_events import RedisBackend

backend = RedisBackend(
    url="redis://localhost:6379",
    stream_ttl_seconds=3600,
    max_events_per_run=1000,
)
"""

# The Dockfile blocks of its "Dockfile Configuration" section: Dockrion's runtime builds its
# filter with ``EventsFilter(streaming.events.allowed)``.
DOCKFILE_PRESET = """
streaming:
  async_runs: true
  backend: memory
  events:
    allowed: chat  # Preset
    heartbeat_interval: 15
    max_run_duration: 3600
"""

DOCKFILE_LIST = """
streaming:
  events:
    allowed:
      - token
      - step
      - custom:fraud_check
      - custom:analytics
"""

# -- running a block -------------------------------------------------------------------------------


def for_module(block: str, module: str) -> str:
    """The one-line switch: the block with ``module`` in place of ``dockrion_events``."""
    return textwrap.dedent(block).replace("dockrion_events", module)


def run(block: str, module: str, **given: Any) -> dict[str, Any]:
    """Execute ``block`` (no ``await``) for ``module``; its namespace, with ``printed``."""
    namespace = namespace_for(module, given)
    exec(compile(for_module(block, module), f"<README for {module}>", "exec"), namespace)
    return namespace


def namespace_for(module: str, given: dict[str, Any]) -> dict[str, Any]:
    printed: list[str] = []
    return {
        "__name__": f"readme_{module}",
        "print": lambda *args, **_: printed.append(" ".join(map(str, args))),
        "printed": printed,
        **given,
    }


def start(block: str, module: str, **given: Any) -> tuple[asyncio.Task[Any], dict[str, Any]]:
    """``block`` with top-level ``await`` (a notebook cell) as a task on the running loop."""
    namespace = namespace_for(module, given)
    code = compile(
        for_module(block, module),
        f"<README for {module}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    result = eval(code, namespace)
    assert asyncio.iscoroutine(result)
    return asyncio.ensure_future(result), namespace


def as_generator(block: str, module: str) -> Any:
    """A block that ends in a bare ``yield``: its lines as the body of a generator."""
    body = textwrap.indent(for_module(block, module), "    ")
    namespace = namespace_for(module, {})
    exec(compile(f"def stream():\n{body}", f"<README for {module}>", "exec"), namespace)
    return namespace["stream"]()


def unawaited(action: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``action()`` and the "never awaited" warnings it caused (coroutines created by calling
    an async method without ``await`` are freed, and warn, when the statement ends)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    return result, sorted(str(w.message) for w in caught if "never awaited" in str(w.message))


def shape(event: Any) -> dict[str, Any]:
    """An event without what differs on every run (its id and timestamp)."""
    data = event if isinstance(event, dict) else event.to_dict()
    return {k: v for k, v in data.items() if k not in ("id", "timestamp")}


def frame_shape(frame: str) -> str:
    """An SSE frame with its event's own id and timestamp replaced by placeholders: every
    other byte, the JSON's key order and spacing included, stays to be compared."""
    data = json.loads(frame.split("\ndata: ", 1)[1])
    return frame.replace(data["id"], "<id>").replace(data["timestamp"], "<timestamp>")


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    for _ in range(int(limit / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# -- each block, both ways -------------------------------------------------------------------------


def test_event_models() -> None:
    results = []
    for module in MODULES:
        ns = run(EVENT_MODELS, module)
        names = ["StartedEvent", "CheckpointEvent", "TokenEvent", "StepEvent", "CompleteEvent"]
        results.append(
            (
                type(ns["event"]).__name__,
                shape(ns["event"]),
                frame_shape(ns["event"].to_sse()),
                [ns[n](run_id="r", **FIELDS.get(n, {})).type for n in [*names, "ErrorEvent"]],
            )
        )
    theirs, ours = results
    assert theirs == ours
    assert ours[1] == {
        "type": "progress",
        "run_id": "run-123",
        "sequence": 0,
        "step": "parsing",
        "progress": 0.5,
        "message": "Parsing document...",
    }
    assert ours[3] == ["started", "checkpoint", "token", "step", "complete", "error"]


FIELDS: dict[str, dict[str, Any]] = {
    "CheckpointEvent": {"name": "n"},
    "TokenEvent": {"content": "c"},
    "StepEvent": {"node_name": "n"},
    "ErrorEvent": {"error": "e"},
}


def test_stream_context_handler_and_node_as_written() -> None:
    """As written, the block calls the async ``emit_*`` methods of a sync function without
    ``await``: each call makes a coroutine that is never run, so nothing is emitted, and
    Python warns. ``dockrion_nb`` does the same (the ``sync_*`` forms, which emit, are run
    both ways in test_dropin.py)."""
    results = []
    for module in MODULES:
        lib = __import__(module)
        bus = lib.EventBus(lib.InMemoryBackend())
        ns = run(STREAM_CONTEXT, module, data={"pages": 3})
        context = lib.StreamContext(run_id="run-123", bus=bus)
        handled, handler_warnings = unawaited(lambda ns=ns, c=context: ns["my_handler"]({}, c))
        outside = ns["my_node"]({"k": 1})
        with lib.context_scope(context):
            inside, node_warnings = unawaited(lambda ns=ns: ns["my_node"]({"k": 2}))
        stored = asyncio.run(bus.get_events("run-123"))
        results.append((handled, handler_warnings, outside, inside, node_warnings, stored))
    theirs, ours = results
    assert theirs == ours
    assert ours == (
        {"result": "done"},
        [
            "coroutine 'StreamContext.checkpoint' was never awaited",
            "coroutine 'StreamContext.emit_progress' was never awaited",
            "coroutine 'StreamContext.emit_progress' was never awaited",
        ],
        {"k": 1},
        {"k": 2},
        ["coroutine 'StreamContext.emit_step' was never awaited"],
        [],
    )


def test_queue_mode_frames_are_the_same_bytes() -> None:
    frames = {m: list(as_generator(QUEUE_MODE, m)) for m in MODULES}
    theirs, ours = ([frame_shape(f) for f in frames[m]] for m in MODULES)
    assert theirs == ours
    assert ours == [
        'event: token\ndata: {"id":"<id>","type":"token","run_id":"run-123","sequence":1,'
        '"timestamp":"<timestamp>","content":"Hello","finish_reason":null}\n\n',
        'event: step\ndata: {"id":"<id>","type":"step","run_id":"run-123","sequence":2,'
        '"timestamp":"<timestamp>","node_name":"processing","duration_ms":null,'
        '"input_keys":[],"output_keys":[]}\n\n',
    ]


def test_event_filtering() -> None:
    """``context`` is the queue-mode context of the block before; ``emit_token`` is called
    without ``await`` here too (nothing queued, one warning), and the stream modes are
    ``["messages", "updates", "custom"]`` both ways (the block's comment omits "custom")."""
    results = []
    for module in MODULES:
        lib = __import__(module)
        context = lib.StreamContext(run_id="run-123", queue_mode=True)
        ns, caught = unawaited(lambda m=module, c=context: run(EVENT_FILTERING, m, context=c))
        f = ns["filter"]
        results.append(
            (
                repr(f),
                ns["modes"],
                caught,
                context.queue_size(),
                [f.is_allowed(t) for t in ("token", "step", "progress", "complete")],
                [f.is_allowed("custom", n) for n in ("fraud_check", "analytics")],
            )
        )
    theirs, ours = results
    assert theirs == ours
    assert ours[1:] == (
        ["messages", "updates", "custom"],
        ["coroutine 'StreamContext.emit_token' was never awaited"],
        0,
        [True, True, False, True],
        [True, False],
    )


def subscribed(namespace: dict[str, Any]) -> bool:
    backend = namespace.get("backend")
    return backend is not None and backend.get_subscriber_count("run:run-123") == 1


async def test_event_bus_publish_then_subscribe() -> None:
    """``event`` is the Event Models block's (its sequence is 0, as a hand-made event's is);
    the subscribe loop never ends by itself: the harness publishes a ``complete`` and stops the
    block once it has printed it. Two listed differences show: ``subscribe(run_id)`` replays
    the stored event here (Dockrion: live only), and the bus numbers an event published with
    sequence 0 (Dockrion stores the 0)."""
    results = {}
    for module in MODULES:
        lib = __import__(module)
        event = run(EVENT_MODELS, module)["event"]
        task, ns = start(EVENT_BUS, module, run_id="run-123", event=event)
        await until(
            lambda ns=ns: "backend" in ns and ns["backend"].get_subscriber_count("run:run-123") == 1
        )
        await ns["bus"].publish("run-123", lib.CompleteEvent(run_id="run-123"))
        await until(lambda ns=ns: "Received: complete" in ns["printed"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = [(e.type, e.sequence) for e in await ns["bus"].get_events("run-123")]
        results[module] = (ns["printed"], stored)
    assert results["dockrion_events"] == (
        ["Received: complete"],
        [("progress", 0), ("complete", 0)],
    )
    assert results["dockrion_nb"] == (
        ["Received: progress", "Received: complete"],
        [("progress", 1), ("complete", 2)],
    )


async def test_run_manager() -> None:
    results = []
    for module in MODULES:
        lib = __import__(module)
        event_bus = lib.EventBus(lib.InMemoryBackend())
        task, ns = start(RUN_MANAGER, module, event_bus=event_bus)
        await asyncio.wait_for(task, 10)
        run_obj, manager = ns["run"], ns["manager"]
        results.append(
            (
                [re.sub(r"[0-9a-f-]{36}$", "<uuid>", line) for line in ns["printed"]],
                ns["printed"][0].endswith(run_obj.run_id),
                str(run_obj.status),
                run_obj.output,
                [
                    {**shape(e), "run_id": e.run_id == run_obj.run_id}
                    for e in await event_bus.get_events(run_obj.run_id)
                ],
                manager.get_stats(),
                (await manager.get_run(run_obj.run_id)) is run_obj,
            )
        )
    theirs, ours = results
    assert theirs == ours
    assert ours[:4] == (["Created run: <uuid>"], True, "RunStatus.COMPLETED", {"output": "done"})
    assert [e["type"] for e in ours[4]] == ["complete"]


async def test_in_memory_backend() -> None:
    results = []
    for module in MODULES:
        lib = __import__(module)
        backend = run(INMEMORY_BACKEND, module)["backend"]
        await backend.store_event(
            "r", {"type": "token", "run_id": "r", "sequence": 1, "content": "x"}
        )
        results.append(
            (
                isinstance(backend, lib.EventBackend),
                [shape(e) for e in await backend.get_events("r")],
                backend.get_event_count("r"),
            )
        )
        await backend.close()
    assert results[0] == results[1]
    assert results[1][0] is True and results[1][2] == 1


@pytest.mark.redis
async def test_redis_backend(redis_url: str) -> None:
    """The block as written names ``redis://localhost:6379``; the test's server stands in for
    it (the one change besides the import). Each side writes a run, reads it back, and the
    stream's TTL is the block's ``stream_ttl_seconds``."""
    import redis

    raw = redis.Redis.from_url(redis_url)
    run_id = f"t-readme-{uuid.uuid4().hex[:10]}"  # each side clears it when done
    results = []
    try:
        for module in MODULES:
            lib = __import__(module)
            block = REDIS_BACKEND.replace("redis://localhost:6379", redis_url)
            backend = run(block, module)["backend"]
            bus = lib.EventBus(backend)
            try:
                await bus.publish(run_id, lib.TokenEvent(run_id=run_id, sequence=1, content="a"))
                await bus.publish(run_id, lib.CompleteEvent(run_id=run_id, sequence=2))
                events = [shape(e) for e in await bus.get_events(run_id)]
                ttl = raw.ttl(f"stream:run:{run_id}")
                results.append((type(backend).__name__, events, 3500 < ttl <= 3600))
            finally:
                await backend.clear_run(run_id)
                await backend.close()
    finally:
        raw.close()
    assert results[0] == results[1]
    assert [e["type"] for e in results[1][1]] == ["token", "complete"]
    assert results[1][2] is True


@pytest.mark.parametrize("dockfile", [DOCKFILE_PRESET, DOCKFILE_LIST], ids=["preset", "list"])
def test_dockfile_streaming_sections(dockfile: str, tmp_path: Any) -> None:
    """Both Dockfile blocks load as our configuration (memory backend, Dockrion's other keys
    kept), and the filter Dockrion's runtime builds from ``events.allowed`` answers the same
    with either module."""
    import yaml

    from dockrion_nb.config import load_dockfile

    path = tmp_path / "Dockfile.yaml"
    path.write_text(dockfile)
    config = load_dockfile(path)
    assert config.backend == "memory"
    allowed = yaml.safe_load(dockfile)["streaming"]["events"]["allowed"]
    assert config.model_extra is not None and config.model_extra["events"]["allowed"] == allowed
    answers = []
    for module in MODULES:
        f = __import__(module).EventsFilter(allowed)
        answers.append(
            (
                sorted(f.get_allowed_events()),
                f.get_langgraph_stream_modes(),
                [f.is_allowed(t) for t in ("token", "step", "heartbeat", "progress", "error")],
                [f.is_allowed("custom", n) for n in ("fraud_check", "analytics", "other")],
            )
        )
    assert answers[0] == answers[1]


# -- Dockrion's usage docs: "StreamContext for Agent Authors" ------------------------------------

HANDLER_MODE = """
def handle(payload: dict, context=None) -> dict:
    if context:
        context.sync_emit_progress(step="processing", progress=0.5, message="Halfway done")

    answer = process(payload["query"])

    return {"answer": answer}
"""

THREAD_LOCAL = """
from dockrion_events import get_current_context

def my_helper():
    ctx = get_current_context()
    if ctx:
        ctx.sync_emit_progress(step="helper", progress=0.8, message="Almost done")
"""

CUSTOM_EVENTS = """
def handle(payload: dict, context=None) -> dict:
    if context:
        context.sync_emit("custom:analysis_started", document_id="doc_123")
        # ... process ...
        context.sync_emit("custom:analysis_complete", results={"score": 0.95})

    return {"answer": "done"}
"""


def test_docs_handler_mode_and_thread_local_access() -> None:
    results = []
    for module in MODULES:
        lib = __import__(module)
        bus = lib.EventBus(lib.InMemoryBackend())
        context = lib.StreamContext(run_id="run-123", bus=bus)
        handle = run(HANDLER_MODE, module, process=str.upper)["handle"]
        my_helper = run(THREAD_LOCAL, module)["my_helper"]
        answers = [handle({"query": "q"}, context), handle({"query": "none"})]
        my_helper()  # no current context: does nothing
        with lib.context_scope(context):
            my_helper()
        stored = [shape(e) for e in asyncio.run(bus.get_events("run-123"))]
        results.append((answers, stored))
    theirs, ours = results
    assert theirs == ours
    assert ours[0] == [{"answer": "Q"}, {"answer": "NONE"}]
    assert [(e["step"], e["progress"], e["sequence"]) for e in ours[1]] == [
        ("processing", 0.5, 1),
        ("helper", 0.8, 2),
    ]


def test_docs_custom_events_with_keyword_fields_work_here_and_raise_in_dockrion() -> None:
    """The docs pass a custom event's fields as keywords; Dockrion 0.0.3's ``sync_emit`` takes
    one ``data`` dict and raises ``TypeError``. Ours takes either (listed in the README)."""
    results = {}
    for module in MODULES:
        lib = __import__(module)
        bus = lib.EventBus(lib.InMemoryBackend())
        context = lib.StreamContext(run_id="run-123", bus=bus)
        handle = run(CUSTOM_EVENTS, module)["handle"]
        try:
            outcome: Any = handle({}, context)
        except TypeError as exc:
            outcome = str(exc)
        results[module] = (outcome, [shape(e) for e in asyncio.run(bus.get_events("run-123"))])
    assert results["dockrion_events"] == (
        "StreamContext.sync_emit() got an unexpected keyword argument 'document_id'",
        [],
    )
    assert results["dockrion_nb"] == (
        {"answer": "done"},
        [
            {
                "type": "custom:analysis_started",
                "run_id": "run-123",
                "sequence": 1,
                "document_id": "doc_123",
            },
            {
                "type": "custom:analysis_complete",
                "run_id": "run-123",
                "sequence": 2,
                "results": {"score": 0.95},
            },
        ],
    )
