"""Interop with the real ``dockrion`` package (0.0.3) on a real server, both ways.

A notebook must watch and replay runs that a deployed Dockrion agent writes, and Dockrion must
read what we write; either side's EventBus must drive either side's backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import redis_cleanup

from dockrion_nb import EventBus
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.events import CompleteEvent, ProgressEvent, StartedEvent, TokenEvent

pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning"  # inside dockrion_events 0.0.3
)
dockrion_events = pytest.importorskip("dockrion_events")
from dockrion_events import EventBus as DockrionBus  # noqa: E402
from dockrion_events import StreamContext as DockrionContext  # noqa: E402
from dockrion_events.backends.redis import (  # noqa: E402
    RedisBackend as DockrionRedisBackend,
)


@pytest.fixture(params=["redis", "valkey"])
def url(request: pytest.FixtureRequest, run_id: str) -> Iterator[str]:
    value = str(request.getfixturevalue("redis_url" if request.param == "redis" else "valkey_url"))
    yield value
    redis_cleanup(value, run_id)


@pytest.fixture
async def ours(url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(url, stream_ttl_seconds=600, max_events_per_run=1000)
    yield backend
    await backend.close()


@pytest.fixture
async def theirs(url: str) -> AsyncIterator[Any]:
    backend = DockrionRedisBackend(url=url, stream_ttl_seconds=600, max_events_per_run=1000)
    yield backend
    await backend.close()


async def agent_run(ctx: Any) -> None:
    """What a Dockrion agent emits during a run."""
    await ctx.emit_started()
    await ctx.emit_progress("parse", 0.25, "parsing")
    for word in ("Hello", " world", "!"):
        await ctx.emit_token(word)
    await ctx.emit_step("llm", duration_ms=12, input_keys=["q"], output_keys=["a"])
    await ctx.checkpoint("state", {"n": 1, "nested": {"ok": True}})
    await ctx.emit_complete({"answer": "Hello world!"}, latency_seconds=0.5)


EXPECTED_TYPES = [
    "started",
    "progress",
    "token",
    "token",
    "token",
    "step",
    "checkpoint",
    "complete",
]


async def follow_until_complete(bus: EventBus, run_id: str) -> list[dict[str, Any]]:
    out = []
    async for event in bus.subscribe(run_id, 1):
        out.append(event.to_dict())
        if event.is_terminal:
            return out
    return out


async def until(check: Callable[[], Awaitable[bool]], limit: float = 10.0) -> None:
    for _ in range(int(limit / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def local_followers(
    backend: RedisBackend, run_id: str, count: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return backend.subscriber_count(run_id) >= count

    return check


def server_subscribers(url: str, run_id: str) -> Callable[[], Awaitable[bool]]:
    """Some connection (e.g. Dockrion's) is subscribed to the run's channel."""

    async def check() -> bool:
        client = aioredis.from_url(url)
        try:
            reply = await client.execute_command("PUBSUB", "NUMSUB", f"events:run:{run_id}")
        finally:
            await client.aclose()
        return int(reply[1]) >= 1

    return check


async def test_a_run_dockrion_publishes_is_followed_live_and_replayed_by_us(
    ours: RedisBackend, theirs: Any, run_id: str
) -> None:
    bus = EventBus(ours)
    follower = asyncio.create_task(follow_until_complete(bus, run_id))
    await until(local_followers(ours, run_id, 1))
    ctx = DockrionContext(run_id, bus=DockrionBus(theirs), agent_name="agent", framework="custom")
    await agent_run(ctx)
    live = await asyncio.wait_for(follower, 10)
    assert [e["type"] for e in live] == EXPECTED_TYPES
    assert [e["sequence"] for e in live] == list(range(1, 9))

    stored_by_dockrion = await theirs.get_events(run_id)
    assert await ours.get_events(run_id) == stored_by_dockrion  # same dicts, raw
    assert live == stored_by_dockrion  # and the parsed models round-trip them unchanged
    replayed = [e.to_dict() async for e in bus.subscribe(run_id, 1, live=False)]
    assert replayed == stored_by_dockrion
    tail = await bus.get_events(run_id, 6)
    assert [e.type for e in tail] == ["step", "checkpoint", "complete"]
    # our next event continues Dockrion's numbering
    more = await bus.publish(run_id, TokenEvent(run_id=run_id, content="late"))
    assert more.sequence == 9


async def test_a_run_we_publish_is_read_by_dockrion(
    ours: RedisBackend, theirs: Any, run_id: str, url: str
) -> None:
    dockrion_bus = DockrionBus(theirs)
    live: list[dict[str, Any]] = []

    async def dockrion_listener() -> None:
        async for event in dockrion_bus.subscribe(run_id):  # Dockrion: live only
            live.append(event.to_dict())
            if event.type == "complete":
                return

    listener = asyncio.create_task(dockrion_listener())
    await until(server_subscribers(url, run_id))
    bus = EventBus(ours)
    published = await bus.publish_many(
        run_id,
        [
            StartedEvent(run_id=run_id, agent_name="nb"),
            ProgressEvent(run_id=run_id, step="s", progress=0.5, message="half"),
            *[TokenEvent(run_id=run_id, content=w) for w in ("a", "b")],
        ],
    )
    published.append(await bus.publish(run_id, CompleteEvent(run_id=run_id, output={"x": 1})))
    ours_as_dicts = [e.to_dict() for e in published]

    assert await theirs.get_events(run_id) == ours_as_dicts
    assert [e.to_dict() for e in await dockrion_bus.get_events(run_id, 3)] == ours_as_dicts[2:]
    await asyncio.wait_for(listener, 10)
    assert live == ours_as_dicts


async def test_dockrions_event_bus_drives_our_backend(
    ours: RedisBackend, theirs: Any, run_id: str
) -> None:
    dockrion_bus = DockrionBus(ours)  # their bus, our backend
    follower = asyncio.create_task(follow_until_complete(EventBus(ours), run_id))
    live_via_their_bus: list[str] = []

    async def their_listener() -> None:
        async for event in dockrion_bus.subscribe(run_id):
            live_via_their_bus.append(event.type)
            if event.type == "complete":
                return

    listener = asyncio.create_task(their_listener())
    await until(local_followers(ours, run_id, 2))
    await agent_run(DockrionContext(run_id, bus=dockrion_bus, agent_name="agent"))
    ours_live = await asyncio.wait_for(follower, 10)
    await asyncio.wait_for(listener, 10)
    assert [e["type"] for e in ours_live] == EXPECTED_TYPES
    assert live_via_their_bus == EXPECTED_TYPES
    stored = await ours.get_events(run_id)
    assert stored == await theirs.get_events(run_id) == ours_live
    assert [e.sequence for e in await dockrion_bus.get_events(run_id, 7)] == [7, 8]


async def test_our_event_bus_drives_dockrions_backend(
    ours: RedisBackend, theirs: Any, run_id: str, url: str
) -> None:
    bus = EventBus(theirs)  # our bus, their backend: the bus numbers and joins itself
    await bus.publish_many(run_id, [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(3)])
    seen: list[int] = []

    async def follow() -> None:
        async for event in bus.subscribe(run_id, 2):
            seen.append(event.sequence)
            if event.sequence == 6:
                return

    task = asyncio.create_task(follow())
    await until(server_subscribers(url, run_id))
    for i in range(3, 6):
        await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"t{i}"))
    await asyncio.wait_for(task, 10)
    assert seen == [2, 3, 4, 5, 6]
    via_ours = await ours.get_events(run_id)
    assert [e["sequence"] for e in via_ours] == [1, 2, 3, 4, 5, 6]
    assert via_ours == await theirs.get_events(run_id)
    with contextlib.suppress(Exception):
        await bus.clear_run(run_id)
