"""Live events on a Redis Cluster: one Pub/Sub connection per master that owns a followed
run's slot (sharded Pub/Sub), or one connection to any node (classic Pub/Sub, which a
cluster broadcasts to every node).

Slots come from redis-py's ``RedisCluster`` (its slot map, refreshed on demand), and each
connection is one redis-py makes to that node (AUTH, RESP2) and then hands to a ``Link``, as
on one server. We do not use ``RedisCluster.pubsub()``: in redis-py 8.1 a slot that moves
leaves its subscribers unsubscribed by the server until some other command happens to see a
MOVED, its reconciliation then raises the old node's MOVED reply out of
``get_sharded_message``, and that call polls the nodes in turn, a timeout each.

What a follower sees through a slot move or a failover: the server ends the subscription
(SUNSUBSCRIBE) or the node goes away; the hub re-reads the slot map, subscribes at the new
owner (retrying, with backoff, until one serves the slot) and, once that is confirmed, tells
the follower to resync: it reads from the stream whatever was published meanwhile. Nothing is
lost, nothing repeated (sequences decide), exactly as after a reconnect on one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...redaction import masked_logger, scrub
from ..base import BackendClosedError, BackendSubscribeError
from .errors import backoff_delay
from .link import Link
from .pubsub import HEALTH_INTERVAL, LiveSub, Signal, confirmed, deliver

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.connection import AbstractConnection

    from .cluster import RedisClusterBackend

log = masked_logger("dockrion_nb.redis")

REROUTE_BACKOFF_CAP = 1.0  # seconds between tries to find a slot's new master
# Error replies to a subscription that mean "not here, not now": look the slot up again.
_ELSEWHERE = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class _Shard:
    """One node's Pub/Sub connection and the channels subscribed (or being) on it."""

    __slots__ = ("channels", "conn", "link", "name", "pending", "task")

    def __init__(self, name: str, conn: AbstractConnection) -> None:
        self.name = name
        self.conn = conn
        self.link: Link | None = None
        self.channels: set[bytes] = set()
        # What we sent and the server has not answered yet, in order (it answers in order):
        # (b"sub" | b"unsub" | b"ping", channel). Anything else it sends is its own doing.
        self.pending: deque[tuple[bytes, bytes]] = deque()
        self.task: asyncio.Task[None] | None = None

    def send(self, verb: bytes, command: str, channel: bytes) -> None:
        if self.link is not None and self.link.open:
            self.pending.append((verb, channel))
            self.link.send(command, channel)

    def answered(self, verb: bytes, channel: bytes) -> bool:
        """The reply to our oldest pending ``verb`` on ``channel`` came: forget it. False
        when we sent no such thing (the server acts on its own)."""
        for item in self.pending:
            if item == (verb, channel):
                self.pending.remove(item)
                return True
        return False


