"""The in-memory backend: the seed's shape, without the reference's silent losses."""

from __future__ import annotations

import asyncio

import pytest

from dockrion_nb import EventBus, InMemoryBackend, build_backend
from dockrion_nb.backends.base import BackendClosedError, EventBackend, RunLogBackend
from dockrion_nb.events import TokenEvent


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
    queues = {id(s.items) for s in backend._subscribers["r"]}
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
