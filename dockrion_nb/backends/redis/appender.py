"""Appending events: one server-side script per batch numbers, stores and publishes them, sent
on a command connection of the backend's own (a ``CommandLink``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...events import EventValidationError
from ..base import (
    BackendClosedError,
    BackendConnectionError,
    BackendError,
    BackendPublishError,
    EventDict,
)
from ..gapless import sequence_of
from .link import CommandLink
from .script import APPEND_LUA, APPEND_SHA, PING, RETRY_WINDOW, WINDOW_ARG, dumps, pack

if TYPE_CHECKING:
    from .backend import RedisBackend

FLOORS_KEPT = 10_000  # runs whose highest sequence is remembered (a few bytes each)


def _retry_id(events: Sequence[EventDict]) -> str:
    """The id the script recognises a retried batch by: its last event's, when it is one the
    script can find in the stored JSON as written (a plain id, as ours are)."""
    if not events:
        return ""
    ident = events[-1].get("id")
    if isinstance(ident, str) and ident.isascii() and '"' not in ident and "\\" not in ident:
        return ident
    return ""


def widen_retry(args: list[str | int]) -> None:
    """Make a script call about to be sent again look for its batch among the newest
    ``RETRY_WINDOW`` entries: the first attempt may have run, and others may have written
    since."""
    args[WINDOW_ARG] = RETRY_WINDOW


class Appender:
    """Runs the append script. Concurrent appends pipeline on one link, each awaiting its own
    reply: no pool locking and no task per command on the path of every published event."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._conn: AbstractConnection | None = None  # redis-py's, for the handshake
        self._link: CommandLink | None = None
        self._connecting = asyncio.Lock()
        # The highest sequence written to each run: the script numbers on from at least here,
        # so a server that restarts without persistence (and so forgets the run) does not
        # number anew under followers that have already seen those sequences.
        self._floors: dict[str, int] = {}
        # Each run's key names (stream, counter, run state), channel and publish command, from
        # the backend's layout, made once.
        self._names: dict[str, tuple[str, str, str, str, str]] = {}
        # Retry ids of batches whose append failed after it was sent (a timeout, a dropped
        # connection): they may be stored, so the next append of the same batch has the script
        # look through the newest RETRY_WINDOW entries for it, not only the newest one.
        self._uncertain: dict[str, None] = {}

    async def append(
        self, run_id: str, events: Sequence[EventDict], *, publish: bool, assign: bool
    ) -> None:
        """Store (and with ``publish`` also publish) ``events`` in one round trip. With
        ``assign``, events without a sequence get the run's next ones, written into them."""
        backend = self._backend
        names = self._names.get(run_id)
        if names is None:
            names = self._names_of(run_id)
        stream, counter, runstate, channel, command = names
        retry_id = _retry_id(events)
        args: list[str | int] = [
            backend.max_events_per_run,
            backend.stream_ttl_seconds,
            channel if publish else "",
            "1" if assign else "0",
            self._floors.get(run_id, 0),
            retry_id,
            command,
            RETRY_WINDOW if retry_id in self._uncertain else 1,
        ]
        for event in events:
            seq = sequence_of(event)
            if seq or not assign:
                body = dumps(event)
            else:
                body = dumps({k: v for k, v in event.items() if k != "sequence"})
            args += [body, seq, str(event.get("type") or "unknown")]
        try:
            seqs = await self._call([stream, counter, runstate], args)
        except ResponseError as exc:
            if str(exc).startswith("SEQUENCE_LIMIT"):
                raise EventValidationError(
                    f"run {run_id!r} {str(exc).removeprefix('SEQUENCE_LIMIT the run ')}: clear "
                    "it (clear_run) or publish to a new run id"
                ) from None
            raise self._publish_error(run_id, exc) from None
        except (RedisError, OSError) as exc:
            if isinstance(exc, RedisTimeoutError | RedisConnectionError | OSError):
                self._maybe_stored(retry_id)  # sent, perhaps run: a retry must look further back
            raise self._publish_error(run_id, exc) from None
        self._uncertain.pop(retry_id, None)
        top = max((int(seq) for seq in seqs), default=0)
        if top > self._floors.get(run_id, 0):
            if run_id not in self._floors and len(self._floors) >= FLOORS_KEPT:
                del self._floors[next(iter(self._floors))]  # the run written to longest ago
            self._floors[run_id] = top
        if assign:
            for event, seq in zip(events, seqs, strict=True):
                event["sequence"] = int(seq)

    def _maybe_stored(self, retry_id: str) -> None:
        if retry_id:
            self._uncertain[retry_id] = None
            if len(self._uncertain) > FLOORS_KEPT:
                del self._uncertain[next(iter(self._uncertain))]

    def _names_of(self, run_id: str) -> tuple[str, str, str, str, str]:
        layout = self._backend.layout
        names = (
            layout.stream(run_id),
            layout.counter(run_id),
            layout.runstate(run_id),
            layout.channel(run_id),
            layout.publish_command,
        )
        if len(self._names) >= FLOORS_KEPT:
            self._names.clear()
        self._names[run_id] = names
        return names

    def _publish_error(self, run_id: str, exc: BaseException) -> BackendError:
        error = self._backend.error_for(exc, f"publishing to run {run_id!r}")
        if not isinstance(error, BackendConnectionError | BackendClosedError):
            error = BackendPublishError(error.message, backend="redis")
        return error

    @property
    def connected(self) -> bool:
        """Whether the command link is open now."""
        return self._link is not None and self._link.open

    def forget(self, run_id: str) -> None:
        """The run was cleared on purpose: its numbering may start again from 1."""
        self._floors.pop(run_id, None)

    async def _call(
        self, keys: list[str], args: list[str | int], *, budget: float | None = None
    ) -> Any:
        command = pack("EVALSHA", APPEND_SHA, len(keys), *keys, *args)
        timeout = self._backend.command_timeout if budget is None else budget
        link = await self._open_link()
        try:
            async with asyncio.timeout(timeout):
                try:
                    # The PING (same packet, same round trip) queues our reply before the
                    # script PUBLISHes; Redis writes the most recently queued client first, so
                    # followers get the event before this reply and the publisher's next steps
                    # are not in their way.
                    return await link.call(PING + command, skip=1)
                except ResponseError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    # Nothing ran: load it (after a restart or FLUSH) and go on.
                    await link.call(pack("SCRIPT", "LOAD", APPEND_LUA))
                    return await link.call(command)
        except TimeoutError:
            link.finish()  # the server may be stuck: the next call starts afresh
            raise RedisTimeoutError(
                f"no reply within {timeout:g} s (command timeout); the events may still be "
                "stored when the server answers: publishing the same events again is safe, "
                "they are not stored twice"
            ) from None

    async def _open_link(self) -> CommandLink:
        """The open link, connecting a new one (through redis-py) when there is none."""
        link = self._link
        if link is not None and link.open:
            return link
        async with self._connecting:
            if self._link is not None and self._link.open:
                return self._link
            self._backend.check_open()
            await self._drop()
            conn = self._backend.new_connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                link = CommandLink()
                link.take_over(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                raise
            self._conn, self._link = conn, link
            return link

    async def _drop(self) -> None:
        link, conn = self._link, self._conn
        self._link = self._conn = None
        if link is not None:
            link.finish()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def close(self) -> None:
        await self._drop()