class ClusterHub:
    """Every local follower's live feed on a cluster; ``PubSubHub``'s interface."""

    def __init__(self, backend: RedisClusterBackend) -> None:
        self._backend = backend
        self._subs: dict[bytes, list[LiveSub]] = {}
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._resync_on_ack: set[bytes] = set()
        self._route: dict[bytes, _Shard] = {}
        self._shards: dict[str, _Shard] = {}
        self._dirty: set[bytes] = set()  # channels to subscribe (again), wherever they live now
        self._refresh = False  # the slot map must be read again before routing
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._classic: str | None = None  # classic mode: the node every channel is on
        self.connects = 0

    @property
    def live(self) -> bool:
        return bool(self._shards) and not self._dirty

    def subscribers(self, channel: bytes) -> list[LiveSub]:
        return list(self._subs.get(channel, ())) if channel in self._confirmed else []

    # -- followers ---------------------------------------------------------------------------

    async def attach(self, run_id: str, *, models: bool = False) -> LiveSub:
        backend = self._backend
        try:
            await backend.ready()
        except Exception as exc:
            raise backend.error_for(exc, "subscribing") from None
        channel = backend.layout.channel(run_id).encode()
        sub = LiveSub(channel, models)
        self._subs.setdefault(channel, []).append(sub)
        if channel in self._confirmed:
            return sub
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if channel not in self._route:
            self._dirty.add(channel)
        self._kick()
        await confirmed(backend, waiter, run_id, lambda: self.detach(sub))
        return sub

    def detach(self, sub: LiveSub) -> None:
        channel = sub.channel
        subs = self._subs.get(channel)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if subs:
            return
        del self._subs[channel]
        self._confirmed.discard(channel)
        self._dirty.discard(channel)
        self._resync_on_ack.discard(channel)
        shard = self._route.pop(channel, None)
        if shard is not None and not self._closed:
            shard.channels.discard(channel)
            shard.send(b"unsub", self._verb("UNSUBSCRIBE"), channel)
            self._let_go_if_idle(shard)

    async def close(self) -> None:
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.signal(Signal.CLOSED)
        self._fail_waiters(BackendClosedError("the Redis backend is closed", backend="redis"))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for shard in list(self._shards.values()):
            await self._drop(shard)

    # -- the supervisor: routes channels to nodes, again after every move or loss --------------

    def _kick(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if (self._task is None or self._task.done()) and not self._closed:
            self._task = asyncio.create_task(self._run(), name="dockrion-nb redis cluster pubsub")

    async def _run(self) -> None:
        backend = self._backend
        assert self._wake is not None
        attempt = 0
        try:
            while not self._closed and (self._subs or self._waiters):
                if not self._dirty:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    if self._refresh:
                        self._refresh = False
                        await backend.refresh_slots()
                    await self._route_dirty()
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Followers that are starting fail fast; running ones wait for us.
                    self._fail_waiters(backend.error_for(exc, "subscribing"))
                    self._refresh = True
                    if self._subs:
                        backend.set_state("reconnecting")
                    log.log(
                        logging.INFO if attempt == 0 else logging.DEBUG,
                        "Redis Cluster Pub/Sub at %s: %s; retrying",
                        backend.masked_url,
                        scrub(str(exc) or type(exc).__name__, backend.url),
                    )
                    await asyncio.sleep(backoff_delay(attempt, REROUTE_BACKOFF_CAP))
                    attempt += 1
        finally:
            if not self._closed and not self._subs:
                backend.set_state("idle")

    async def _route_dirty(self) -> None:
        for channel in list(self._dirty):
            if channel not in self._subs:
                self._dirty.discard(channel)
                continue
            node = self._node_for(channel)
            shard = self._shards.get(node.name)
            if shard is None or shard.link is None or not shard.link.open:
                shard = await self._connect(node)
            if channel not in self._dirty or channel not in self._subs:
                continue  # the follower left while we connected
            old = self._route.get(channel)
            if old is not None and old is not shard:
                old.channels.discard(channel)
                old.send(b"unsub", self._verb("UNSUBSCRIBE"), channel)
                self._let_go_if_idle(old)
            self._route[channel] = shard
            shard.channels.add(channel)
            shard.send(b"sub", self._verb("SUBSCRIBE"), channel)
            self._dirty.discard(channel)

    def _verb(self, command: str) -> str:
        return f"S{command}" if self._backend.layout.sharded else command

    def _node_for(self, channel: bytes) -> ClusterNode:
        cluster = self._backend.cluster
        if self._backend.layout.sharded:
            node = cluster.get_node_from_key(channel.decode())
            if node is None:
                raise SlotNotCoveredError(f"no master serves the slot of {channel.decode()!r}")
            return node
        if self._classic is not None:
            node = cluster.get_node(node_name=self._classic)
            if node is not None:
                return node
        node = random.choice(cluster.get_primaries())
        self._classic = node.name
        return node

    async def _connect(self, node: ClusterNode) -> _Shard:
        conn = node.connection_class(**node.connection_kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            shard = _Shard(node.name, conn)
            link = Link(lambda reply: self._on_reply(shard, reply))
            link.take_over(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        shard.link = link
        previous = self._shards.get(node.name)
        if previous is not None:
            self._shard_gone(previous, None)
        self._shards[node.name] = shard
        self.connects += 1
        shard.task = asyncio.create_task(self._watch(shard), name=f"dockrion-nb pubsub {node.name}")
        return shard

    async def _watch(self, shard: _Shard) -> None:
        """Until the shard's link ends; a link silent for ``HEALTH_INTERVAL`` is PINGed, and
        dropped when it stays silent for another."""
        link = shard.link
        assert link is not None
        reason: BaseException | None = None
        ping_sent = False
        try:
            while True:
                try:
                    reason = await asyncio.wait_for(asyncio.shield(link.lost), HEALTH_INTERVAL)
                    break
                except TimeoutError:
                    if link.heard:
                        link.heard = ping_sent = False
                    elif ping_sent:
                        reason = RedisTimeoutError("no answer to PING on the Pub/Sub connection")
                        break
                    else:
                        shard.pending.append((b"ping", b""))
                        link.send("PING")
                        ping_sent = True
        finally:
            link.finish()
            self._shard_gone(shard, reason)
            with contextlib.suppress(Exception):
                await shard.conn.disconnect(nowait=True)

    def _shard_gone(self, shard: _Shard, reason: BaseException | None) -> None:
        """A node's connection ended: every channel on it goes to wherever its slot is now."""
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        if shard.link is not None:
            shard.link.finish()
        if self._classic == shard.name:
            self._classic = None
        lost = [ch for ch, routed in self._route.items() if routed is shard]
        for channel in lost:
            self._reroute(channel)
        if lost and not self._closed:
            log.info(
                "Redis Cluster Pub/Sub connection to %s lost (%s); subscribing again where "
                "the slots are now",
                shard.name,
                scrub(str(reason) or type(reason).__name__, self._backend.url)
                if reason is not None
                else "closed",
            )

    def _reroute(self, channel: bytes) -> None:
        shard = self._route.pop(channel, None)
        if shard is not None:
            shard.channels.discard(channel)
        if channel not in self._subs or self._closed:
            return
        self._confirmed.discard(channel)
        self._resync_on_ack.add(channel)
        self._dirty.add(channel)
        self._refresh = True
        self._backend.set_state("reconnecting")
        self._kick()

    def _let_go_if_idle(self, shard: _Shard) -> None:
        if not shard.channels and not shard.pending and shard.link is not None:
            shard.link.finish()  # its watcher tidies up

    async def _drop(self, shard: _Shard) -> None:
        if shard.link is not None:
            shard.link.finish()
        task = shard.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await shard.conn.disconnect(nowait=True)

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)

    # -- replies, in each socket's read callback ---------------------------------------------

    def _on_reply(self, shard: _Shard, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):  # the answer to our oldest command
            verb, channel = shard.pending.popleft() if shard.pending else (b"", b"")
            if verb == b"sub":
                self._refused(shard, channel, str(reply))
            return
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind, channel = reply[0], reply[1]
        if kind in (b"smessage", b"message") and len(reply) == 3:
            subs = self._subs.get(channel)
            if subs:
                run_id = self._backend.layout.run_of_channel(channel.decode("utf-8", "replace"))
                deliver(self._backend, subs, run_id, reply[2])
        elif kind in (b"ssubscribe", b"subscribe"):
            shard.answered(b"sub", channel)
            if self._route.get(channel) is shard:
                self._confirm(channel)
        elif kind in (b"sunsubscribe", b"unsubscribe"):
            if shard.answered(b"unsub", channel):
                self._let_go_if_idle(shard)
            elif self._route.get(channel) is shard:
                self._reroute(channel)  # the server let us go: the slot has moved on
        elif kind == b"pong":
            shard.answered(b"ping", b"")

    def _refused(self, shard: _Shard, channel: bytes, text: str) -> None:
        """A subscription refused: elsewhere now (look the slot up again), or for good."""
        if text.startswith(_ELSEWHERE):
            if self._route.get(channel) is shard:
                self._reroute(channel)
            return
        error = BackendSubscribeError(
            f"Redis at {self._backend.masked_url} refused a subscription: "
            f"{scrub(text, self._backend.url)}",
            backend="redis",
        )
        for fut in self._waiters.pop(channel, ()):
            if not fut.done():
                fut.set_exception(error)

    def _confirm(self, channel: bytes) -> None:
        if channel not in self._subs:
            return
        self._confirmed.add(channel)
        for fut in self._waiters.pop(channel, ()):
            if not fut.done():
                fut.set_result(None)
        if channel in self._resync_on_ack:
            self._resync_on_ack.discard(channel)
            for sub in self._subs[channel]:
                sub.signal(Signal.RESYNC)
        if not self._dirty:
            self._backend.set_state("live")
