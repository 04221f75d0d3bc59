"""The backend's one shared Pub/Sub connection (``PubSubHub``, read directly through a
``Link``) and each local follower's bounded queue on it (``LiveSub``): reconnects,
re-subscribes and tells followers to resync."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...events import BaseEvent
from ...redaction import masked_logger, scrub
from ..base import BackendClosedError, BackendSubscribeError
from ..feed import Feed
from .decode import StreamRecord
from .errors import backoff_delay
from .keys import CHANNEL_PREFIX, pubsub_channel
from .link import Link

if TYPE_CHECKING:
    from .backend import RedisBackend

log = masked_logger("dockrion_nb.redis")

QUEUE_LIMIT = 10_000  # a follower further behind re-reads from the stream instead
HEALTH_INTERVAL = 15.0  # seconds of Pub/Sub silence before we PING the server


class Signal(enum.Enum):
    RESYNC = "resync"  # the live feed may have missed events: fill from the stream
    CLOSED = "closed"


Item = StreamRecord | BaseEvent | Signal


class LiveSub(Feed[Item]):
    """One local follower of a channel: a bounded feed; beyond it, the stream catches up."""

    __slots__ = ("channel", "models")

    def __init__(self, channel: bytes, models: bool = False) -> None:
        super().__init__(QUEUE_LIMIT)
        self.channel = channel
        self.models = models  # models only (our followers), else wire dicts (Dockrion's)

    def signal(self, signal: Signal) -> None:
        self.items.append(signal)  # never dropped, whatever the limit
        self.wake()

    async def get(self) -> Item:
        while not self.items:
            if self.behind:
                self.behind = False  # live events queue again before the stream is read
                return Signal.RESYNC
            await self.wait()
        return self.items.popleft()


async def confirmed(
    backend: RedisBackend, waiter: asyncio.Future[None], run_id: str, undo: Any
) -> None:
    """Wait for the server to confirm a follower's subscription; on a timeout (or any
    failure) ``undo()`` it, and a timeout is one clear error."""
    try:
        await asyncio.wait_for(waiter, backend.command_timeout)
    except BaseException as exc:
        undo()
        if isinstance(exc, asyncio.TimeoutError):
            raise BackendSubscribeError(
                f"Redis at {backend.masked_url} did not confirm the subscription to run "
                f"{run_id!r} within {backend.command_timeout:g} s",
                backend="redis",
            ) from None
        raise


class PubSubHub:
    """The backend's one Pub/Sub connection, shared by every local follower."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._subs: dict[bytes, list[LiveSub]] = {}
        self._confirmed: set[bytes] = set()
        self._requested: set[bytes] = set()
        self._resync_on_ack: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._answered = False
        self.connects = 0

    @property
    def live(self) -> bool:
        """Connected now (followers hear published events as they happen)."""
        return self._link is not None and self._link.open

    def subscribers(self, channel: bytes) -> list[LiveSub]:
        return list(self._subs.get(channel, ())) if channel in self._confirmed else []

    async def attach(self, run_id: str, *, models: bool = False) -> LiveSub:
        """Subscribe (if this process has not yet) and wait for the server to confirm it."""
        channel = pubsub_channel(run_id).encode()
        sub = LiveSub(channel, models)
        self._subs.setdefault(channel, []).append(sub)
        if channel in self._confirmed:
            return sub
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dockrion-nb redis pubsub")
        elif self._link is not None and channel not in self._requested:
            self._requested.add(channel)
            self._link.send("SUBSCRIBE", channel)
        await confirmed(self._backend, waiter, run_id, lambda: self.detach(sub))
        return sub

    def detach(self, sub: LiveSub) -> None:
        subs = self._subs.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if subs:
            return
        del self._subs[sub.channel]
        self._confirmed.discard(sub.channel)
        self._requested.discard(sub.channel)
        if self._link is not None and not self._closed:
            # Written now, in order: a later SUBSCRIBE to the channel reaches the server after.
            self._link.send("UNSUBSCRIBE", sub.channel)

    def reconnect(self) -> None:
        """Drop the connection on purpose (the server it reached is no longer the master):
        the hub connects again, resubscribes, and followers resync from the stream."""
        if self._link is not None:
            self._link.finish()

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

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)

    async def _run(self) -> None:
        backend = self._backend
        attempt = 0
        try:
            while not self._closed and self._subs:
                conn = backend.new_connection()
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                    link = Link(self._on_reply)
                    link.take_over(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Followers that are starting fail fast; running ones wait for us.
                    self._fail_waiters(backend.error_for(exc, "subscribing"))
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
                    if not self._subs:
                        break
                    backend.set_state("reconnecting")
                    await asyncio.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                self.connects += 1
                self._link = link
                self._answered = False
                self._confirmed.clear()
                channels = list(self._subs)
                self._requested = set(channels)
                if self.connects > 1:
                    self._resync_on_ack = set(channels)
                try:
                    if channels:
                        link.send("SUBSCRIBE", *channels)
                    backend.set_state("live")
                    await self._watch(link)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.info(
                        "Redis Pub/Sub connection to %s lost (%s); reconnecting",
                        backend.masked_url,
                        scrub(str(exc) or type(exc).__name__, backend.url),
                    )
                finally:
                    self._link = None
                    self._confirmed.clear()
                    link.finish()
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
                # A server that accepts and then drops us at once must not make us spin.
                attempt = 0 if self._answered else attempt + 1
                if not self._closed and self._subs:
                    backend.set_state("reconnecting")
                    await asyncio.sleep(backoff_delay(attempt))
        finally:
            if not self._closed:
                backend.set_state("idle")

    async def _watch(self, link: Link) -> None:
        """Until the link ends: returns when we ended it on purpose, raises when it was lost.
        A link silent for ``HEALTH_INTERVAL`` is PINGed; silent for another, it is dropped."""
        ping_sent = False
        while True:
            try:
                reason = await asyncio.wait_for(asyncio.shield(link.lost), HEALTH_INTERVAL)
            except TimeoutError:
                if link.heard:
                    link.heard = ping_sent = False
                elif ping_sent:
                    raise RedisTimeoutError("no answer to PING on the Pub/Sub connection") from None
                else:
                    link.send("PING")
                    ping_sent = True
                continue
            if reason is not None:
                raise reason
            return

    def _on_reply(self, reply: Any) -> None:
        """One reply from the server, in the socket's read callback."""
        self._answered = True
        if isinstance(reply, hiredis.ReplyError):  # e.g. an ACL that denies a channel
            self._fail_waiters(
                BackendSubscribeError(
                    f"Redis at {self._backend.masked_url} refused a subscription: "
                    f"{scrub(str(reply), self._backend.url)}",
                    backend="redis",
                )
            )
            return
        if isinstance(reply, list) and reply:
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                self._deliver(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirm(reply[1])
        if not self._subs and not self._waiters and self._link is not None:
            self._link.finish()  # nobody follows anything: let the connection go

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

    def _deliver(self, channel: bytes, data: bytes) -> None:
        subs = self._subs.get(channel)
        if not subs:
            return
        run_id = channel.decode("utf-8", "replace")[len(CHANNEL_PREFIX) :]
        deliver(self._backend, subs, run_id, data)


def deliver(backend: RedisBackend, subs: list[LiveSub], run_id: str, data: bytes) -> None:
    """One live message to a channel's local followers, decoded once for all of them."""
    if all(sub.models for sub in subs):  # our followers only: no wire dict needed
        model = backend.decode_message_model(run_id, data)
        if model is None:
            return
        for sub in subs:
            sub.offer(model)
        return
    record = backend.decode_message(run_id, data)
    if record is None:
        return
    for sub in subs:
        sub.offer(record.model if sub.models and record.model is not None else record)
