"""The Redis backend on a real local Redis Cluster: same config, another URL.

Six private servers (three masters, three replicas) in cluster mode on free loopback ports
(``servers.LocalCluster``). The backend contract suite runs on a session cluster through
``backend_factory`` (tests/test_contract.py, tests/test_hostile_events.py: the cluster and
sentinel params); this file checks what is the cluster's own: where keys and channels live,
Dockrion's layout on a cluster, and following a run through a master failover and while its
slot moves, on a cluster of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import redis_cleanup, require
from redis.asyncio.cluster import ClusterNode, RedisCluster
from servers import LocalCluster, server_binary

from dockrion_nb import EventBus
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.backends.redis.cluster import RedisClusterBackend
from dockrion_nb.backends.redis.keys import key_slot
from dockrion_nb.events import CompleteEvent, TokenEvent
from dockrion_nb.redis_urls import parse_redis_url

pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning"  # inside dockrion_events 0.0.3
)


def raw_cluster(url: str, *, decode: bool = False) -> RedisCluster:
    """A plain redis-py cluster client on the same cluster, to look at what we wrote."""
    target = parse_redis_url(url)
    nodes = [ClusterNode(h, p) for h, p in target.nodes]
    return RedisCluster(startup_nodes=nodes, password=target.password, decode_responses=decode)


@pytest.fixture
def run(cluster_url: str) -> Iterator[str]:
    rid = f"k-{uuid.uuid4().hex[:12]}"
    yield rid
    redis_cleanup(cluster_url, rid)


@pytest.fixture
async def backend(cluster_url: str) -> AsyncIterator[RedisBackend]:
    b = RedisBackend(cluster_url, stream_ttl_seconds=600, max_events_per_run=1000)
    yield b
    await b.close()


def tokens(run_id: str, n: int, start: int = 0) -> list[TokenEvent]:
    return [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(start, start + n)]


async def collect(bus: EventBus, run_id: str, until: int, seen: list[int]) -> None:
    async for event in bus.subscribe(run_id, 1):
        assert event.type != "gap", f"unexpected gap: {event}"
        seen.append(event.sequence)
        if event.sequence >= until:
            return


# -- layout -----------------------------------------------------------------------------------


async def test_a_cluster_url_builds_the_cluster_backend_with_the_same_settings(
    cluster_url: str,
) -> None:
    backend = RedisBackend(cluster_url, stream_ttl_seconds=900, max_events_per_run=50)
    try:
        assert isinstance(backend, RedisClusterBackend)
        await backend.ping()
        shown = backend.describe()
        assert shown["topology"] == "cluster, sharded Pub/Sub"
        assert (shown["stream_ttl_seconds"], shown["max_events_per_run"]) == (900, 50)
    finally:
        await backend.close()


async def test_the_stream_keeps_dockrions_name_and_counter_and_state_sit_in_its_slot(
    backend: RedisBackend, run: str, cluster_url: str
) -> None:
    from dockrion_nb import RunManager

    bus = EventBus(backend)
    await RunManager(bus, agent_name="a").create_run(run)
    await bus.publish_many(run, tokens(run, 3))
    raw = raw_cluster(cluster_url)
    try:
        stream, counter = f"stream:run:{run}", f"seq:run:{{stream:run:{run}}}"
        state = f"runstate:run:{{stream:run:{run}}}"
        entries = await raw.xrange(stream)
        assert [fields[b"sequence"] for _, fields in entries] == [b"1", b"2", b"3"]
        assert sorted(entries[0][1]) == [b"data", b"sequence", b"type"]
        assert await raw.get(counter) == b"3"
        assert (await raw.hgetall(state))[b"status"] == b"accepted"
        assert raw.keyslot(counter) == raw.keyslot(state) == raw.keyslot(stream) == key_slot(stream)
        for key in (stream, counter, state):  # the append script renews all three
            assert 0 < await raw.ttl(key) <= 600
    finally:
        await raw.aclose()


async def test_clearing_a_run_first_thing_clears_its_counter_too(
    cluster_url: str, run: str
) -> None:
    async with EventBus(RedisBackend(cluster_url, stream_ttl_seconds=600)) as bus:
        await bus.publish_many(run, tokens(run, 3))
    async with EventBus(RedisBackend(cluster_url, stream_ttl_seconds=600)) as bus:
        await bus.clear_run(run)  # a new backend's first command
        again = await bus.publish(run, TokenEvent(run_id=run, content="anew"))
        assert again.sequence == 1


async def test_live_events_go_out_on_a_sharded_channel_in_the_streams_slot(
    backend: RedisBackend, run: str, cluster_url: str
) -> None:
    raw = raw_cluster(cluster_url)
    pubsub = raw.pubsub()
    channel = f"events:run:{{stream:run:{run}}}"
    try:
        await raw.initialize()
        await pubsub.ssubscribe(channel)
        bus = EventBus(backend)
        sent = await bus.publish(run, TokenEvent(run_id=run, content="hello"))
        message = None
        for _ in range(100):
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
        assert message is not None and message["type"] == "smessage"
        assert sent.sequence == 1
        assert message["data"].startswith(b'{"sequence":1,') and b'"hello"' in message["data"]
        owner = raw.get_node_from_key(channel)
        # asked of the owner with a plain client: redis-py 8.2's cluster parser of this reply
        # breaks on a single node's answer
        node = aioredis.Redis(
            host=owner.host, port=owner.port, password=parse_redis_url(cluster_url).password
        )
        try:
            counts = await node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        finally:
            await node.aclose()
        assert int(counts[1]) == 1  # the raw subscriber; ours has not followed yet
    finally:
        await pubsub.aclose()
        await raw.aclose()


async def test_a_retried_publish_is_stored_once_on_a_cluster(
    backend: RedisBackend, run: str
) -> None:
    bus = EventBus(backend)
    event = TokenEvent(run_id=run, content="maybe stored")
    first, again = await bus.publish(run, event), await bus.publish(run, event)
    assert first.sequence == again.sequence == 1
    assert [e.sequence for e in await bus.get_events(run)] == [1]


async def test_runs_on_every_master_are_listed_and_cleared(backend: RedisBackend) -> None:
    bus = EventBus(backend)
    prefix = f"k-{uuid.uuid4().hex[:8]}"
    runs = [f"{prefix}-{i}" for i in range(12)]  # 12 ids: their slots spread over the masters
    try:
        for rid in runs:
            await bus.publish_many(rid, tokens(rid, 2))
        listed = {r.run_id: r.event_count for r in await bus.list_runs(f"{prefix}-*")}
        assert listed == dict.fromkeys(runs, 2)
        await bus.clear_run(runs[0])
        assert await bus.get_events(runs[0]) == []
        assert runs[0] not in {r.run_id for r in await bus.list_runs(f"{prefix}-*")}
    finally:
        redis_cleanup(backend.url, *runs)


# -- Dockrion's layout on a cluster -----------------------------------------------------------
#
# Dockrion 0.0.3 connects with a plain client; on a cluster its commands go through a cluster
# client. Its backend with a redis-py RedisCluster in place of that client is what a Dockrion
# deployment on a cluster sends: the same commands, on the same keys and channels.


@pytest.fixture
async def dockrion_on_cluster(cluster_url: str) -> AsyncIterator[Any]:
    dockrion_redis = pytest.importorskip("dockrion_events.backends.redis")
    theirs = dockrion_redis.RedisBackend(
        url="redis://unused", stream_ttl_seconds=600, max_events_per_run=1000
    )
    theirs._redis = raw_cluster(cluster_url, decode=True)
    yield theirs
    await theirs.close()


async def test_dockrion_and_we_read_each_others_runs_on_a_cluster(
    backend: RedisBackend, dockrion_on_cluster: Any, run: str, cluster_url: str
) -> None:
    from dockrion_events import EventBus as DockrionBus
    from dockrion_events import StreamContext as DockrionContext

    theirs_run = f"{run}-d"
    try:
        ctx = DockrionContext(theirs_run, bus=DockrionBus(dockrion_on_cluster), agent_name="a")
        await ctx.emit_started()
        await ctx.emit_token("hi")
        await ctx.emit_complete({"ok": True})
        bus = EventBus(backend)
        replayed = [e.type async for e in bus.subscribe(theirs_run, 1, live=False)]
        assert replayed == ["started", "token", "complete"]
        more = await bus.publish(theirs_run, TokenEvent(run_id=theirs_run, content="late"))
        assert more.sequence == 4  # continues Dockrion's numbering

        await bus.publish_many(run, tokens(run, 3))
        read_by_dockrion = await dockrion_on_cluster.get_events(run)
        assert [e["sequence"] for e in read_by_dockrion] == [1, 2, 3]
        assert [e["content"] for e in read_by_dockrion] == ["t0", "t1", "t2"]
    finally:
        redis_cleanup(cluster_url, theirs_run)


async def test_classic_pubsub_follows_dockrion_live_and_dockrion_follows_us(
    cluster_url: str, dockrion_on_cluster: Any, run: str
) -> None:
    """With ``?pubsub=classic`` live events use Dockrion's channel: each side hears the
    other's (the cost: a cluster broadcasts classic messages to every node)."""
    from dockrion_events import EventBus as DockrionBus
    from dockrion_events import StreamContext as DockrionContext

    ours = RedisBackend(cluster_url + "?pubsub=classic", stream_ttl_seconds=600)
    try:
        bus = EventBus(ours)
        seen: list[str] = []

        async def follow() -> None:
            async for event in bus.subscribe(run, 1):
                seen.append(event.type)
                if event.type == "complete":
                    return

        follower = asyncio.create_task(follow())
        for _ in range(500):
            if ours.subscriber_count(run):
                break
            await asyncio.sleep(0.01)
        assert ours.describe()["topology"] == "cluster, classic Pub/Sub"
        ctx = DockrionContext(run, bus=DockrionBus(dockrion_on_cluster), agent_name="a")
        await ctx.emit_started()
        await ctx.emit_token("live")
        await ctx.emit_complete({"ok": True})
        await asyncio.wait_for(follower, 10)
        assert seen == ["started", "token", "complete"]

        heard: list[int] = []

        async def dockrion_listens() -> None:
            async for event in dockrion_on_cluster.subscribe(f"run:{run}"):
                heard.append(event["sequence"])
                if event["type"] == "complete":
                    return

        listener = asyncio.create_task(dockrion_listens())
        await asyncio.sleep(1.0)  # Dockrion's subscribe gives no sign that it is attached
        await bus.publish(run, TokenEvent(run_id=run, content="from us"))
        await bus.publish(run, CompleteEvent(run_id=run))
        await asyncio.wait_for(listener, 10)
        assert heard == [4, 5]
    finally:
        await ours.close()


