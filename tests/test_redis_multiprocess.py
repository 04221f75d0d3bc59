"""Several OS processes on one run: sequences stay unique, a follower sees everything once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from conftest import redis_cleanup

from dockrion_nb import EventBus
from dockrion_nb.backends.redis import RedisBackend

PUBLISHER = """
import asyncio, sys
from dockrion_nb import EventBus
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.events import TokenEvent

async def main(url, run_id, count, batch, tag):
    bus = EventBus(RedisBackend(url, stream_ttl_seconds=600, max_events_per_run=20000))
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        events = [TokenEvent(run_id=run_id, content=f"{tag}{sent + i}") for i in range(n)]
        if n == 1:
            await bus.publish(run_id, events[0])
        else:
            await bus.publish_many(run_id, events)
        sent += n
    await bus.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
"""


@pytest.fixture(params=["redis", "valkey"])
def url(request: pytest.FixtureRequest, run_id: str) -> Iterator[str]:
    value = str(request.getfixturevalue("redis_url" if request.param == "redis" else "valkey_url"))
    yield value
    redis_cleanup(value, run_id)


def start_publisher(
    url: str, run_id: str, count: int, batch: int, tag: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, url, run_id, str(count), str(batch), tag],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    try:
        _, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


async def test_two_publisher_processes_never_share_a_sequence(url: str, run_id: str) -> None:
    procs = [
        start_publisher(url, run_id, 400, 1, "a"),
        start_publisher(url, run_id, 400, 7, "b"),
    ]
    for proc in procs:
        await asyncio.to_thread(finish, proc)
    backend = RedisBackend(url, max_events_per_run=20_000)
    events = await backend.get_events(run_id, 1)
    await backend.close()
    assert [e["sequence"] for e in events] == list(range(1, 801))
    for tag in ("a", "b"):  # each writer's events keep its own order
        contents = [e["content"] for e in events if e["content"].startswith(tag)]
        assert contents == [f"{tag}{i}" for i in range(400)]


async def test_a_follower_sees_ten_thousand_events_from_another_process_once_in_order(
    url: str, run_id: str
) -> None:
    backend = RedisBackend(url, max_events_per_run=20_000)
    bus = EventBus(backend)
    proc = start_publisher(url, run_id, 10_000, 1, "t")
    try:
        # Join once the publisher is under way: replay and live meet while it writes.
        raw = aioredis.from_url(url)
        for _ in range(3000):
            if await raw.xlen(f"stream:run:{run_id}") >= 500 or proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
        await raw.aclose()
        sequences: list[int] = []
        contents: list[str] = []

        async def follow() -> None:
            async for event in bus.subscribe(run_id, 1):
                assert event.type == "token", event
                sequences.append(event.sequence)
                contents.append(event.content)  # type: ignore[attr-defined]
                if event.sequence == 10_000:
                    return

        await asyncio.wait_for(follow(), 120)
    finally:
        await asyncio.to_thread(finish, proc)
        await bus.close()
    assert sequences == list(range(1, 10_001))
    assert contents == [f"t{i}" for i in range(10_000)]
