"""Row group 8: beyond one Redis node. Ours on a 3-master Redis Cluster beside ours on one
node of the same server binary, and the pause a follower sees when a master is killed.

Every deployment is started here (``bench.topology``), on free loopback ports, and stopped by
PID: one node, a cluster of three masters with a replica each (``cluster-node-timeout``
``NODE_TIMEOUT_MS``), and for the Sentinel row one master, one replica and three sentinels
(``down-after-milliseconds`` ``DOWN_AFTER_MS``). Dockrion 0.0.3 has no cluster or Sentinel
support, so its column says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import ceiling, scenarios
from .progress import Progress
from .report import Row, Target
from .scenarios import Delivery, median
from .server import PrivateServer
from .sides import OURS, BenchConfig, Side
from .topology import LocalCluster, LocalSentinel

NODE_TIMEOUT_MS = 1000
DOWN_AFTER_MS = 500
PACE_SECONDS = 0.002  # between publishes while a master is killed


@dataclass(frozen=True)
class BeyondSizes:
    publish_n: int
    fanout_n: int
    fanout_subs: int
    repeats: int
    failovers: int
    settle: float

    @property
    def steps(self) -> int:
        return 1 + 4 * self.repeats + 3 * self.failovers


FULL = BeyondSizes(
    publish_n=20_000, fanout_n=10_000, fanout_subs=100, repeats=3, failovers=3, settle=0.5
)
QUICK = BeyondSizes(
    publish_n=2_000, fanout_n=1_000, fanout_subs=100, repeats=1, failovers=1, settle=0.3
)
TINY = BeyondSizes(publish_n=100, fanout_n=60, fanout_subs=5, repeats=1, failovers=1, settle=0.1)


@dataclass
class Pause:
    """One master kill as a follower saw it."""

    seconds: float  # from the kill to the first event published after the last acknowledged one
    lost: int  # sequences up to the last published that the follower never received
    repeated: int  # sequences it received more than once


async def _throughput(url: str, run_id: str, n: int, subs: int, settle: float) -> Delivery:
    async with Side(OURS, "redis", BenchConfig(), url) as side:
        try:
            return await scenarios.publish_throughput(side, run_id, n, subs, settle=settle)
        finally:
            with contextlib.suppress(Exception):
                await side.backend.clear_run(run_id)


async def failover_pause(url: str, kill: Callable[[str], float]) -> Pause:
    """A follower and a publisher (one event every ``PACE_SECONDS``) on a run; once the
    follower has heard 200 events, ``kill(run_id)`` kills the run's master and returns when
    it sent the signal (``time.perf_counter``); publishing goes on until the follower has
    heard 200 events published after the kill."""
    from dockrion_nb import EventBus
    from dockrion_nb.backends.redis import RedisBackend
    from dockrion_nb.events import TokenEvent

    run_id = f"bench-fo-{uuid.uuid4().hex[:10]}"
    backend = RedisBackend(url, command_timeout=60, max_events_per_run=100_000)
    received: list[tuple[int, float]] = []
    acked = 0
    stop = asyncio.Event()
    warmed, heard_after = asyncio.Event(), asyncio.Event()
    mark: dict[str, float] = {}

    async with EventBus(backend) as bus:

        async def follow() -> None:
            async for event in bus.subscribe(run_id, 1):
                if event.type == "gap":
                    continue
                received.append((event.sequence, time.perf_counter()))
                if len(received) >= 200:
                    warmed.set()
                if "acked" in mark and event.sequence > mark["acked"] + 200:
                    heard_after.set()
                    return

        async def publish() -> None:
            nonlocal acked
            i = 0
            while not stop.is_set():
                try:
                    stored = await bus.publish(run_id, TokenEvent(run_id=run_id, content=f"t{i}"))
                except Exception:
                    await asyncio.sleep(0.05)  # counted by the follower as lost, if it is
                    continue
                acked = max(acked, stored.sequence)
                i += 1
                await asyncio.sleep(PACE_SECONDS)

        follower = asyncio.create_task(follow())
        publisher = asyncio.create_task(publish())
        try:
            await asyncio.wait_for(warmed.wait(), 60)
            killed_at = await asyncio.to_thread(kill, run_id)
            mark["acked"] = acked  # acknowledged before the kill (the thread ran meanwhile)
            await asyncio.wait_for(heard_after.wait(), 120)
        finally:
            stop.set()
            await asyncio.gather(publisher, return_exceptions=True)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            with contextlib.suppress(Exception):
                await bus.clear_run(run_id)
    after = [t for seq, t in received if seq > mark["acked"]]
    seqs = [seq for seq, _ in received]
    top = max(seqs)
    return Pause(
        seconds=min(after) - killed_at,
        lost=len(set(range(1, top + 1)) - set(seqs)),
        repeated=len(seqs) - len(set(seqs)),
    )


def _cluster_kill(cluster: LocalCluster) -> Callable[[str], float]:
    def kill(run_id: str) -> float:
        from dockrion_nb.backends.redis.keys import key_slot

        master = cluster.master_of_slot(key_slot(f"stream:run:{run_id}"))
        kill.last = master  # type: ignore[attr-defined]
        at = time.perf_counter()
        master.kill()
        return at

    return kill


def _sentinel_kill(deployment: LocalSentinel) -> Callable[[str], float]:
    def kill(run_id: str) -> float:
        at = time.perf_counter()
        deployment.master.kill()
        return at

    return kill


async def measure(
    sizes: BeyondSizes, progress: Progress, prefer: str = "redis"
) -> tuple[list[Row], str]:
    """Rows 8a-8g, and the server (name and version) they ran on."""
    import redis.asyncio as aioredis

    kind: Any = prefer
    rows: list[Row] = []
    single = PrivateServer(prefer=kind)
    cluster = LocalCluster(prefer=kind, node_timeout_ms=NODE_TIMEOUT_MS)
    progress.step("cluster: start one node and a 3-master cluster")
    await asyncio.to_thread(single.start)
    client = aioredis.from_url(single.url)
    try:
        server = await ceiling.server_version(client)
    finally:
        await client.aclose()
    try:
        await asyncio.to_thread(cluster.start)
        binary = cluster.binary.rsplit("/", 1)[-1]
        results: dict[tuple[str, str], list[Delivery]] = {}
        for r in range(sizes.repeats):
            for where, url in (("one", single.url), ("cluster", cluster.url))[
                :: 1 if r % 2 == 0 else -1
            ]:
                for what, n, subs in (
                    ("publish", sizes.publish_n, 1),
                    ("fanout", sizes.fanout_n, sizes.fanout_subs),
                ):
                    progress.step(f"cluster: {what} on {where}")
                    run_id = f"bench-{what}-{uuid.uuid4().hex[:10]}"
                    d = await _throughput(url, run_id, n, subs, sizes.settle)
                    results.setdefault((what, where), []).append(d)
        rows += _throughput_rows(results, sizes, binary)
        cluster_pauses: list[Pause] = []
        kill = _cluster_kill(cluster)
        for _ in range(sizes.failovers):
            progress.step("cluster: kill the run's master")
            cluster_pauses.append(await failover_pause(cluster.url, kill))
            progress.step("cluster: the killed node rejoins")
            await asyncio.to_thread(cluster.rejoin, kill.last)  # type: ignore[attr-defined]
        rows.append(
            _pause_row(
                "8e",
                f"Redis Cluster failover: master killed (SIGKILL) -> follower's next event, "
                f"cluster-node-timeout {NODE_TIMEOUT_MS} ms",
                cluster_pauses,
            )
        )
    finally:
        await asyncio.to_thread(cluster.close)
        await asyncio.to_thread(single.close)
    pauses: list[Pause] = []
    for _ in range(sizes.failovers):
        progress.step("sentinel: start, kill the master")
        deployment = LocalSentinel(prefer=kind, down_after_ms=DOWN_AFTER_MS)
        await asyncio.to_thread(deployment.start)
        try:
            pauses.append(await failover_pause(deployment.url, _sentinel_kill(deployment)))
        finally:
            await asyncio.to_thread(deployment.close)
    rows.append(
        _pause_row(
            "8f",
            f"Sentinel failover: master killed (SIGKILL) -> follower's next event, "
            f"down-after-milliseconds {DOWN_AFTER_MS}",
            pauses,
        )
    )
    every = [*cluster_pauses, *pauses]
    rows.append(
        Row(
            "8g",
            f"events a follower missed or got twice over the {len(every)} master kills of "
            "8e and 8f",
            "",
            ours=float(sum(p.lost + p.repeated for p in every)),
            higher=False,
            target=Target(max_value=0, text="0"),
            dockrion_note="no failover support",
        )
    )
    return rows, server


def _throughput_rows(
    results: dict[tuple[str, str], list[Delivery]], sizes: BeyondSizes, binary: str
) -> list[Row]:
    rows = []
    specs = (
        ("publish", "8a", "8b", f"Redis publish, {sizes.publish_n:,} events, 1 subscriber", False),
        (
            "fanout",
            "8c",
            "8d",
            f"Redis fan-out: {sizes.fanout_n:,} events to {sizes.fanout_subs} subscribers "
            "(publish to last delivery)",
            True,
        ),
    )
    for what, key_one, key_cluster, name, end_to_end in specs:
        figures = {}
        delivered = {}
        for where in ("one", "cluster"):
            ds = results.get((what, where), [])
            figures[where] = median(
                [d.end_to_end_rate if end_to_end else d.publish_rate for d in ds]
            )
            delivered[where] = min(d.delivered_min or 0.0 for d in ds) if ds else None
        share = figures["cluster"] / figures["one"] if figures["one"] else None
        for key, where, label in (
            (key_one, "one", f"one node ({binary})"),
            (key_cluster, "cluster", "3-master cluster, 3 replicas, sharded Pub/Sub"),
        ):
            row = Row(
                key,
                f"{name}: {label}",
                "ev/s",
                ours=figures[where],
                ours_delivered=delivered[where],
                target=Target(delivered=True),
            )
            row.dockrion_note = "no cluster support" if where == "cluster" else "see row 2/5"
            if where == "cluster" and share is not None:
                row.ours_note = f"{share:.0%} of one node"
            rows.append(row)
    return rows


def _pause_row(key: str, name: str, pauses: list[Pause]) -> Row:
    lost = sum(p.lost for p in pauses)
    repeated = sum(p.repeated for p in pauses)
    spread = ", ".join(f"{p.seconds:.2f}" for p in pauses)
    row = Row(
        key,
        name,
        "s",
        ours=median([p.seconds for p in pauses]),
        ours_note=f"median of {len(pauses)}: {spread} s; {lost} lost, {repeated} repeated",
    )
    row.dockrion_note = "no failover support"
    return row


__all__ = ["FULL", "QUICK", "TINY", "BeyondSizes", "failover_pause", "measure"]