# -- faults, on a cluster of their own ----------------------------------------------------------


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[LocalCluster]:
    require(server_binary() is not None, "no Redis-compatible server binary for a cluster")
    cluster = LocalCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


async def publish_through(
    bus: EventBus, run_id: str, n: int, fault: Any, *, at: int
) -> list[BaseException]:
    """Publish ``n`` events one by one, starting ``fault`` (a blocking call, in a thread)
    after ``at`` of them; a publish that still fails is sent again. Returns the failures."""
    failures: list[BaseException] = []
    task: asyncio.Future[Any] | None = None
    for i in range(n):
        if i == at:
            task = asyncio.ensure_future(asyncio.to_thread(fault))
        while True:
            try:
                await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"t{i}"))
                break
            except Exception as exc:  # counted: the backend should have retried it itself
                failures.append(exc)
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.004)
    assert task is not None
    await task
    return failures


async def test_a_follower_keeps_following_through_a_master_failover(
    fault_cluster: LocalCluster,
) -> None:
    """Stop the master that holds the run (SIGTERM: it lets its replica catch up first); the
    replica is promoted. Publishes meeting the failover are retried by the backend; the
    follower resubscribes at the new master and fills the gap from the stream: every event
    once, in order, none lost."""
    run_id = f"f-{uuid.uuid4().hex[:12]}"
    n = 400
    backend = RedisBackend(fault_cluster.url, command_timeout=20, max_events_per_run=10_000)
    states: list[str] = []
    backend.add_state_listener(states.append)
    master = fault_cluster.master_of_slot(key_slot(f"stream:run:{run_id}"))
    try:
        async with EventBus(backend) as bus:
            seen: list[int] = []
            follower = asyncio.create_task(collect(bus, run_id, n, seen))
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="t-first"))
            failures = await publish_through(
                bus, run_id, n - 1, lambda: fault_cluster.fail_over(master), at=100
            )
            await asyncio.wait_for(follower, 30)
            assert seen == list(range(1, n + 1))
            assert failures == []
            stored = [e.sequence for e in await bus.get_events(run_id)]
            assert stored == list(range(1, n + 1))
            assert fault_cluster.master_of_slot(key_slot(f"stream:run:{run_id}")) != master
            assert "reconnecting" in states and states[-1] == "live"
            assert backend.pubsub_connects >= 2
    finally:
        redis_cleanup(fault_cluster.url, run_id)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(fault_cluster.rejoin, master)


