"""``RedisSentinelBackend``: the Redis backend on the master a set of Sentinels watches.

There is one master at a time, so everything works as on one server, hot paths included:
every connection is a redis-py ``SentinelManagedConnection``, which asks the sentinels for
the master's address when it connects, and the append and Pub/Sub connections are then read
directly (``link``). Three places where redis-py alone would not follow a master switch:

- redis-py notices a demoted master by the READONLY error on its own reads; we read the
  append connection ourselves, so an append refused with READONLY drops that connection and
  is sent again to the master the sentinels name now (safe: the script stores a batch once).
- A Pub/Sub connection never gets READONLY: on a master that is demoted but still up (a
  partition, or a frozen server) it would stay subscribed to a server nobody writes to.
- An append waiting on a frozen master would wait for its whole timeout.

So the backend listens to the sentinels' ``+switch-master`` announcement (from the first
append or follower on) and, when its service moves, drops its append connection, its Pub/Sub
connection (the hub resubscribes at the new master and followers resync from the stream) and
its pooled connections. Appends that fail during the switch (refused, or no master yet) are
sent again until ``command_timeout`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...redaction import masked_logger, scrub
from ...redis_urls import RedisTarget, RedisURLError, parse_redis_url
from .appender import Appender, widen_retry
from .backend import RedisBackend
from .errors import backoff_delay
from .pubsub import PubSubHub

log = masked_logger("dockrion_nb.redis")

SWITCH_CHANNEL = "+switch-master"
RETRY_BACKOFF_CAP = 0.5  # seconds between tries of an append during a switch
APPEND_RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel-managed connections in a blocking pool: a burst waits for a connection, as
    on one server, instead of failing."""


class RedisSentinelBackend(RedisBackend):
    """The Redis backend on a Sentinel-managed master:
    ``redis+sentinel://host:port,host:port/service_name/db``."""

    topology = "sentinel"
    _appender: SentinelAppender

    def _open(self) -> None:
        try:
            self.target: RedisTarget = parse_redis_url(self.url)
        except RedisURLError as exc:
            raise self.invalid_url(exc) from None
        target = self.target
        assert target.service is not None
        self.service = target.service
        timeouts = {
            "socket_timeout": self.command_timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        self.sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.nodes),
            sentinel_kwargs={
                **timeouts,
                "protocol": 2,
                "username": target.sentinel_username,
                "password": target.sentinel_password,
            },
        )
        self._sentinel_pool = _BlockingSentinelPool(  # type: ignore[no-untyped-call]
            target.service,
            self.sentinel,
            max_connections=self.connection_pool_size,
            timeout=self.command_timeout,
            retry=Retry(NoBackoff(), 0),  # appends retry by themselves, safely
            username=target.username,
            password=target.password,
            db=target.db,
            protocol=2,
            **timeouts,
        )
        self._pool = self._sentinel_pool
        self._use_pool(self._pool)
        self._appender = SentinelAppender(self)
        self._hub = PubSubHub(self)
        self._watcher: asyncio.Task[None] | None = None
        self.switches = 0  # master switches this backend has followed

    def new_connection(self) -> AbstractConnection:
        self._watch_switches()
        return super().new_connection()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["topology"] = f"sentinel, service {self.service!r}"
        out["sentinels"] = [f"{host}:{port}" for host, port in self.target.nodes]
        out["master"] = (
            "{}:{}".format(*self._sentinel_pool.master_address)
            if self._sentinel_pool.master_address
            else None
        )
        return out

    # -- following the master -------------------------------------------------------------------

    def _watch_switches(self) -> None:
        if (self._watcher is None or self._watcher.done()) and not self._closed:
            self._watcher = asyncio.create_task(
                self._listen_for_switches(), name="dockrion-nb sentinel switches"
            )

    async def _listen_for_switches(self) -> None:
        """Subscribe to ``+switch-master`` on one sentinel after another (whichever answers)."""
        attempt = 0
        turn = 0
        while not self._closed:
            sentinels = self.sentinel.sentinels
            client = sentinels[turn % len(sentinels)]
            turn += 1
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(SWITCH_CHANNEL)
                attempt = 0
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    await self._on_switch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug(
                    "listening for master switches on a sentinel of %s failed (%s); trying "
                    "the next one",
                    self.masked_url,
                    scrub(str(exc), self.url),
                )
                await asyncio.sleep(backoff_delay(attempt))
                attempt += 1
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _on_switch(self, data: Any) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) != 5 or parts[0] != self.service:
            return
        self.switches += 1
        log.info(
            "the sentinels of %s moved master %s from %s:%s to %s:%s; reconnecting",
            self.masked_url,
            self.service,
            *parts[1:],
        )
        await self.master_switched()

    async def master_switched(self) -> None:
        """Leave the old master everywhere: the append link, the Pub/Sub link (followers
        resync once subscribed at the new one) and the pool's connections."""
        await self._appender.reconnect()
        self._hub.reconnect()
        with contextlib.suppress(Exception):
            await self._pool.disconnect(inuse_connections=True)

    async def _close_clients(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        await super()._close_clients()
        with contextlib.suppress(Exception):
            await self.sentinel.aclose()


class SentinelAppender(Appender):
    """The append script on the current master, sent again through a master switch."""

    _backend: RedisSentinelBackend

    async def _call(
        self, keys: list[str], args: list[str | int], *, budget: float | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._backend.command_timeout if budget is None else budget)
        attempt = 0
        while True:
            try:
                return await super()._call(keys, args, budget=max(0.05, deadline - loop.time()))
            except ResponseError as exc:
                if "READONLY" not in str(exc):
                    raise
                error: RedisError = RedisConnectionError(f"the master was demoted ({exc})")
            except APPEND_RETRIABLE as exc:
                error = exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))
                widen_retry(args)  # the master may have run it before the link broke
            await self.reconnect()  # the next try asks the sentinels where the master is
            delay = backoff_delay(attempt, RETRY_BACKOFF_CAP)
            if loop.time() + delay >= deadline:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def reconnect(self) -> None:
        await self._drop()
