"""The in-memory backend: the seed's shape, without the reference's silent losses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dockrion_nb import EventBus, InMemoryBackend, build_backend
from dockrion_nb.backends.base import BackendClosedError, EventBackend, RunLogBackend
from dockrion_nb.events import CompleteEvent, TokenEvent


def tokens(run_id: str, n: int) -> list[TokenEvent]:
    return [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(n)]


def test_satisfies_dockrions_protocol_and_ours() -> None:
    from dockrion_events.backends.base import EventBackend as TheirProtocol

    backend = InMemoryBackend()
    assert isinstance(backend, TheirProtocol)
    assert isinstance(backend, EventBackend)
    assert isinstance(backend, RunLogBackend)


async def test_events_live_in_a_dict_keyed_by_run_id_and_are_trimmed() -> None:
    backend = InMemoryBackend(max_events_per_run=10)
    bus = EventBus(backend)
    await bus.publish_many("a", tokens("a", 25))
    await bus.publish_many("b", tokens("b", 3))
    assert set(backend._events) == {"a", "b"}
    assert len(backend._events["a"]) == 10
    assert [e["sequence"] for e in await backend.get_events("a")] == list(range(16, 26))


async def test_each_subscriber_has_its_own_queue() -> None:
    backend = InMemoryBackend()
    subs = [backend.subscribe("run:r") for _ in range(3)]
    assert backend.subscriber_count("r") == 3
    queues = {id(ref().items) for ref in backend._subscribers["r"]}
    assert len(queues) == 3
    for s in subs:
        await s.aclose()  # type: ignore[attr-defined]
    assert backend.subscriber_count("r") == 0


async def test_overflowing_subscriber_catches_up_from_the_store() -> None:
    backend = InMemoryBackend(max_events_per_run=10_000, queue_size=8)
    bus = EventBus(backend)
    seen: list[int] = []
    started = asyncio.Event()

    async def slow() -> None:
        async for e in bus.subscribe("r", 1):
            started.set()
            seen.append(e.sequence)
            await asyncio.sleep(0.002)
            if e.sequence >= 500:
                return

    task = asyncio.create_task(slow())
    await bus.publish("r", TokenEvent(run_id="r", content="first"))
    await started.wait()
    await bus.publish_many("r", tokens("r", 499))  # far more than the queue holds
    await asyncio.wait_for(task, 20)
    assert seen == list(range(1, 501))


async def test_subscriber_behind_a_trimmed_store_sees_an_explicit_gap() -> None:
    backend = InMemoryBackend(max_events_per_run=20, queue_size=4)
    bus = EventBus(backend)
    seen: list[tuple[str, int, int | None]] = []
    first = asyncio.Event()

    async def slow() -> None:
        async for e in bus.subscribe("r", 1):
            if e.type == "gap":
                seen.append(("gap", e.from_sequence, e.to_sequence))  # type: ignore[attr-defined]
            else:
                seen.append(("event", e.sequence, None))
            first.set()
            await asyncio.sleep(0.01)
            if e.sequence >= 200:
                return

    task = asyncio.create_task(slow())
    await bus.publish("r", TokenEvent(run_id="r", content="x"))
    await first.wait()
    for _ in range(4):  # bursts without yielding in between overflow the queue
        await backend.append(
            "r", [TokenEvent(run_id="r", content="y").to_dict() for _ in range(50)]
        )
    await bus.publish_many("r", tokens("r", 1))
    await asyncio.wait_for(task, 20)
    gaps = [s for s in seen if s[0] == "gap"]
    assert gaps, "a subscriber that fell behind a trimmed store must be told"
    numbers = [s[1] for s in seen if s[0] == "event"]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    # every missing sequence is covered by a gap event: nothing vanished silently
    covered = set(numbers)
    for _, lo, hi in gaps:
        assert hi is not None
        covered.update(range(lo, hi + 1))
    assert covered >= set(range(1, 201))


async def test_close_wakes_blocked_subscribers_without_polling() -> None:
    backend = InMemoryBackend()
    it = backend.subscribe("run:r")
    task = asyncio.create_task(anext(it))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not task.done()
    await backend.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, 0.5)
    with pytest.raises(BackendClosedError, match="closed"):
        await backend.publish("run:r", {"type": "heartbeat"})


async def test_dockrions_bus_drives_our_memory_backend() -> None:
    from dockrion_events import EventBus as TheirBus
    from dockrion_events import StreamContext as TheirContext

    backend = InMemoryBackend()
    their_bus = TheirBus(backend)
    received = []

    async def listen() -> None:
        async for e in their_bus.subscribe("r"):
            received.append(e.sequence)
            if e.type == "complete":
                return

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.01)
    ctx = TheirContext(run_id="r", bus=their_bus)
    await ctx.emit_started()
    await ctx.emit_token("a")
    await ctx.emit_complete({"ok": True})
    await asyncio.wait_for(task, 5)
    assert received == [1, 2, 3]
    ours = EventBus(backend)
    assert [e.type for e in await ours.get_events("r")] == ["started", "token", "complete"]
    replayed = [e.sequence async for e in ours.subscribe("r", 2, live=False)]
    assert replayed == [2, 3]


async def test_our_bus_drives_dockrions_memory_backend() -> None:
    from dockrion_events.backends.memory import InMemoryBackend as TheirBackend

    bus = EventBus(TheirBackend())
    await bus.publish_many("r", tokens("r", 3))
    seen: list[int] = []

    async def follow() -> None:
        async for e in bus.subscribe("r", 2):
            seen.append(e.sequence)
            if e.sequence == 6:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await bus.publish_many("r", tokens("r", 3))
    await asyncio.wait_for(task, 5)
    assert seen == [2, 3, 4, 5, 6]
    await bus.close()


def test_build_backend_memory_by_default() -> None:
    backend = build_backend(None)
    assert isinstance(backend, InMemoryBackend)
    assert backend.max_events_per_run == 1000
    assert backend.fallback_reason is None
    assert build_backend({"backend": "memory", "max_events_per_run": 50}).describe() == {
        "backend": "memory",
        "max_events_per_run": 50,
    }


async def test_subscriptions_dropped_unread_are_released_when_collected() -> None:
    backend = InMemoryBackend()
    bus = EventBus(backend)
    await bus.publish("r", TokenEvent(run_id="r", content="x"))
    for _ in range(1000):
        bus.subscribe("r")  # never read, never closed
        backend.subscribe("run:r")  # Dockrion's protocol, the same
    gc.collect()
    assert backend.subscriber_count("r") == 0
    assert backend._subscribers == {}
    kept = bus.subscribe("r")  # one still held is still attached and fed
    await bus.publish_many("r", tokens("r", 3))
    assert backend.subscriber_count("r") == 1
    assert [e.sequence async for e in _take(kept, 4)] == [1, 2, 3, 4]


async def _take(stream: Any, n: int) -> AsyncIterator[Any]:
    for _ in range(n):
        yield await anext(stream)


async def _list(stream: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in stream]


async def test_a_live_message_that_was_never_stored_cannot_silence_a_follower() -> None:
    """A stray Dockrion-protocol publish far ahead of the run (never stored) is not handed to
    followers, so they do not skip the stored events that follow it."""
    backend = InMemoryBackend()
    bus = EventBus(backend)
    await bus.publish("r", TokenEvent(run_id="r", content="first"))
    follower = bus.subscribe("r", 1)
    assert (await anext(follower)).sequence == 1
    stray = {"type": "token", "run_id": "r", "sequence": 500, "content": "stray"}
    await backend.publish("run:r", stray)
    await bus.publish_many("r", tokens("r", 4))
    await bus.publish("r", CompleteEvent(run_id="r"))
    got = await asyncio.wait_for(_list(_take(follower, 5)), 5)
    assert [(e.sequence, e.type) for e in got] == [
        (2, "token"),
        (3, "token"),
        (4, "token"),
        (5, "token"),
        (6, "complete"),
    ]
    await follower.aclose()


async def test_max_runs_evicts_the_run_written_least_recently_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(max_runs=2)
    bus = EventBus(backend)
    await bus.publish("a", TokenEvent(run_id="a", content="x"))
    await bus.publish("b", TokenEvent(run_id="b", content="x"))
    await bus.publish("a", TokenEvent(run_id="a", content="y"))  # a is now the most recent
    with caplog.at_level(logging.WARNING, logger="dockrion_nb.memory"):
        await bus.publish("c", TokenEvent(run_id="c", content="x"))
    assert sorted(s.run_id for s in await bus.list_runs()) == ["a", "c"]
    assert backend.evicted_runs == 1
    assert "evicted 'b', the least recently written" in caplog.text
    assert "max_runs" in caplog.text
    assert backend.describe()["max_runs"] == 2
    with pytest.raises(ValueError, match=r"max_runs must be >= 1 or None, not 0"):
        InMemoryBackend(max_runs=0)


def test_memory_backend_keeps_runs_without_bound_by_default() -> None:
    assert InMemoryBackend().max_runs is None


async def test_dockrions_counters_take_its_channel_and_run_forms() -> None:
    backend = InMemoryBackend(max_events_per_run=10)
    bus = EventBus(backend)
    await bus.publish_many("a", tokens("a", 25))
    assert backend.get_event_count("a") == 10 and backend.get_event_count("none") == 0
    assert backend.get_subscriber_count("run:a") == 0
    subs = [backend.subscribe("run:a"), bus.subscribe("a", include_stored=False)]
    nxt = asyncio.ensure_future(subs[1].__anext__())
    await asyncio.sleep(0)
    assert backend.get_subscriber_count("run:a") == 2 and backend.subscriber_count("a") == 2
    assert backend.get_subscriber_count("run:b") == 0
    nxt.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await nxt
    for sub in subs:
        await sub.aclose()  # type: ignore[attr-defined]
    assert backend.get_subscriber_count("run:a") == 0


def stored_forms(event: Any) -> tuple[Any, ...]:
    """Everything a reader can see of an event but its fields set."""
    return (
        type(event),
        list(event.__dict__.items()),
        event.__pydantic_extra__,
        event.__pydantic_private__,
        event.to_dict(),
        event.to_json(),
        repr(event),
    )


async def test_the_store_keeps_a_record_not_the_published_model() -> None:
    # A stored model cost about 800 bytes (the instance, its __dict__, a fields-set set, an
    # extras dict): the backend keeps a compact record and builds the model when it is read.
    import weakref

    bus = EventBus(InMemoryBackend())
    published = await bus.publish("r", TokenEvent(run_id="r", content="hi"))
    held = weakref.ref(published)
    del published
    gc.collect()
    assert held() is None
    [read] = await bus.get_events("r")
    assert read.content == "hi" and read.sequence == 1


async def test_an_event_no_caller_holds_is_numbered_in_place_a_held_one_never() -> None:
    """Publishing numbers an event: in a copy when the caller keeps the event (it must not see
    it change), in place when nothing else refers to it (a temporary), which saves the copy."""
    bus = EventBus(InMemoryBackend())
    made: list[int] = []

    def temporary(content: str) -> TokenEvent:
        event = TokenEvent(run_id="r", content=content)
        made.append(id(event))
        return event

    kept = TokenEvent(run_id="r", content="kept")
    stored = await bus.publish("r", kept)
    assert stored is not kept and not kept.sequence and stored.sequence == 1
    assert kept.model_dump()["sequence"] == 0 and stored.content == "kept"

    in_place = await bus.publish("r", temporary("tmp"))
    assert id(in_place) == made[-1] and in_place.sequence == 2  # no copy was made
    held_in_a_list = [TokenEvent(run_id="r", content="listed")]
    stored = await bus.publish("r", held_in_a_list[0])
    assert held_in_a_list[0].sequence == 0 and stored.sequence == 3
    assert [e.sequence for e in await bus.get_events("r")] == [1, 2, 3]


async def test_every_kind_of_event_reads_back_as_it_was_published() -> None:
    from dockrion_nb.events import (
        CheckpointEvent,
        CustomEvent,
        ErrorEvent,
        ProgressEvent,
        StepEvent,
        make_event,
    )

    bus = EventBus(InMemoryBackend())
    events = [
        TokenEvent(run_id="r", content="plain"),
        TokenEvent(run_id="r", content="é\u2028", finish_reason="stop"),
        TokenEvent(run_id="r", content="with extra", note={"k": [1, 2]}),
        ProgressEvent(run_id="r", step="s", progress=2.0, message=None),
        CheckpointEvent(run_id="r", name="c", data={"a": {"b": [1, None, True]}}),
        StepEvent(run_id="r", node_name="n", duration_ms=3, input_keys=["x"]),
        ErrorEvent(run_id="r", error="boom", details={"why": "x"}),
        CustomEvent(run_id="r", type="custom:fraud", score=0.5),
        make_event("fraud_check", "r", score=1),
        CompleteEvent(run_id="r", output={"o": 1}, sequence=40),
    ]
    published = [await bus.publish("r", e) for e in events]
    read = await bus.get_events("r")
    assert [stored_forms(e) for e in read] == [stored_forms(e) for e in published]
    assert read == published
    # Dockrion's protocol reads the same wire dicts; a later read builds equal models again
    assert [dict(d) for d in await bus.get_events_raw("r")] == [e.to_dict() for e in published]
    assert [stored_forms(e) for e in await bus.get_events("r")] == [
        stored_forms(e) for e in published
    ]
    # a read model is as if parsed from the wire: every field counts as set
    for e in read:
        assert e.model_fields_set >= set(type(e).model_fields)


async def test_a_model_with_another_run_id_is_stored_as_it_is() -> None:
    backend = InMemoryBackend()
    [stored] = await backend.append("r", [TokenEvent(run_id="other", content="x")])
    [read] = await backend.read("r")
    assert read.run_id == "other" and stored_forms(read) == stored_forms(stored)


async def test_a_replay_is_the_store_as_it_was_when_the_follower_attached() -> None:
    # The replay's models are built as they are read, from the records taken at attach time:
    # what is published and trimmed meanwhile changes nothing in it, and nothing is repeated.
    bus = EventBus(InMemoryBackend(max_events_per_run=10))
    await bus.publish_many("r", tokens("r", 10))
    follower = bus.subscribe("r", 1)
    await bus.publish_many("r", tokens("r", 20))  # trims all ten the replay is made of
    got = []
    async with contextlib.aclosing(follower) as events:  # type: ignore[type-var]
        async for event in events:
            got.append((event.sequence, event.content))
            if len(got) == 30:
                break
    assert [seq for seq, _ in got] == list(range(1, 31))
    assert [content for _, content in got[:10]] == [f"t{i}" for i in range(10)]