async def test_a_follower_keeps_following_when_its_master_hands_over_and_stays_up(
    fault_cluster: LocalCluster,
) -> None:
    """A manual failover (CLUSTER FAILOVER): the old master stays up, now a replica, so no
    connection breaks; the follower still moves to the new master and misses nothing."""
    run_id = f"h-{uuid.uuid4().hex[:12]}"
    n = 300
    slot = key_slot(f"stream:run:{run_id}")
    master = fault_cluster.master_of_slot(slot)
    backend = RedisBackend(fault_cluster.url, command_timeout=20, max_events_per_run=10_000)
    try:
        async with EventBus(backend) as bus:
            seen: list[int] = []
            follower = asyncio.create_task(collect(bus, run_id, n, seen))
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="t-first"))
            failures = await publish_through(
                bus, run_id, n - 1, lambda: fault_cluster.hand_over(master), at=100
            )
            await asyncio.wait_for(follower, 30)
            assert seen == list(range(1, n + 1))
            assert failures == []
            assert [e.sequence for e in await bus.get_events(run_id)] == list(range(1, n + 1))
            assert fault_cluster.master_of_slot(slot).port != master.port
            assert backend.pubsub_connects >= 2  # subscribed again, at the new master
    finally:
        redis_cleanup(fault_cluster.url, run_id)


