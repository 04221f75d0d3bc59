"""Faults on private servers only: restarts, SIGKILL, killed Pub/Sub connections, slow
followers. A follower must come out of each with every event exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from servers import PrivateServer

from dockrion_nb import EventBus
from dockrion_nb.backends.base import BackendConnectionError
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.backends.redis import pubsub as redis_pubsub
from dockrion_nb.events import TokenEvent


def tokens(run_id: str, n: int, start: int = 0) -> list[TokenEvent]:
    return [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(start, start + n)]


@pytest.fixture
def persistent_server() -> Iterator[PrivateServer]:
    server = PrivateServer(persist=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


class Follower:
    """Follows a run in a task; records sequences and the contents, in arrival order."""

    def __init__(self, bus: EventBus, run_id: str, until: int, from_sequence: int = 1) -> None:
        self.sequences: list[int] = []
        self.types: list[str] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(bus, run_id, from_sequence, until))

    async def _run(self, bus: EventBus, run_id: str, from_sequence: int, until: int) -> None:
        async for event in bus.subscribe(run_id, from_sequence):
            self.sequences.append(event.sequence)
            self.types.append(event.type)
            self.changed.set()
            if event.sequence >= until:
                return

    async def wait_for(self, count: int, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.sequences) < count:
            if self.task.done():
                self.task.result()
                raise AssertionError(f"follower ended after {self.sequences[-5:]}")
            left = deadline - time.monotonic()
            assert left > 0, f"follower stuck at {len(self.sequences)} of {count}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


async def wait_state(states: list[str], wanted: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while wanted not in states:
        assert time.monotonic() < deadline, f"state {wanted!r} never reached: {states}"
        await asyncio.sleep(0.02)


async def subscribed(admin: redis.Redis, run_id: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while admin.execute_command("PUBSUB", "NUMSUB", f"events:run:{run_id}")[1] != 1:
        assert time.monotonic() < deadline, "the follower did not subscribe again"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_follower_resumes_after_a_server_restart_with_nothing_lost_or_repeated(
    persistent_server: PrivateServer, run_id: str, how: str
) -> None:
    follower_backend = RedisBackend(persistent_server.url, max_events_per_run=10_000)
    publisher = EventBus(RedisBackend(persistent_server.url, max_events_per_run=10_000))
    states: list[str] = []
    follower_backend.add_state_listener(states.append)
    follower = Follower(EventBus(follower_backend), run_id, until=120)
    for start in range(0, 40, 8):
        await publisher.publish_many(run_id, tokens(run_id, 8, start))
    await follower.wait_for(40)
    assert follower_backend.state == "live"

    persistent_server.kill() if how == "kill" else persistent_server.stop()
    await wait_state(states, "reconnecting")
    with pytest.raises(BackendConnectionError) as info:  # never silently dropped
        await publisher.publish(run_id, tokens(run_id, 1)[0])
    assert "cannot reach Redis" in str(info.value)

    persistent_server.start()
    # Published right after the restart, most likely before the follower has reconnected:
    # these come back through the stream, the rest through Pub/Sub.
    for start in range(40, 120, 10):
        await publisher.publish_many(run_id, tokens(run_id, 10, start))
    await follower.wait_for(120)
    await follower.task
    assert follower.sequences == list(range(1, 121))
    assert "gap" not in follower.types
    assert states.index("reconnecting") < len(states) - 1 - states[::-1].index("live")
    assert follower_backend.pubsub_connects >= 2
    await publisher.close()
    await follower_backend.close()


async def test_a_server_that_restarts_empty_does_not_renumber_the_run_under_its_follower(
    private_redis: PrivateServer, run_id: str
) -> None:
    # No persistence: the restart loses the run and its counter. The publisher numbers on
    # from what it wrote, so the follower (which has seen 1-20) goes on receiving.
    follower_backend = RedisBackend(private_redis.url)
    publisher_backend = RedisBackend(private_redis.url)
    publisher = EventBus(publisher_backend)
    follower = Follower(EventBus(follower_backend), run_id, until=30)
    await publisher.publish_many(run_id, tokens(run_id, 20))
    await follower.wait_for(20)

    private_redis.stop()
    private_redis.start()
    admin = redis.Redis.from_url(private_redis.url)
    try:
        assert admin.exists(f"stream:run:{run_id}") == 0  # the server kept nothing
        await subscribed(admin, run_id)
    finally:
        admin.close()
    await publisher.publish_many(run_id, tokens(run_id, 10, 20))
    await follower.wait_for(30)
    await follower.task
    assert follower.sequences == list(range(1, 31)) and "gap" not in follower.types
    assert [e.sequence for e in await publisher.get_events(run_id)] == list(range(21, 31))

    await publisher_backend.clear_run(run_id)  # cleared on purpose: numbering starts again
    assert (await publisher.publish(run_id, tokens(run_id, 1)[0])).sequence == 1
    await publisher.close()
    await follower_backend.close()


async def test_a_follower_says_when_a_new_writer_numbers_a_lost_run_anew(
    private_redis: PrivateServer, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server restarts empty and a writer that never wrote to the run numbers it from 1:
    # those events are repeats by number for a follower that has seen 1-20. It cannot pass
    # them on as new, but it must not go quiet without a word.
    follower_backend = RedisBackend(private_redis.url)
    follower = Follower(EventBus(follower_backend), run_id, until=100)
    first = EventBus(RedisBackend(private_redis.url))
    await first.publish_many(run_id, tokens(run_id, 20))
    await follower.wait_for(20)
    await first.close()
    assert "was reset" not in caplog.text  # replay/live overlap repeats are not resets

    private_redis.stop()
    private_redis.start()
    admin = redis.Redis.from_url(private_redis.url)
    try:
        await subscribed(admin, run_id)
    finally:
        admin.close()
    fresh = EventBus(RedisBackend(private_redis.url))
    with caplog.at_level("WARNING", logger="dockrion_nb.redis"):
        for i in range(5):
            await fresh.publish(run_id, tokens(run_id, 1, 100 + i)[0])
        deadline = time.monotonic() + 10
        while "was reset" not in caplog.text:
            assert time.monotonic() < deadline, "the follower never said the run was reset"
            await asyncio.sleep(0.02)
    text = caplog.text
    assert "delivered sequences up to 20" in text and "numbered from 1 again" in text
    assert text.count("was reset") == 1  # said once, not per event
    assert follower.sequences == list(range(1, 21))
    follower.task.cancel()
    await fresh.close()
    await follower_backend.close()


async def test_killing_the_pubsub_connection_loses_and_repeats_nothing(
    private_redis: PrivateServer, run_id: str
) -> None:
    backend = RedisBackend(private_redis.url, max_events_per_run=10_000)
    bus = EventBus(backend)
    publisher = EventBus(RedisBackend(private_redis.url, max_events_per_run=10_000))
    follower = Follower(bus, run_id, until=600)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        published = 0
        for round_ in range(3):
            for _ in range(15):  # 150 a round: 150 more after the last kill
                await publisher.publish_many(run_id, tokens(run_id, 10, published))
                published += 10
                await asyncio.sleep(0)
            await follower.wait_for(published // 2)
            await subscribed(admin, run_id)  # reconnected after the previous kill
            assert admin.client_kill_filter(_type="pubsub") == 1, f"round {round_}"
        await publisher.publish_many(run_id, tokens(run_id, 600 - published, published))
        await follower.wait_for(600)
        await follower.task
        assert follower.sequences == list(range(1, 601))
        # Kills 1 and 2 were each followed by a reconnect (``subscribed`` above); after the
        # last one the follower may finish from the stream before the hub is back.
        assert backend.pubsub_connects >= 3
    finally:
        admin.close()
        await publisher.close()
        await bus.close()


async def test_a_follower_that_falls_behind_catches_up_from_the_stream(
    private_redis: PrivateServer, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pubsub, "QUEUE_LIMIT", 20)
    backend = RedisBackend(private_redis.url, max_events_per_run=10_000)
    bus = EventBus(backend)
    await bus.publish(run_id, tokens(run_id, 1)[0])
    resume = asyncio.Event()
    seen: list[int] = []
    started = asyncio.Event()

    async def slow() -> None:
        async for event in bus.subscribe(run_id, 1):
            seen.append(event.sequence)
            started.set()
            if event.sequence == 1:
                await resume.wait()  # stalls while 300 events arrive
            if event.sequence == 301:
                return

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 10)
    for start in range(1, 301, 25):
        await bus.publish_many(run_id, tokens(run_id, 25, start))
    await asyncio.sleep(0.2)  # let the live messages pile up past the queue limit
    resume.set()
    await asyncio.wait_for(task, 10)
    assert seen == list(range(1, 302))
    await bus.close()


async def test_a_follower_behind_trimmed_events_is_told_with_a_gap(
    private_redis: PrivateServer, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pubsub, "QUEUE_LIMIT", 20)
    bus = EventBus(RedisBackend(private_redis.url, max_events_per_run=50))
    await bus.publish(run_id, tokens(run_id, 1)[0])
    resume = asyncio.Event()
    seen: list[tuple[str, int, int | None]] = []
    started = asyncio.Event()

    async def slow() -> None:
        async for event in bus.subscribe(run_id, 1):
            seen.append((event.type, event.sequence, getattr(event, "to_sequence", None)))
            started.set()
            if event.sequence == 1:
                await resume.wait()
            if event.sequence == 301:
                return

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 10)
    for start in range(1, 301, 25):
        await bus.publish_many(run_id, tokens(run_id, 25, start))
    await asyncio.sleep(0.2)
    resume.set()
    await asyncio.wait_for(task, 10)
    sequences = [s for kind, s, _ in seen if kind != "gap"]
    gaps = [(s, to) for kind, s, to in seen if kind == "gap"]
    assert gaps, "the follower lost events without being told"
    assert sequences == sorted(set(sequences)) and sequences[-50:] == list(range(252, 302))
    await bus.close()


async def test_a_frozen_server_is_detected_by_ping_and_the_follower_resumes(
    private_redis: PrivateServer, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pubsub, "HEALTH_INTERVAL", 0.2)
    backend = RedisBackend(private_redis.url, command_timeout=2.0)
    states: list[str] = []
    backend.add_state_listener(states.append)
    bus = EventBus(backend)
    follower = Follower(bus, run_id, until=20)
    await bus.publish_many(run_id, tokens(run_id, 10))
    await follower.wait_for(10)
    await asyncio.sleep(0.6)  # idle: PINGs are answered, the connection stays
    assert backend.pubsub_connects == 1 and states[-1] == "live"

    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)  # alive but silent
    try:
        await wait_state(states, "reconnecting")
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    await bus.publish_many(run_id, tokens(run_id, 10, 10))
    await follower.wait_for(20, limit=20)
    await follower.task
    assert follower.sequences == list(range(1, 21))
    assert backend.pubsub_connects >= 2
    await bus.close()
