"""The backend contract, written once and run against every backend.

Memory, the machine's Redis (``REDIS_URL`` in CI) and a private Valkey server all must give
every subscriber each event with ``sequence >= start`` exactly once, in order, while others
publish.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import Factory, new_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockrion_nb import EventBus
from dockrion_nb.events import BaseEvent, CompleteEvent, TokenEvent


def tokens(run_id: str, n: int, start: int = 0) -> list[BaseEvent]:
    return [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(start, start + n)]


async def collect(
    bus: EventBus,
    run_id: str,
    from_sequence: int,
    until: int,
    timeout: float = 20.0,  # noqa: ASYNC109
) -> list[int]:
    """Sequences a subscriber sees until it has seen ``until``."""
    seen: list[int] = []

    async def run() -> None:
        async for event in bus.subscribe(run_id, from_sequence):
            assert event.type != "gap", f"unexpected gap: {event}"
            seen.append(event.sequence)
            if event.sequence >= until:
                return

    await asyncio.wait_for(run(), timeout)
    return seen


async def test_publish_assigns_sequences_from_one(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        stored = [await bus.publish(run_id, e) for e in tokens(run_id, 5)]
        assert [e.sequence for e in stored] == [1, 2, 3, 4, 5]
        batch = await bus.publish_many(run_id, tokens(run_id, 3))
        assert [e.sequence for e in batch] == [6, 7, 8]
        got = await bus.get_events(run_id, 4)
        assert [e.sequence for e in got] == [4, 5, 6, 7, 8]
        assert [e.content for e in got] == ["t3", "t4", "t0", "t1", "t2"]  # type: ignore[attr-defined]


async def test_events_that_carry_a_sequence_keep_it(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        e = await bus.publish(run_id, TokenEvent(run_id=run_id, content="x", sequence=41))
        assert e.sequence == 41
        nxt = await bus.publish(run_id, TokenEvent(run_id=run_id, content="y"))
        assert nxt.sequence == 42


async def test_dict_events_are_validated_and_published(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        e = await bus.publish(run_id, {"type": "custom:score", "value": 3})
        assert e.type == "custom:score" and e.sequence == 1
        with pytest.raises(ValueError, match="content"):
            await bus.publish(run_id, {"type": "token"})


async def subscribed(bus: EventBus, run_id: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Until the backend counts a live subscriber of ``run_id`` (on Redis: confirmed)."""
    async with asyncio.timeout(timeout):
        while bus.backend.subscriber_count(run_id) == 0:  # type: ignore[attr-defined]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_include_stored_false_gets_only_what_is_published_afterwards(
    backend_factory: Factory,
) -> None:
    """Dockrion's ``include_stored=False``: no replay; then every new event once, in order."""
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        await bus.publish_many(run_id, tokens(run_id, 30))
        stream = bus.subscribe(run_id, 1, include_stored=False)
        first = asyncio.ensure_future(stream.__anext__())
        await subscribed(bus, run_id)
        await bus.publish_many(run_id, tokens(run_id, 20, 30))
        seen = [(await first).sequence]
        async for event in stream:
            seen.append(event.sequence)
            if event.sequence == 50:
                break
        assert seen == list(range(31, 51))
        nothing = [e async for e in bus.subscribe(run_id, include_stored=False, live=False)]
        assert nothing == []


async def test_dockrions_raw_forms_give_wire_dicts(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        stored = await bus.publish_raw(run_id, {"type": "progress", "step": "s", "progress": 2})
        assert stored.sequence == 1 and stored.progress == 1.0  # type: ignore[attr-defined]
        raw = await bus.get_events_raw(run_id)
        assert [(e["type"], e["sequence"], e["progress"]) for e in raw] == [("progress", 1, 1.0)]
        assert await bus.backend.last_sequence(run_id) == 1  # type: ignore[attr-defined]
        assert await bus.backend.last_sequence(new_run(backend_factory)) == 0  # type: ignore[attr-defined]
        live = bus.subscribe_raw(run_id)
        nxt = asyncio.ensure_future(live.__anext__())
        await subscribed(bus, run_id)
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="live"))
        got = await asyncio.wait_for(nxt, 10)
        assert isinstance(got, dict) and got["content"] == "live" and got["sequence"] == 2
        await live.aclose()  # type: ignore[attr-defined]