async def test_a_follower_keeps_following_while_the_runs_slot_moves(
    fault_cluster: LocalCluster,
) -> None:
    """Move the run's slot to another master while publishing, one key at a time with pauses
    (so publishes meet ASK and TRYAGAIN while the stream and its counter sit on different
    nodes); the server ends the follower's sharded subscription when the slot has moved, and
    the follower subscribes at the new owner and resyncs: nothing lost, nothing repeated."""
    run_id = f"m-{uuid.uuid4().hex[:12]}"
    n = 400
    slot = key_slot(f"stream:run:{run_id}")
    source = fault_cluster.master_of_slot(slot)
    target = next(m for m in fault_cluster.masters() if m.port != source.port)
    backend = RedisBackend(fault_cluster.url, command_timeout=20, max_events_per_run=10_000)
    try:
        async with EventBus(backend) as bus:
            seen: list[int] = []
            follower = asyncio.create_task(collect(bus, run_id, n, seen))
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="t-first"))
            failures = await publish_through(
                bus,
                run_id,
                n - 1,
                lambda: fault_cluster.move_slot(slot, target, batch=1, pause=0.3),
                at=100,
            )
            await asyncio.wait_for(follower, 30)
            assert seen == list(range(1, n + 1))
            assert failures == []
            assert [e.sequence for e in await bus.get_events(run_id)] == list(range(1, n + 1))
            assert fault_cluster.master_of_slot(slot).port == target.port
            assert backend.pubsub_connects >= 2  # it subscribed again, at the new owner
    finally:
        redis_cleanup(fault_cluster.url, run_id)


def test_stream_backend_takes_a_cluster_url_and_shows_it_masked(
    magics_shell: Any, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ipython = magics_shell
    ipython.run_line_magic("stream_backend", f"redis --url {cluster_url} --ttl 7200")
    capsys.readouterr()
    ipython.run_line_magic("stream_backend", "")
    shown = capsys.readouterr().out
    assert "redis at redis+cluster://***@127.0.0.1:" in shown
    assert "/ (cluster, sharded Pub/Sub); ttl 7200 s" in shown
    assert "cluster-pw-7" not in shown
