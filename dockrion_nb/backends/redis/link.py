"""Connections we read ourselves once redis-py has set them up.

redis-py connects (TCP, TLS or a Unix socket, AUTH, SELECT, client name), then ``Link`` takes
the transport over: every chunk the server sends is parsed with hiredis in the socket's read
callback. On the two hot paths this removes event-loop steps that redis-py's streams add: with
a socket timeout set, each redis-py command write runs as a task of its own, and each read
waits for a reader task to be woken. ``PubSubHub`` reads its messages this way, and
``CommandLink`` carries the append script, so a published event reaches its followers sooner
and the publisher's next steps do not run ahead of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from .script import pack


class Link(asyncio.Protocol):
    """A connected socket whose replies go to ``on_reply`` as soon as they are parsed."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self._on_reply = on_reply
        self._parser = hiredis.Reader()
        self._transport: asyncio.WriteTransport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.heard = False  # any reply since the owner last cleared it

    def take_over(self, conn: AbstractConnection) -> None:
        """Read ``conn``'s socket from now on; ``conn`` is only disconnected after this."""
        writer = conn._writer
        transport = writer.transport if writer is not None else None
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            raise RedisConnectionError("the connection closed while it was set up")
        self._transport = transport
        transport.set_protocol(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """For a link opened with ``loop.create_connection`` (``take_over`` sets it itself)."""
        if isinstance(transport, asyncio.WriteTransport):
            self._transport = transport

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise RedisConnectionError("the connection to Redis is closed")
        self._transport.write(data)

    def send(self, *args: str | bytes | int) -> None:
        """One command, if the link is open (else the owner's reconnect takes care of it)."""
        if self.open:
            self.write(pack(*args))

    def finish(self) -> None:
        """Close on purpose; ``lost`` then holds None."""
        self._end(None)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not False:
                self.heard = True
                self._on_reply(reply)
        except Exception as exc:  # a protocol error or an unexpected reply: drop the link
            self._end(InvalidResponse(f"unexpected data from the server ({exc!r})"))

    def eof_received(self) -> bool | None:
        return None  # the server hung up: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or RedisConnectionError("Connection closed by server."))

    def _end(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._transport is not None:
            self._transport.close()


class CommandLink(Link):
    """Commands whose replies come back in the order they were written (Redis's guarantee),
    so concurrent callers pipeline on one connection and each awaits only its own reply."""

    def __init__(self) -> None:
        super().__init__(self._settle)
        # Each caller's future and how many replies before its own to pass over.
        self._pending: deque[tuple[asyncio.Future[Any], int]] = deque()

    async def call(self, packed: bytes, *, skip: int = 0) -> Any:
        """Write ``packed`` (one or more commands) and return the last reply; a Redis error
        reply raises ``ResponseError``. ``skip`` is how many replies come before the last."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.write(packed)
        self._pending.append((fut, skip))
        reply = await fut
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    def _settle(self, reply: Any) -> None:
        fut, skip = self._pending[0]  # a reply nobody asked for ends the link (IndexError)
        if skip:
            self._pending[0] = (fut, skip - 1)
            return
        self._pending.popleft()
        if not fut.done():  # a caller that timed out or was cancelled has gone
            fut.set_result(reply)

    def _end(self, exc: BaseException | None) -> None:
        super()._end(exc)
        pending, self._pending = self._pending, deque()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(exc or RedisConnectionError("the connection was closed"))
