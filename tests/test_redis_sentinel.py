"""The Redis backend on a Sentinel-managed master: same config, another URL.

One master, one replica and three sentinels, private servers on loopback
(``servers.LocalSentinel``). The contract suite runs on a session deployment through
``backend_factory``; here each test kills or freezes the master of a deployment of its own
and checks that followers and publishers go on with the promoted replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require
from servers import LocalSentinel, server_binary, wait_until

from dockrion_nb import EventBus
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.backends.redis.sentinel import RedisSentinelBackend
from dockrion_nb.events import TokenEvent


@pytest.fixture
def deployment() -> Iterator[LocalSentinel]:
    require(server_binary() is not None, "no Redis-compatible server binary for Sentinel")
    sentinels = LocalSentinel()
    sentinels.start()
    try:
        yield sentinels
    finally:
        sentinels.close()


async def collect(bus: EventBus, run_id: str, until: int, seen: list[int]) -> None:
    async for event in bus.subscribe(run_id, 1):
        assert event.type != "gap", f"unexpected gap: {event}"
        seen.append(event.sequence)
        if event.sequence >= until:
            return


async def publish_through(
    bus: EventBus, run_id: str, n: int, fault: Any, *, at: int
) -> list[BaseException]:
    """Publish ``n`` events one by one, starting ``fault`` (blocking, in a thread) after
    ``at`` of them; a publish that still fails is sent again. Returns the failures."""
    failures: list[BaseException] = []
    task: asyncio.Future[Any] | None = None
    for i in range(n):
        if i == at:
            task = asyncio.ensure_future(asyncio.to_thread(fault))
        while True:
            try:
                await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"t{i}"))
                break
            except Exception as exc:
                failures.append(exc)
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.004)
    assert task is not None
    await task
    return failures


async def test_a_sentinel_url_builds_the_sentinel_backend_on_the_master(
    deployment: LocalSentinel,
) -> None:
    backend = RedisBackend(deployment.url, stream_ttl_seconds=900)
    try:
        assert isinstance(backend, RedisSentinelBackend)
        bus = EventBus(backend)
        run_id = f"s-{uuid.uuid4().hex[:12]}"
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="x"))
        shown = backend.describe()
        assert shown["topology"] == "sentinel, service 'dnbmaster'"
        assert shown["master"] == f"127.0.0.1:{deployment.master.port}"
        assert shown["stream_ttl_seconds"] == 900
    finally:
        await backend.close()


async def test_a_follower_resumes_on_the_promoted_replica_when_the_master_is_killed(
    deployment: LocalSentinel,
) -> None:
    """SIGKILL the master mid-run: the sentinels promote the replica; publishes that meet
    the switch are sent again by the backend, the follower reconnects to the new master and
    fills what it missed from the stream: every event once, in order."""
    run_id = f"s-{uuid.uuid4().hex[:12]}"
    n = 400
    backend = RedisBackend(deployment.url, command_timeout=20, max_events_per_run=10_000)
    old = deployment.master
    async with EventBus(backend) as bus:
        seen: list[int] = []
        follower = asyncio.create_task(collect(bus, run_id, n, seen))
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="t-first"))
        # the replica must hold what was written before the kill (replication is async)
        await asyncio.to_thread(deployment.wait_replicated)
        failures = await publish_through(bus, run_id, n - 1, deployment.kill_master, at=100)
        await asyncio.wait_for(follower, 30)
        assert seen == list(range(1, n + 1))
        assert failures == []
        assert deployment.master is not old
        assert backend.describe()["master"] == f"127.0.0.1:{deployment.master.port}"
        stored = [e.sequence for e in await bus.get_events(run_id)]
        # events acknowledged by the old master but not yet copied to the replica when it
        # died are lost with it (Redis replication is asynchronous): the store may miss a few,
        # never repeat one, and the follower, which heard them live, has every one
        assert stored == sorted(set(stored)) and stored[-1] == n
        assert backend.pubsub_connects >= 2


async def test_a_frozen_master_is_left_when_the_sentinels_announce_the_switch(
    deployment: LocalSentinel,
) -> None:
    """SIGSTOP the master: every connection to it hangs (nothing errors, a Pub/Sub link looks
    fine, an append waits its whole timeout). The sentinels promote the replica and announce
    +switch-master; the backend leaves the frozen server at once and goes on with the new
    master, well before its 30 s command timeout."""
    run_id = f"s-{uuid.uuid4().hex[:12]}"
    n = 300
    backend = RedisBackend(deployment.url, command_timeout=30, max_events_per_run=10_000)
    frozen = deployment.master
    assert frozen.proc is not None

    def freeze() -> None:
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        wait_until(
            "the sentinels promoting a replica",
            lambda: deployment.master_port() != frozen.port,
            20,
        )

    try:
        async with EventBus(backend) as bus:
            seen: list[int] = []
            follower = asyncio.create_task(collect(bus, run_id, n, seen))
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="t-first"))
            await asyncio.to_thread(deployment.wait_replicated)
            failures = await asyncio.wait_for(
                publish_through(bus, run_id, n - 1, freeze, at=50), 25
            )
            await asyncio.wait_for(follower, 25)
            assert seen == list(range(1, n + 1))
            assert failures == []
            assert backend.switches >= 1
    finally:
        with contextlib.suppress(Exception):
            frozen.proc.send_signal(signal.SIGCONT)


def test_stream_backend_takes_a_sentinel_url(
    magics_shell: Any, sentinel_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ipython = magics_shell
    ipython.run_line_magic("stream_backend", f"redis --url {sentinel_url}")
    capsys.readouterr()
    ipython.run_line_magic("stream_backend", "")
    shown = capsys.readouterr().out
    assert f"redis at {sentinel_url} (sentinel, service 'dnbmaster'); ttl 3600 s" in shown