async def test_subscriber_joining_mid_stream_sees_no_gap(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        await bus.publish_many(run_id, tokens(run_id, 50))

        async def publisher() -> None:
            for i in range(150):
                await bus.publish(run_id, TokenEvent(run_id=run_id, content=str(i)))
                if i % 7 == 0:
                    await asyncio.sleep(0)

        readers = [asyncio.create_task(collect(bus, run_id, k, 200)) for k in (1, 25, 50, 51)]
        await asyncio.sleep(0)
        await publisher()
        for k, reader in zip((1, 25, 50, 51), readers, strict=True):
            assert await reader == list(range(k, 201))


async def test_replay_only_ends_after_stored_events(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        await bus.publish_many(run_id, tokens(run_id, 10))
        seen = [e.sequence async for e in bus.subscribe(run_id, 4, live=False)]
        assert seen == list(range(4, 11))


async def test_ten_subscriber_fan_out_of_ten_thousand_loses_nothing(
    backend_factory: Factory,
) -> None:
    run_id = new_run(backend_factory)
    n = 10_000
    async with EventBus(backend_factory()) as bus:
        readers = [asyncio.create_task(collect(bus, run_id, 1, n, timeout=60)) for _ in range(10)]
        await asyncio.sleep(0.2)
        batch = 100
        for start in range(0, n, batch):
            await bus.publish_many(run_id, tokens(run_id, batch, start))
        results = await asyncio.gather(*readers)
        for seen in results:
            assert seen == list(range(1, n + 1))


async def test_slow_subscriber_loses_nothing(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    n = 300
    async with EventBus(backend_factory()) as bus:
        seen: list[int] = []

        async def slow() -> None:
            async for event in bus.subscribe(run_id, 1):
                seen.append(event.sequence)
                await asyncio.sleep(0.001)
                if event.sequence >= n:
                    return

        reader = asyncio.create_task(slow())
        await asyncio.sleep(0.1)
        await bus.publish_many(run_id, tokens(run_id, n))
        await asyncio.wait_for(reader, 30)
        assert seen == list(range(1, n + 1))


async def test_close_ends_every_subscriber_promptly(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    bus = EventBus(backend_factory())
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="x"))
    ended = asyncio.Event()

    async def reader() -> None:
        async for _ in bus.subscribe(run_id, 1):
            pass
        ended.set()

    tasks = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.sleep(0.2)
    await bus.close()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert all(t.done() for t in tasks)


async def test_list_runs_and_clear_run(backend_factory: Factory) -> None:
    run_a, run_b = new_run(backend_factory), new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:
        await bus.publish_many(run_a, tokens(run_a, 3))
        await bus.publish(run_a, CompleteEvent(run_id=run_a))
        await bus.publish_many(run_b, tokens(run_b, 2))
        runs = {r.run_id: r for r in await bus.list_runs(run_a[:2] + "*")}
        assert runs[run_a].event_count == 4
        assert runs[run_a].last_sequence == 4
        assert runs[run_a].status == "complete"
        assert runs[run_b].status == "running"
        only_a = await bus.list_runs(run_a)
        assert [r.run_id for r in only_a] == [run_a]
        await bus.clear_run(run_a)
        assert await bus.get_events(run_a) == []
        assert run_a not in {r.run_id for r in await bus.list_runs()}


async def test_trimming_keeps_the_newest_events(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory(max_events=10)) as bus:
        await bus.publish_many(run_id, tokens(run_id, 25))
        kept = await bus.get_events(run_id)
        assert [e.sequence for e in kept] == list(range(16, 26))


async def test_replay_of_trimmed_events_shows_a_gap(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory(max_events=10)) as bus:
        await bus.publish_many(run_id, tokens(run_id, 25))
        seen = [e async for e in bus.subscribe(run_id, 1, live=False)]
        assert seen[0].type == "gap"
        assert seen[0].from_sequence == 1  # type: ignore[attr-defined]
        assert seen[0].to_sequence == 15  # type: ignore[attr-defined]
        assert [e.sequence for e in seen[1:]] == list(range(16, 26))


async def _interleaving(
    factory: Factory, plan: list[tuple[str, int]], batch_sizes: list[int]
) -> None:
    """Publishers and subscribers act in the order ``plan`` says; check exactly-once order."""
    run_id = new_run(factory)
    async with EventBus(factory()) as bus:
        total = sum(batch_sizes)
        readers: list[tuple[int, asyncio.Task[list[int]]]] = []
        published = 0
        batches = iter(batch_sizes)
        for action, value in plan:
            if action == "join":
                # up to one past what is stored: a subscriber may wait for the next event
                start = min(1 + (value % (published + 1)), total)
                readers.append((start, asyncio.create_task(collect(bus, run_id, start, total))))
            elif action == "publish":
                size = next(batches, 0)
                if size:
                    await bus.publish_many(run_id, tokens(run_id, size, published))
                    published += size
            for _ in range(value % 3):
                await asyncio.sleep(0)
        for size in batches:
            await bus.publish_many(run_id, tokens(run_id, size, published))
            published += size
        for start, task in readers:
            assert await task == list(range(start, total + 1))


PLANS = st.lists(
    st.tuples(st.sampled_from(["join", "publish", "yield"]), st.integers(0, 50)),
    min_size=1,
    max_size=12,
)
BATCHES = st.lists(st.integers(1, 20), min_size=1, max_size=8)


def test_random_interleavings_are_exactly_once_in_order(backend_factory: Factory) -> None:
    examples = 60 if backend_factory.kind == "memory" else 12  # type: ignore[attr-defined]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(plan=PLANS, batch_sizes=BATCHES)
    def check(plan: list[tuple[str, int]], batch_sizes: list[int]) -> None:
        asyncio.run(_interleaving(backend_factory, plan, batch_sizes))

    check()


async def test_concurrent_publishers_never_share_a_sequence(backend_factory: Factory) -> None:
    run_id = new_run(backend_factory)
    async with EventBus(backend_factory()) as bus:

        async def writer(tag: str) -> list[int]:
            out = []
            for i in range(100):
                e = await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"{tag}{i}"))
                out.append(e.sequence)
                if i % 5 == 0:
                    await asyncio.sleep(0)
            return out

        results = await asyncio.gather(*(writer(t) for t in "abcd"))
        every = sorted(s for r in results for s in r)
        assert every == list(range(1, 401))
