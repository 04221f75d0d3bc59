"""StreamContext: Dockrion's agent-author API; sync twins from any thread; filters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dockrion_nb import EventBus, EventsFilter, InMemoryBackend, StreamContext
from dockrion_nb.engine import Engine


async def test_async_emitters_produce_each_type_in_order() -> None:
    bus = EventBus(InMemoryBackend())
    ctx = StreamContext("r", bus, agent_name="agent", framework="custom")
    await ctx.emit_started()
    await ctx.emit_progress("load", 0.5, "half")
    await ctx.checkpoint("cp", {"k": 1})
    await ctx.emit_token("Hel")
    await ctx.emit_step("node", duration_ms=3, input_keys=["a"], output_keys=["b"])
    await ctx.emit_heartbeat()
    await ctx.emit("fraud_check", {"score": 0.1})
    await ctx.emit("fraud_check", score=0.2)
    await ctx.emit_error("bad", code="E", details={"x": 1})
    await ctx.emit_cancelled("stop")
    await ctx.emit_complete({"out": 1}, latency_seconds=0.1)
    events = await bus.get_events("r")
    assert [e.type for e in events] == [
        "started",
        "progress",
        "checkpoint",
        "token",
        "step",
        "heartbeat",
        "fraud_check",  # Dockrion's type for a custom event: the name as given
        "fraud_check",
        "error",
        "cancelled",
        "complete",
    ]
    assert [e.sequence for e in events] == list(range(1, 12))
    assert events[0].agent_name == "agent"  # type: ignore[attr-defined]
    assert events[6].score == 0.1 and events[7].score == 0.2  # type: ignore[attr-defined]


async def test_prefix_custom_writes_custom_colon_name_and_filters_agree() -> None:
    bus = EventBus(InMemoryBackend())
    ctx = StreamContext("r", bus, events_filter=["custom:kept"], prefix_custom=True)
    assert (await ctx.emit("kept", {"v": 1})).type == "custom:kept"  # type: ignore[union-attr]
    assert (await ctx.emit("custom:kept", v=2)).type == "custom:kept"  # type: ignore[union-attr]
    assert await ctx.emit("dropped", {}) is None
    plain = StreamContext("r", bus, events_filter=["custom:kept"])
    assert (await plain.emit("kept", {})).type == "kept"  # type: ignore[union-attr]
    assert await plain.emit("dropped", {}) is None
    assert [e.type for e in await bus.get_events("r")] == ["custom:kept", "custom:kept", "kept"]


async def test_a_plain_custom_name_may_not_be_a_builtin_type() -> None:
    ctx = StreamContext("r", EventBus(InMemoryBackend()))
    with pytest.raises(ValueError, match="'token' is a built-in event type"):
        await ctx.emit("token", {"content": "x"})
    prefixed = StreamContext("r", EventBus(InMemoryBackend()), prefix_custom=True)
    assert (await prefixed.emit("token", {})).type == "custom:token"  # type: ignore[union-attr]


async def test_custom_fields_may_not_overwrite_envelope_fields() -> None:
    ctx = StreamContext("r", EventBus(InMemoryBackend()))
    with pytest.raises(ValueError, match="reserved names"):
        await ctx.emit("x", run_id="other")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("minimal", ["started", "complete"]),
        ("chat", ["started", "progress", "token", "step", "heartbeat", "complete"]),
        (
            "debug",
            [
                "started",
                "progress",
                "checkpoint",
                "token",
                "step",
                "heartbeat",
                "a",
                "b",
                "complete",
            ],
        ),
        (["token", "custom:a"], ["started", "token", "a", "complete"]),
        (["custom"], ["started", "a", "b", "complete"]),
    ],
)
async def test_filter_presets_and_lists_keep_mandatory_events(
    preset: str | list[str], expected: list[str]
) -> None:
    bus = EventBus(InMemoryBackend())
    ctx = StreamContext("r", bus, events_filter=preset)
    await ctx.emit_started()
    await ctx.emit_progress("p", 0.1)
    await ctx.checkpoint("c", {})
    await ctx.emit_token("t")
    await ctx.emit_step("s")
    await ctx.emit_heartbeat()
    await ctx.emit("a", {})
    await ctx.emit("b", {})
    await ctx.emit_complete({})
    assert [e.type for e in await bus.get_events("r")] == expected


def test_filter_errors_name_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"^Unknown events preset: 'chatty'\. Valid presets"):
        EventsFilter("chatty")
    with pytest.raises(ValueError, match=r"^Unknown event type: 'tokens'\. Valid types"):
        EventsFilter(["tokens"])
    with pytest.raises(ValueError, match=r"^Custom event name cannot be empty in 'custom:'"):
        EventsFilter(["custom:"])
    assert EventsFilter.parse("token, step").is_allowed("step")
    assert not EventsFilter.parse("token,step").is_allowed("progress")


def test_filter_matches_dockrions_decisions() -> None:
    from dockrion_events.filter import EventsFilter as TheirFilter

    configs: list[str | list[str] | None] = [
        None,
        "minimal",
        "chat",
        "debug",
        "all",
        ["token"],
        ["custom:x", "step"],
        ["custom"],
    ]
    for cfg in configs:
        ours, theirs = EventsFilter(cfg), TheirFilter(cfg)
        for kind in [
            "started",
            "complete",
            "error",
            "cancelled",
            "token",
            "step",
            "progress",
            "checkpoint",
            "heartbeat",
        ]:
            assert ours.is_allowed(kind) == theirs.is_allowed(kind), (cfg, kind)
        for name in ["x", "y"]:
            assert ours.is_allowed("custom", name) == theirs.is_allowed("custom", name)


def test_sync_methods_without_a_running_loop() -> None:
    backend = InMemoryBackend()
    bus = EventBus(backend)
    ctx = StreamContext("r", bus)
    assert ctx.sync_emit_started()
    assert ctx.sync_emit_token("a")
    assert ctx.sync_emit_progress("s", 1.0)
    assert ctx.sync_checkpoint("c", {"v": 1})
    assert ctx.sync_emit_step("n", 4)
    assert ctx.sync_emit_heartbeat()
    assert ctx.sync_emit("custom_thing", value=1)
    assert ctx.sync_emit_complete({"ok": True})
    events = asyncio.run(bus.get_events("r"))
    assert [e.sequence for e in events] == list(range(1, 9))
    ctx.close()


def test_sync_filtered_events_report_false() -> None:
    ctx = StreamContext("r", EventBus(InMemoryBackend()), events_filter="minimal")
    assert ctx.sync_emit_token("x") is False
    assert ctx.sync_emit_started() is True
    ctx.close()


async def test_sync_methods_inside_a_running_loop_keep_order() -> None:
    bus = EventBus(InMemoryBackend())
    ctx = StreamContext("r", bus)

    def agent_code() -> None:  # sync code called from a coroutine
        ctx.sync_emit_started()
        for i in range(20):
            ctx.sync_emit_token(str(i))
        ctx.sync_emit_complete({})

    agent_code()
    await ctx.flush()
    events = await bus.get_events("r")
    assert [e.type for e in events] == ["started"] + ["token"] * 20 + ["complete"]
    assert [getattr(e, "content", None) for e in events[1:21]] == [str(i) for i in range(20)]


def test_sync_methods_from_another_thread_reach_the_engine_loop() -> None:
    engine = Engine()
    try:
        ctx = engine.context("r")
        errors: list[BaseException] = []

        def worker(tag: str) -> None:
            try:
                for i in range(50):
                    ctx.sync_emit_token(f"{tag}{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        events = engine.run(engine.bus.get_events("r"))
        assert sorted(e.sequence for e in events) == list(range(1, 101))
        a = [e.content for e in events if e.content.startswith("a")]  # type: ignore[attr-defined]
        assert a == [f"a{i}" for i in range(50)]
    finally:
        engine.shutdown()


async def test_async_methods_called_from_another_loop_are_carried_to_the_engine() -> None:
    engine = Engine()
    try:
        ctx = engine.context("r")
        await ctx.emit_started()
        await ctx.emit_token("x")
        events = await engine.arun(engine.bus.get_events("r"))
        assert [e.type for e in events] == ["started", "token"]
    finally:
        engine.shutdown()


# -- Dockrion's queue mode, streaming backends and context access ------------------------------


def test_a_context_needs_a_bus_unless_it_queues() -> None:
    with pytest.raises(ValueError, match=r"^EventBus required when queue_mode is False"):
        StreamContext("r")
    assert StreamContext("r", queue_mode=True).queue_mode


async def test_queue_mode_numbers_events_and_keeps_them_for_draining() -> None:
    ctx = StreamContext("r", queue_mode=True, events_filter=["token", "custom:kept"])
    assert ctx.sync_emit_token("a") and ctx.sync_emit_token("b")
    assert not ctx.sync_emit_progress("p", 0.5)  # filtered out: not queued either
    started = await ctx.emit_started()
    assert started.sequence == 3 and ctx.sync_emit("kept", {"v": 1})
    assert ctx.has_queued_events() and ctx.queue_size() == 4
    drained = ctx.drain_queued_events()
    assert [(e.type, e.sequence) for e in drained] == [
        ("token", 1),
        ("token", 2),
        ("started", 3),
        ("kept", 4),
    ]
    assert ctx.drain_queued_events() == [] and not ctx.has_queued_events()


def test_queue_mode_from_threads_loses_nothing_and_never_repeats_a_sequence() -> None:
    ctx = StreamContext("r", queue_mode=True)

    def worker(tag: str) -> None:
        for i in range(500):
            ctx.sync_emit_token(f"{tag}{i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in "abcd"]
    for t in threads:
        t.start()
    drained = []
    while any(t.is_alive() for t in threads):
        drained += ctx.drain_queued_events()
    for t in threads:
        t.join()
    drained += ctx.drain_queued_events()
    assert sorted(e.sequence for e in drained) == list(range(1, 2001))
    for tag in "abcd":
        mine = [e.content for e in drained if e.content.startswith(tag)]  # type: ignore[attr-defined]
        assert mine == [f"{tag}{i}" for i in range(500)]


class Declining:
    """A streaming backend that takes every other event and fails on one."""

    name = "declining"

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.calls = 0

    def is_available(self) -> bool:
        return True

    def emit(self, event: object) -> bool:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("writer broke")
        if self.calls % 2:
            self.taken.append(event.content)  # type: ignore[attr-defined]
            return True
        return False


def test_events_a_streaming_backend_declines_or_fails_on_are_queued() -> None:
    from dockrion_nb import QueueBackend, StreamingBackend

    backend = Declining()
    ctx = StreamContext("r", queue_mode=True, streaming_backend=backend)
    assert ctx.streaming_backend is backend
    for word in "abcde":
        ctx.sync_emit_token(word)
    assert backend.taken == ["a", "e"]
    assert [e.content for e in ctx.drain_queued_events()] == ["b", "c", "d"]  # type: ignore[attr-defined]
    queue = QueueBackend()
    assert isinstance(queue, StreamingBackend) and queue.name == "queue"
    kept = StreamContext("r", queue_mode=True, streaming_backend=queue)
    kept.sync_emit_token("x")
    assert len(queue) == 1 and kept.queue_size() == 0
    assert [e.sequence for e in queue.drain()] == [1] and len(queue) == 0


async def test_set_current_context_and_context_scope() -> None:
    from dockrion_nb import context_scope, get_current_context, set_current_context

    a = StreamContext("a", queue_mode=True)
    b = StreamContext("b", queue_mode=True)
    set_current_context(a)
    try:
        assert get_current_context() is a
        with context_scope(b) as inner:
            assert inner is b and get_current_context() is b
        assert get_current_context() is a
    finally:
        set_current_context(None)
    assert get_current_context() is None


def test_our_current_context_falls_back_to_the_one_dockrion_set() -> None:
    """Node code switched to ``dockrion_nb`` finds the context Dockrion's adapter set."""
    import dockrion_events

    from dockrion_nb import get_current_context, set_current_context

    ours = StreamContext("r", queue_mode=True)
    dockrion_events.set_current_context(ours)  # type: ignore[arg-type]
    try:
        assert get_current_context() is ours
        mine = StreamContext("m", queue_mode=True)
        set_current_context(mine)
        assert get_current_context() is mine  # ours wins when both are set
        set_current_context(None)
    finally:
        dockrion_events.set_current_context(None)
    assert get_current_context() is None
