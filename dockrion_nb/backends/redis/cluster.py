"""``RedisClusterBackend``: the Redis backend on a Redis Cluster (or a Valkey cluster).

Commands go through redis-py's asyncio ``RedisCluster``, which routes each by its key's slot
and follows MOVED and ASK. The append script touches the run's stream and its counter, both
in the stream's slot (``keys.KeyLayout``), and publishes on a channel in that slot too
(sharded Pub/Sub) or on Dockrion's channel (classic). An append that meets a failover (a
master gone, a slot without one, a key mid-migration) is sent again until it succeeds or
``command_timeout`` has passed: the script recognises a batch it already stored (by its last
event's id), so a retry stores nothing twice. Followers get their live events from
``ClusterHub``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...redis_urls import RedisTarget, RedisURLError, parse_redis_url
from ..base import BackendConnectionError, EventDict
from .appender import Appender, widen_retry
from .backend import RedisBackend
from .cluster_hub import ClusterHub
from .decode import as_sent
from .errors import CLUSTER_TRANSIENT, backoff_delay
from .keys import KeyLayout
from .script import APPEND_LUA, APPEND_SHA

MIN_REDIS_PY = (8, 1)  # asyncio cluster fixes (MOVED/ASK in pipelines, slot cache refresh)
PROBE_CHANNEL = "dockrion-nb:probe"  # SPUBLISH here tells whether the servers shard Pub/Sub
RETRY_BACKOFF_CAP = 0.5  # seconds between tries of an append during a failover
# Failures during which a retried append can succeed (the script makes retries safe).
APPEND_RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    *CLUSTER_TRANSIENT,
)


def redis_py_version() -> tuple[int, ...]:
    import redis

    parts = []
    for part in redis.__version__.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _BoundedCluster(RedisCluster):
    """``RedisCluster`` with at most ``limit`` commands in flight: its node pools fail at once
    when empty, where a burst should wait for a connection as it does on one server. A
    cluster no node of which answers is a connection error, so followers retry it."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(limit)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            try:
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                if "cannot be connected" in str(exc) or "reachable" in str(exc):
                    raise RedisConnectionError(str(exc)) from None
                raise


class RedisClusterBackend(RedisBackend):
    """The Redis backend on a cluster: ``redis+cluster://host:port,host:port/``."""

    topology = "cluster"

    def _open(self) -> None:
        if redis_py_version() < MIN_REDIS_PY:
            raise BackendConnectionError(
                "Redis Cluster needs redis-py >= 8.1 (asyncio cluster fixes); "
                "pip install 'redis[hiredis]>=8.1'",
                backend="redis",
            )
        try:
            self.target: RedisTarget = parse_redis_url(self.url)
        except RedisURLError as exc:
            raise self.invalid_url(exc) from None
        target = self.target
        # Node pools hold a few more than the limit: pipelines (run summaries) take their own.
        self.cluster = _BoundedCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            limit=self.connection_pool_size,
            max_connections=self.connection_pool_size + 4,
            username=target.username,
            password=target.password,
            protocol=2,
            socket_timeout=self.command_timeout,
            socket_connect_timeout=self.connect_timeout,
            require_full_coverage=False,  # a failover leaves a slot uncovered for a moment
            retry=Retry(NoBackoff(), 0),  # MOVED/ASK are still followed; appends retry below
        )
        for command in ("XRANGE", "XREVRANGE"):
            self.cluster.set_response_callback(command, as_sent)
        self._client = self._raw = self.cluster  # type: ignore[assignment]
        # The counter's name is known now; with pubsub=auto, the channel once ready() asked.
        self.layout = KeyLayout(cluster=True, sharded=target.pubsub == "sharded")
        self._layout_known = False
        self._settling: asyncio.Lock | None = None
        self._appender = ClusterAppender(self)
        self._hub = ClusterHub(self)  # type: ignore[assignment]

    async def ready(self) -> None:
        """Connect once, and settle the Pub/Sub mode: ``pubsub=auto`` takes sharded Pub/Sub
        when the servers know SPUBLISH (Redis and Valkey 7+), classic otherwise."""
        if self._layout_known:
            return
        if self._settling is None:
            self._settling = asyncio.Lock()
        async with self._settling:
            if self._layout_known:
                return
            mode = self.target.pubsub
            if mode == "auto":
                try:
                    await self.cluster.execute_command("SPUBLISH", PROBE_CHANNEL, "")
                    mode = "sharded"
                except ResponseError as exc:
                    if "unknown command" not in str(exc).lower():
                        raise
                    mode = "classic"
            else:
                await self.cluster.initialize()
            self.layout = KeyLayout(cluster=True, sharded=mode == "sharded")
            self._layout_known = True

    async def refresh_slots(self) -> None:
        """Read the slot map again (after a slot moved or a master went away)."""
        await self.cluster.initialize()
        await self.cluster.nodes_manager.initialize()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["nodes"] = [f"{host}:{port}" for host, port in self.target.nodes]
        if not self._layout_known:
            out["topology"] = f"cluster, {self.target.pubsub} Pub/Sub (not connected yet)"
        return out

    async def ping(self) -> None:
        self.check_open()
        try:
            await self.ready()
            await self.cluster.ping()
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, "connecting") from None

    async def _close_clients(self) -> None:
        with contextlib.suppress(Exception):
            await self.cluster.aclose()


class ClusterAppender(Appender):
    """The append script through ``RedisCluster`` (routed by the stream's slot), sent again
    through a failover for up to ``command_timeout``."""

    _backend: RedisClusterBackend

    async def append(
        self, run_id: str, events: Sequence[EventDict], *, publish: bool, assign: bool
    ) -> None:
        try:
            await self._backend.ready()
        except (RedisError, OSError) as exc:
            raise self._publish_error(run_id, exc) from None
        await super().append(run_id, events, publish=publish, assign=assign)

    async def _call(
        self, keys: list[str], args: list[str | int], *, budget: float | None = None
    ) -> Any:
        cluster = self._backend.cluster
        timeout = self._backend.command_timeout if budget is None else budget
        last: BaseException | None = None
        attempt = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        return await self._run_script(cluster, keys, args)
                    except APPEND_RETRIABLE as exc:
                        last = exc
                        widen_retry(args)  # a node may have run it before the link broke
                    await asyncio.sleep(backoff_delay(attempt, RETRY_BACKOFF_CAP))
                    attempt += 1
        except TimeoutError:
            if last is not None:
                raise last from None
            raise RedisTimeoutError(
                f"no reply within {timeout:g} s (command timeout); the events may still be "
                "stored when the server answers: publishing the same events again is safe, "
                "they are not stored twice"
            ) from None

    @staticmethod
    async def _run_script(cluster: RedisCluster, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await cluster.execute_command("EVALSHA", APPEND_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # Nothing ran: load it on every master (a promoted replica has no script cache).
            await cluster.script_load(APPEND_LUA)
            return await cluster.execute_command("EVALSHA", APPEND_SHA, len(keys), *keys, *args)
