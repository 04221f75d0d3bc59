"""Redis backend: Dockrion's wire format, one round trip per publish, gapless resilient follow.

Layout (identical to ``dockrion_events.backends.redis``, so each side reads what the other
writes): every event is an entry of the stream ``stream:run:{run_id}`` with the fields ``data``
(the event JSON), ``sequence`` and ``type``, and is published as JSON on the channel
``events:run:{run_id}``. We add one key, ``seq:run:{run_id}`` (not matched by ``stream:run:*``),
the run's sequence counter.

What we do beyond the reference, and why:

- ``append`` runs one Lua script per batch: it assigns sequences on the server (so writers in
  different processes never collide), XADDs with an exact ``MAXLEN`` (at most
  ``max_events_per_run`` entries are kept, never more), EXPIREs, and PUBLISHes, in one round
  trip. The client sends each event's JSON without ``sequence``; the script splices
  ``{"sequence":N,`` in front, so the stored and published JSON carry the assigned number.
  A PING travels in the same packet ahead of the script, so that Redis sends the Pub/Sub
  message before the script's reply (followers hear the event before the publisher resumes).
- The counter starts from ``max(counter key, last stream entry's sequence)`` on every batch,
  so runs written by Dockrion (which has no counter key) continue correctly.
- Replay near the end of a long stream reads the stream backwards in small chunks and stops at
  the requested sequence: its cost follows what is returned, not the stream's length.
- Our bus and followers get stored events and live messages as models validated straight from
  the JSON bytes (one pass, no dict; ``follow_models`` hands them to the bus with no layer of
  its own); ``get_events`` and ``subscribe`` (Dockrion's protocol) give wire dicts. Both paths
  accept and skip the same entries and messages.
- One Pub/Sub connection per backend multiplexes every followed run and decodes each message
  once; followers get their own queues. When that connection drops, it reconnects with bounded
  exponential backoff and jitter, re-subscribes, and every follower fills what it missed from
  the stream: no loss, no duplicate. ``state`` says ``live`` or ``reconnecting``. A follower
  more than ``QUEUE_LIMIT`` events behind stops queueing and re-reads the stream once it has
  drained (a ``gap`` event if trimming took some). After reading the stream, a follower that
  hears nothing for ``SETTLE_SECONDS`` reads it once more, because Dockrion publishes before it
  stores.
- Errors raise (``BackendConnectionError``/``BackendPublishError``) with the URL's password
  masked; nothing is dropped silently. Stream entries or messages that are not valid events are
  skipped, counted (``skipped_entries``/``skipped_messages``) and logged.

Connections: commands share one blocking pool of ``connection_pool_size`` (a burst waits for a
free connection instead of failing); the Pub/Sub connection is one more, outside the pool.
Everything speaks RESP2. redis-py's own command retries are off: a retried script whose first
reply was lost would store its events twice; stale pooled connections are still replaced
before use, and followers retry by themselves.

Not supported: Redis Cluster (the counter key and the stream key may live in different slots).
Pub/Sub channels ignore the database number, as in Dockrion, so two databases on one server
should not share run ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import json
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..events import (
    EVENT_CLASSES,
    BaseEvent,
    CustomEvent,
    EventRecord,
    EventValidationError,
    as_model,
    as_wire,
    parse_event,
    validate_run_id,
)
from ..redaction import mask_url, scrub
from .base import (
    BackendClosedError,
    BackendConnectionError,
    BackendError,
    BackendPublishError,
    BackendSubscribeError,
    EventDict,
    RunSummary,
    StoredEvent,
    run_id_of,
)
from .gapless import Joiner, sequence_of

log = logging.getLogger("dockrion_nb.redis")

STREAM_PREFIX = "stream:run:"
CHANNEL_PREFIX = "events:run:"
COUNTER_PREFIX = "seq:run:"
BATCH_LIMIT = 1000  # events per script call; a larger append takes one round trip per 1000
READ_CHUNK = 1000  # stream entries per XRANGE/XREVRANGE call
FIRST_TAIL_CHUNK = 16
QUEUE_LIMIT = 10_000  # a follower further behind re-reads from the stream instead
SETTLE_SECONDS = 0.5  # see RedisBackend._drain
HEALTH_INTERVAL = 15.0  # seconds of Pub/Sub silence before we PING the server
BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0

_TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    InvalidResponse,
    OSError,
    BackendConnectionError,
)

# KEYS: stream, counter. ARGV: maxlen, ttl, channel ('' = store only), assign ('1'/'0'),
# then (json, given sequence, type) per event. Returns the sequences as stored.
_APPEND_LUA = """
local stream, counter_key = KEYS[1], KEYS[2]
local maxlen, ttl, channel, assign = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local counter = tonumber(redis.call('GET', counter_key) or '0') or 0
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if last[1] then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'sequence' then
      local s = tonumber(fields[i + 1])
      if s and s > counter then counter = s end
    end
  end
end
local out = {}
for i = 5, #ARGV, 3 do
  local body, given, etype = ARGV[i], tonumber(ARGV[i + 1]) or 0, ARGV[i + 2]
  local seq, data = given, body
  if given > 0 then
    if given > counter then counter = given end
  elseif assign then
    counter = counter + 1
    seq = counter
    local head = string.format('{"sequence":%d', seq)
    if body == '{}' then data = head .. '}' else data = head .. ',' .. string.sub(body, 2) end
  end
  local seqtext = string.format('%d', seq)
  redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'data', data, 'sequence', seqtext,
             'type', etype)
  if channel ~= '' then redis.call('PUBLISH', channel, data) end
  out[#out + 1] = seq
end
redis.call('EXPIRE', stream, ttl)
if counter > 0 then redis.call('SET', counter_key, string.format('%d', counter), 'EX', ttl) end
return out
"""


def stream_key(run_id: str) -> str:
    return f"{STREAM_PREFIX}{run_id}"


def pubsub_channel(run_id: str) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


def counter_key(run_id: str) -> str:
    return f"{COUNTER_PREFIX}{run_id}"


def backoff_delay(attempt: int) -> float:
    """Exponential, capped at ``BACKOFF_CAP`` seconds, with jitter so followers spread out."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0))


# An event as read from Redis, carrying its parsed model so the bus parses it once.
StreamRecord = EventRecord


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Decoding a long stream allocates one model per entry, which sets off full collector
    passes (about a third of a 100,000-event replay); they wait until the batch is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Signal(enum.Enum):
    RESYNC = "resync"  # the live feed may have missed events: fill from the stream
    CLOSED = "closed"


_Item = StreamRecord | BaseEvent | _Signal


class _LiveSub:
    """One local follower of a channel: a bounded queue; beyond it, the stream catches up."""

    __slots__ = ("behind", "channel", "items", "models", "waiter")

    def __init__(self, channel: bytes, models: bool = False) -> None:
        self.channel = channel
        self.models = models  # models only (our followers), else wire dicts (Dockrion's)
        self.items: deque[_Item] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.behind = False

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def offer(self, record: StreamRecord | BaseEvent) -> None:
        if self.behind:
            return
        if len(self.items) >= QUEUE_LIMIT:
            self.behind = True  # drop now, re-read from the stream once drained
        else:
            self.items.append(record)
        self._wake()

    def signal(self, signal: _Signal) -> None:
        self.items.append(signal)
        self._wake()

    async def get(self) -> _Item:
        while not self.items:
            if self.behind:
                self.behind = False  # live events queue again before the stream is read
                return _Signal.RESYNC
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class _PubSubHub:
    """The backend's one Pub/Sub connection, shared by every local follower."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._subs: dict[bytes, list[_LiveSub]] = {}
        self._confirmed: set[bytes] = set()
        self._requested: set[bytes] = set()
        self._resync_on_ack: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._answered = False
        self._unsubscribing: set[asyncio.Task[None]] = set()
        self.connects = 0

    @property
    def connection(self) -> AbstractConnection | None:
        return self._conn

    def subscribers(self, channel: bytes) -> list[_LiveSub]:
        return list(self._subs.get(channel, ())) if channel in self._confirmed else []

    async def attach(self, run_id: str, *, models: bool = False) -> _LiveSub:
        """Subscribe (if this process has not yet) and wait for the server to confirm it."""
        channel = pubsub_channel(run_id).encode()
        sub = _LiveSub(channel, models)
        self._subs.setdefault(channel, []).append(sub)
        if channel in self._confirmed:
            return sub
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dockrion-nb redis pubsub")
        elif self._conn is not None and channel not in self._requested:
            self._requested.add(channel)
            await self._send("SUBSCRIBE", channel)
        try:
            await asyncio.wait_for(waiter, self._backend.command_timeout)
        except BaseException as exc:
            self.detach(sub)
            if isinstance(exc, asyncio.TimeoutError):
                raise BackendSubscribeError(
                    f"Redis at {self._backend.masked_url} did not confirm the subscription to "
                    f"run {run_id!r} within {self._backend.command_timeout:g} s",
                    backend="redis",
                ) from None
            raise
        return sub

    def detach(self, sub: _LiveSub) -> None:
        subs = self._subs.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if subs:
            return
        del self._subs[sub.channel]
        self._confirmed.discard(sub.channel)
        self._requested.discard(sub.channel)
        if self._conn is not None and not self._closed:
            with contextlib.suppress(RuntimeError):
                task = asyncio.get_running_loop().create_task(self._unsubscribe(sub.channel))
                self._unsubscribing.add(task)
                task.add_done_callback(self._unsubscribing.discard)

    async def _unsubscribe(self, channel: bytes) -> None:
        # Checked when it runs, not when scheduled: a follower may have re-subscribed since,
        # and an UNSUBSCRIBE written after its SUBSCRIBE would silently cut it off.
        if channel not in self._subs and not self._closed:
            await self._send("UNSUBSCRIBE", channel)

    async def _send(self, *args: Any) -> None:
        conn = self._conn
        if conn is None or not conn.is_connected:
            return  # the reader reconnects and subscribes to everything wanted
        with contextlib.suppress(*_TRANSIENT):
            await conn.send_command(*args, check_health=False)

    async def close(self) -> None:
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.signal(_Signal.CLOSED)
        self._fail_waiters(BackendClosedError("the Redis backend is closed", backend="redis"))
        # An UNSUBSCRIBE still in flight must not write to the connection closed below.
        pending = list(self._unsubscribing)
        for unsubscribing in pending:
            unsubscribing.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.disconnect()
            self._conn = None

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
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Followers that are starting fail fast; running ones wait for us.
                    self._fail_waiters(backend.error_for(exc, "subscribing"))
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                    if not self._subs:
                        break
                    backend.set_state("reconnecting")
                    await asyncio.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                self.connects += 1
                self._conn = conn
                self._answered = False
                self._confirmed.clear()
                channels = list(self._subs)
                self._requested = set(channels)
                if self.connects > 1:
                    self._resync_on_ack = set(channels)
                try:
                    if channels:
                        await conn.send_command("SUBSCRIBE", *channels, check_health=False)
                    backend.set_state("live")
                    await self._read(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.info(
                        "Redis Pub/Sub connection to %s lost (%s); reconnecting",
                        backend.masked_url,
                        scrub(str(exc), backend.url),
                    )
                finally:
                    self._conn = None
                    self._confirmed.clear()
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                # A server that accepts and then drops us at once must not make us spin.
                attempt = 0 if self._answered else attempt + 1
                if not self._closed and self._subs:
                    backend.set_state("reconnecting")
                    await asyncio.sleep(backoff_delay(attempt))
        finally:
            if not self._closed:
                backend.set_state("idle")

    async def _read(self, conn: AbstractConnection) -> None:
        ping_sent = False
        while not self._closed:
            try:
                reply = await conn.read_response(timeout=HEALTH_INTERVAL)
            except ResponseError as exc:  # e.g. an ACL that denies a channel: tell, go on
                self._fail_waiters(
                    BackendSubscribeError(
                        f"Redis at {self._backend.masked_url} refused a subscription: "
                        f"{scrub(str(exc), self._backend.url)}",
                        backend="redis",
                    )
                )
                continue
            if reply is None:
                if ping_sent:
                    raise RedisTimeoutError("no answer to PING on the Pub/Sub connection")
                await conn.send_command("PING", check_health=False)
                ping_sent = True
                continue
            self._answered = True
            ping_sent = False
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                self._deliver(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirm(reply[1])
            if not self._subs and not self._waiters:
                return  # nobody follows anything: let the connection go

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
                sub.signal(_Signal.RESYNC)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        subs = self._subs.get(channel)
        if not subs:
            return
        run_id = channel.decode("utf-8", "replace")[len(CHANNEL_PREFIX) :]
        if all(sub.models for sub in subs):  # our followers only: no wire dict needed
            model = self._backend.decode_message_model(run_id, data)
            if model is None:
                return
            for sub in subs:
                sub.offer(model)
            return
        record = self._backend.decode_message(run_id, data)
        if record is None:
            return
        for sub in subs:
            sub.offer(record.model if sub.models and record.model is not None else record)


class RedisBackend:
    """Pub/Sub for live delivery, Streams for replay, EXPIRE for retention; see module doc."""

    name = "redis"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        stream_ttl_seconds: int = 3600,
        max_events_per_run: int = 1000,
        connection_pool_size: int = 10,
        *,
        command_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if stream_ttl_seconds < 1:
            raise ValueError(f"stream_ttl_seconds must be >= 1, not {stream_ttl_seconds}")
        if max_events_per_run < 1:
            raise ValueError(f"max_events_per_run must be >= 1, not {max_events_per_run}")
        if connection_pool_size < 1:
            raise ValueError(f"connection_pool_size must be >= 1, not {connection_pool_size}")
        self.url = url
        self.masked_url = mask_url(url)
        self.stream_ttl_seconds = stream_ttl_seconds
        self.max_events_per_run = max_events_per_run
        self.connection_pool_size = connection_pool_size
        self.command_timeout = command_timeout
        try:
            # Blocking: a burst of more concurrent commands than connections waits for one.
            self._pool = BlockingConnectionPool.from_url(
                url,
                max_connections=connection_pool_size,
                timeout=command_timeout,
                socket_timeout=command_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),  # a retried script could store an event twice
            )
        except (ValueError, RedisError) as exc:
            raise BackendConnectionError(
                f"invalid Redis URL {self.masked_url}: {scrub(str(exc), url)} (use redis://, "
                "rediss:// or unix://, e.g. redis://:password@localhost:6379/0)",
                backend="redis",
            ) from None
        # RESP2 everywhere: plain arrays for Pub/Sub, and servers older than 6 still work.
        self._pool.connection_kwargs["protocol"] = 2
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._append = self._client.register_script(_APPEND_LUA)
        # Stream reads keep Redis's flat field lists: decode_model reads them in place, and
        # redis-py's per-entry dict would cost more than the rest of a replay's reading.
        self._raw = aioredis.Redis(connection_pool=self._pool)
        for command in ("XRANGE", "XREVRANGE"):
            self._raw.set_response_callback(command, _as_sent)
        self._script_conn: AbstractConnection | None = None
        self._script_conn_busy = False
        self._hub = _PubSubHub(self)
        self._closed = False
        self._state = "idle"
        self._listeners: list[Callable[[str], None]] = []
        self.skipped_entries = 0
        self.skipped_messages = 0
        self.entries_read = 0
        self.fallback_reason: str | None = None

    # -- state and settings -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``idle`` (no follower yet), ``live``, ``reconnecting`` or ``closed``."""
        return self._state

    def add_state_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(state)`` on every change (on the backend's loop); returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def set_state(self, state: str) -> None:
        if state == self._state or (self._closed and state != "closed"):
            return
        self._state = state
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a broken listener must not break delivery
                log.exception("state listener failed")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "url": self.masked_url,
            "stream_ttl_seconds": self.stream_ttl_seconds,
            "max_events_per_run": self.max_events_per_run,
            "connection_pool_size": self.connection_pool_size,
            "trim": "exact MAXLEN",
            "state": self._state,
            "skipped_entries": self.skipped_entries,
            "skipped_messages": self.skipped_messages,
        }

    def new_connection(self) -> AbstractConnection:
        """A connection outside the pool (for Pub/Sub), with the pool's settings."""
        conn: AbstractConnection = self._pool.connection_class(**self._pool.connection_kwargs)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError("the Redis backend is closed", backend="redis")

    def error_for(self, exc: BaseException, doing: str) -> BackendError:
        """One readable message, password masked, for a failure while ``doing`` something."""
        if isinstance(exc, BackendError):
            return exc
        where = self.masked_url
        detail = scrub(str(exc) or type(exc).__name__, self.url).rstrip(".")
        lowered = detail.lower()
        if isinstance(exc, AuthenticationError) or lowered.startswith(("noauth", "wrongpass")):
            return BackendConnectionError(
                f"Redis at {where} rejected the credentials while {doing} ({detail}); "
                "check the user and password in the URL",
                backend="redis",
            )
        if isinstance(exc, InvalidResponse):
            return BackendConnectionError(
                f"the server at {where} does not answer like Redis while {doing} ({detail}); "
                "check the host and port",
                backend="redis",
            )
        if isinstance(exc, RedisTimeoutError | asyncio.TimeoutError | TimeoutError):
            return BackendConnectionError(
                f"Redis at {where} did not answer in time while {doing} ({detail})",
                backend="redis",
            )
        if isinstance(exc, RedisConnectionError | OSError):
            if "111" in detail or "refused" in lowered or "connect call failed" in lowered:
                reason = "connection refused; is the server running and the URL right?"
            elif "closed by server" in lowered:
                reason = "the server closed the connection; is this a Redis port?"
            else:
                reason = detail
            return BackendConnectionError(
                f"cannot reach Redis at {where} while {doing}: {reason}", backend="redis"
            )
        if isinstance(exc, ResponseError):
            return BackendPublishError(
                f"Redis at {where} refused a command while {doing}: {detail}", backend="redis"
            )
        return BackendError(f"Redis at {where} failed while {doing}: {detail}", backend="redis")

    # -- decoding -------------------------------------------------------------------------------

    def _decode(self, run_id: str, data: Any, field_sequence: int) -> StreamRecord:
        if not isinstance(data, bytes | str):
            raise EventValidationError("no 'data' field")
        try:
            obj = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise EventValidationError(f"'data' is not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise EventValidationError("'data' is not a JSON object")
        if field_sequence > 0 and not sequence_of(obj):
            obj["sequence"] = field_sequence
        model = parse_event(obj)
        if model.run_id != run_id:
            raise EventValidationError(f"event of run {model.run_id!r} in run {run_id!r}")
        return StreamRecord(obj, model)

    def decode_entry(self, run_id: str, entry_id: Any, fields: Any) -> StreamRecord | None:
        """A stream entry as an event, or None (skipped, counted and logged) if it is not one.

        ``fields`` is the entry's field list as Redis sends it, or a dict of it."""
        try:
            data, seq, _ = _entry_fields(fields)
            return self._decode(run_id, data, _field_int(seq))
        except EventValidationError as exc:
            self._skip_entry(run_id, entry_id, exc)
            return None

    def decode_model(self, run_id: str, entry_id: Any, fields: Any) -> BaseEvent | None:
        """The model of a stream entry, or None (skipped as in ``decode_entry``).

        Entries as our script and Dockrion write them are validated straight from their JSON
        bytes with the class their ``type`` field names (no dict, no second pass); whatever
        that cannot vouch for takes ``decode_entry``'s path, so both accept and reject alike.
        """
        try:
            data, seq, kind = _entry_fields(fields)
        except EventValidationError as exc:
            self._skip_entry(run_id, entry_id, exc)
            return None
        field_sequence = _field_int(seq)
        model = _fast_model(run_id, data, field_sequence, kind)
        if model is not None:
            return model
        record = self.decode_entry(run_id, entry_id, fields)
        return None if record is None else record.model

    def _skip_entry(self, run_id: str, entry_id: Any, exc: EventValidationError) -> None:
        self.skipped_entries += 1
        _log_skip(
            self.skipped_entries,
            "skipped stream entry %r of run %s: not a valid event (%s); %d skipped so far",
            entry_id,
            run_id,
            exc,
            self.skipped_entries,
        )

    def decode_message_model(self, run_id: str, data: bytes) -> BaseEvent | None:
        """``decode_message``'s model, validated straight from the JSON bytes when it can be
        vouched for (as in ``decode_model``; the class is guessed from the text)."""
        model = _fast_model(run_id, data, 0, _type_hint(data))
        if model is not None:
            return model
        record = self.decode_message(run_id, data)
        return None if record is None else record.model

    def decode_message(self, run_id: str, data: bytes) -> StreamRecord | None:
        try:
            return self._decode(run_id, data, 0)
        except EventValidationError as exc:
            self.skipped_messages += 1
            _log_skip(
                self.skipped_messages,
                "skipped Pub/Sub message on run %s: not a valid event (%s); %d skipped so far",
                run_id,
                exc,
                self.skipped_messages,
            )
            return None

    # -- reading the stream ----------------------------------------------------------------------

    async def _read_from(self, run_id: str, from_sequence: int) -> list[EventDict]:
        """Stored events with ``sequence >= from_sequence``, ordered by sequence, as wire
        dicts (each carrying its model). Raises redis-py errors."""
        entries = await self._read_entries(run_id, from_sequence)
        out: list[EventDict] = []
        in_order = True
        last = -1
        decode = self.decode_entry
        with _gc_paused():
            for entry_id, fields in entries:
                record = decode(run_id, entry_id, fields)
                if record is None:
                    continue
                seq = sequence_of(record)
                if seq >= from_sequence:
                    out.append(record)
                    in_order = in_order and seq >= last
                    last = seq
        if not in_order:
            out.sort(key=sequence_of)
        return out

    async def _read_models(self, run_id: str, from_sequence: int) -> list[BaseEvent]:
        """``_read_from`` as models only: what our bus and followers use (no wire dicts)."""
        entries = await self._read_entries(run_id, from_sequence)
        out: list[BaseEvent] = []
        in_order = True
        last = -1
        decode = self.decode_model
        with _gc_paused():
            for entry_id, fields in entries:
                model = decode(run_id, entry_id, fields)
                if model is None:
                    continue
                seq = model.sequence
                if seq >= from_sequence:
                    out.append(model)
                    in_order = in_order and seq >= last
                    last = seq
        if not in_order:
            out.sort(key=_model_sequence)
        return out

    async def _read_entries(self, run_id: str, from_sequence: int) -> list[Any]:
        """The raw entries holding ``sequence >= from_sequence`` (and perhaps a few before).

        From the start it reads the whole stream in chunks; otherwise it walks back from the
        end and stops once it passes ``from_sequence``.
        """
        key = stream_key(run_id)
        if from_sequence <= 1:
            return await self._read_all(key)
        return await self._read_tail(key, from_sequence)

    async def _read_all(self, key: str) -> list[Any]:
        entries: list[Any] = []
        start: bytes | str = "-"
        while True:
            chunk: list[Any] = (
                await self._raw.xrange(key, min=start, max="+", count=READ_CHUNK) or []
            )
            self.entries_read += len(chunk)
            entries.extend(chunk)
            if len(chunk) < READ_CHUNK:
                return entries
            start = b"(" + _as_bytes(_entry_id(chunk[-1]))

    async def _read_tail(self, key: str, from_sequence: int) -> list[Any]:
        entries: list[Any] = []
        end: bytes | str = "+"
        count = FIRST_TAIL_CHUNK
        while True:
            chunk: list[Any] = await self._raw.xrevrange(key, max=end, min="-", count=count) or []
            self.entries_read += len(chunk)
            entries.extend(chunk)
            if len(chunk) < count:
                break
            low = _entry_sequence(chunk[-1])
            if 0 < low < from_sequence:
                break
            end = b"(" + _as_bytes(_entry_id(chunk[-1]))
            # Sequences are dense for our writers: ask for about what is left, in one go.
            wanted = low - from_sequence + 2 if low > 0 else READ_CHUNK
            count = max(FIRST_TAIL_CHUNK, min(READ_CHUNK, wanted))
        entries.reverse()
        return entries

    # -- Dockrion's protocol ----------------------------------------------------------------------

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """PUBLISH only (store with ``store_event``), as Dockrion's backend does."""
        self._check_open()
        try:
            await self._client.publish(f"events:{channel}", _dumps(event))
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"publishing to {channel!r}") from None

    async def store_event(self, run_id: str, event: dict[str, Any]) -> None:
        """XADD + EXPIRE in one round trip; the event keeps its sequence (even 0), as in
        Dockrion, and the run's counter moves up to it. Failures raise (Dockrion logs them)."""
        self._check_open()
        await self._run_script(run_id, [event], publish=False, assign=False)

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Live events on ``channel`` from now on (Dockrion's semantics); survives reconnects:
        what was published while the connection was down is read from the stream."""
        self._check_open()
        return self._live(run_id_of(channel))

    async def get_events(self, run_id: str, from_sequence: int = 0) -> list[dict[str, Any]]:
        self._check_open()
        try:
            return await self._read_from(run_id, from_sequence)
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None

    async def clear_run(self, run_id: str) -> None:
        self._check_open()
        try:
            await self._client.delete(stream_key(run_id), counter_key(run_id))
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"clearing run {run_id!r}") from None

    async def close(self) -> None:
        """End every follower, close the Pub/Sub connection and the pool."""
        if self._closed:
            return
        self._closed = True
        await self._hub.close()
        with contextlib.suppress(Exception):
            await self._client.aclose()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()
        if self._script_conn is not None:
            with contextlib.suppress(Exception):
                await self._script_conn.disconnect()
        self.set_state("closed")

    # -- ours --------------------------------------------------------------------------------

    async def append(self, run_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Assign, store and publish in one round trip per ``BATCH_LIMIT`` events."""
        self._check_open()
        validate_run_id(run_id)
        wire = [as_wire(e) for e in events]
        for start in range(0, len(wire), BATCH_LIMIT):
            await self._run_script(
                run_id, wire[start : start + BATCH_LIMIT], publish=True, assign=True
            )
        return list(wire)

    async def read(self, run_id: str, from_sequence: int = 0) -> list[StoredEvent]:
        """Models only: the bus needs no wire dicts."""
        self._check_open()
        try:
            return list(await self._read_models(run_id, from_sequence))
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None

    async def _run_script(
        self, run_id: str, events: Sequence[EventDict], *, publish: bool, assign: bool
    ) -> None:
        args: list[str | int] = [
            self.max_events_per_run,
            self.stream_ttl_seconds,
            pubsub_channel(run_id) if publish else "",
            "1" if assign else "0",
        ]
        for event in events:
            seq = sequence_of(event)
            if seq or not assign:
                body = _dumps(event)
            else:
                body = _dumps({k: v for k, v in event.items() if k != "sequence"})
            args += [body, seq, str(event.get("type") or "unknown")]
        try:
            seqs = await self._call_script([stream_key(run_id), counter_key(run_id)], args)
        except (RedisError, OSError) as exc:
            error = self.error_for(exc, f"publishing to run {run_id!r}")
            if not isinstance(error, BackendConnectionError | BackendClosedError):
                error = BackendPublishError(error.message, backend="redis")
            raise error from None
        if assign:
            for event, seq in zip(events, seqs, strict=True):
                event["sequence"] = int(seq)

    async def _call_script(self, keys: list[str], args: list[str | int]) -> Any:
        """EVALSHA on the backend's own connection while no other append uses it, else through
        the pool. The pool's locking and bookkeeping cost about 25 µs a call, and every one
        delays the event reaching its followers. The connection is checked before use as the
        pool checks its own (left-over data or a server that hung up: reconnect), and redis-py
        drops it on any error or cancellation mid-command, so no reply is ever misread."""
        if self._script_conn_busy:
            return await self._append(keys=keys, args=args)
        self._script_conn_busy = True
        try:
            conn = self._script_conn
            if conn is None:
                conn = self._script_conn = self.new_connection()
            await conn.connect()  # type: ignore[no-untyped-call]
            try:
                stale = await conn.can_read()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                stale = True
            if stale:
                await conn.disconnect()
                await conn.connect()  # type: ignore[no-untyped-call]
            command = _pack("EVALSHA", self._append.sha, len(keys), *keys, *args)
            # The PING (same packet, same round trip) queues our reply before the script
            # PUBLISHes; Redis writes the most recently queued client first, so followers get
            # the event before this reply and the publisher's next steps are not in their way.
            await conn.send_packed_command(_PING + command, check_health=False)
            with contextlib.suppress(ResponseError):  # e.g. an ACL that denies PING
                await conn.read_response()
            try:
                return await conn.read_response()
            except NoScriptError:  # nothing ran: load it (after a restart or FLUSH) and go on
                load = _pack("SCRIPT", "LOAD", _APPEND_LUA)
                await conn.send_packed_command(load, check_health=False)
                await conn.read_response()
                await conn.send_packed_command(command, check_health=False)
                return await conn.read_response()
        finally:
            self._script_conn_busy = False

    def follow(
        self, run_id: str, from_sequence: int = 1, *, live: bool = True
    ) -> AsyncGenerator[BaseEvent, None]:
        """Models, each sequence once and in order (see ``RunLogBackend.follow``)."""
        self._check_open()
        validate_run_id(run_id)
        return self._follow(run_id, max(1, from_sequence), live)

    # The bus hands this to its subscribers as it is: no layer of its own per event.
    follow_models = follow

    async def _follow(
        self, run_id: str, from_sequence: int, live: bool
    ) -> AsyncGenerator[BaseEvent, None]:
        # Stored and live events come as models; only gap notices are dicts.
        joiner = Joiner(run_id, from_sequence, lambda k: self._read_models(run_id, k))
        if not live:
            try:
                async for event in joiner.fill():
                    yield as_model(event) if isinstance(event, dict) else event
            except (RedisError, OSError) as exc:
                raise self.error_for(exc, f"reading run {run_id!r}") from None
            return
        sub = await self._hub.attach(run_id, models=True)
        try:
            async for event in self._fill(joiner):
                yield as_model(event) if isinstance(event, dict) else event
            async for event in self._drain(sub, joiner, settle=True):
                yield as_model(event) if isinstance(event, dict) else event
        finally:
            self._hub.detach(sub)

    async def _live(self, run_id: str) -> AsyncGenerator[EventDict, None]:
        sub = await self._hub.attach(run_id)
        try:
            while True:  # until the first numbered event: it says where to resume from
                item = await sub.get()
                if item is _Signal.CLOSED:
                    return
                if item is _Signal.RESYNC:
                    continue
                if sequence_of(item):
                    sub.items.appendleft(item)
                    break
                yield item if isinstance(item, dict) else as_wire(item)  # always a dict
            joiner = Joiner(run_id, sequence_of(item), self._fetcher(run_id))
            async for event in self._drain(sub, joiner, settle=False):
                yield event if isinstance(event, dict) else as_wire(event)  # always a dict
        finally:
            self._hub.detach(sub)

    def _fetcher(self, run_id: str) -> Callable[[int], Any]:
        return lambda k: self._read_from(run_id, k)

    async def _drain(
        self, sub: _LiveSub, joiner: Joiner, *, settle: bool
    ) -> AsyncGenerator[StoredEvent, None]:
        """Live events through the joiner. With ``settle``, a follower that hears nothing for
        ``SETTLE_SECONDS`` after reading the stream reads it once more: a writer that
        publishes before it stores (Dockrion does) may have stored, after our read, an event
        it published before our subscription; nothing live would ever reveal it."""
        unsettled = settle
        while True:
            if unsettled:
                try:
                    item = await asyncio.wait_for(sub.get(), SETTLE_SECONDS)
                except TimeoutError:
                    unsettled = False
                    async for event in self._fill(joiner):
                        yield event
                    continue
                unsettled = False  # a later live event makes the joiner fill any hole
            else:
                item = await sub.get()
            if item is _Signal.CLOSED:
                return
            if item is _Signal.RESYNC:
                async for event in self._fill(joiner):
                    yield event
                unsettled = settle
                continue
            seq = sequence_of(item)
            if seq and seq == joiner.next_sequence and _type_of(item) != "gap":
                joiner.next_sequence = seq + 1  # the usual case, as joiner.accept would do
                yield item
                continue
            try:
                async for event in joiner.accept(item):
                    yield event
            except _TRANSIENT:
                # The event is stored (scripts store before they publish): read it back.
                async for event in self._fill(joiner):
                    yield event

    async def _fill(self, joiner: Joiner) -> AsyncGenerator[StoredEvent, None]:
        """Stored events from the joiner's next sequence, retrying while Redis is away."""
        attempt = 0
        while True:
            try:
                async for event in joiner.fill():
                    yield event
                if attempt and self._hub.connection is not None:
                    self.set_state("live")
                return
            except _TRANSIENT as exc:
                if self._closed:
                    return
                self.set_state("reconnecting")
                log.info(
                    "reading run %s from %s failed (%s); retrying",
                    joiner.run_id,
                    self.masked_url,
                    scrub(str(exc), self.url),
                )
                await asyncio.sleep(backoff_delay(attempt))
                attempt += 1

    async def list_runs(self, pattern: str | None = None) -> list[RunSummary]:
        """Runs with a stream, found with SCAN (never KEYS); ``pattern`` globs the run id."""
        self._check_open()
        try:
            keys: list[bytes] = []
            seen: set[bytes] = set()
            async for key in self._client.scan_iter(
                match=f"{STREAM_PREFIX}{pattern or '*'}", count=1000, _type="STREAM"
            ):
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
            out: list[RunSummary] = []
            for start in range(0, len(keys), 200):
                part = keys[start : start + 200]
                pipe = self._client.pipeline(transaction=False)
                for key in part:
                    pipe.xlen(key)
                    pipe.xrange(key, count=1)
                    pipe.xrevrange(key, count=1)
                    pipe.ttl(key)
                replies = await pipe.execute()
                for i, key in enumerate(part):
                    length, first, last, ttl = replies[4 * i : 4 * i + 4]
                    if not length:
                        continue
                    out.append(self._summary(key, length, first, last, ttl))
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, "listing runs") from None
        out.sort(key=lambda s: s.run_id)
        return out

    def _summary(self, key: bytes, length: int, first: Any, last: Any, ttl: int) -> RunSummary:
        run_id = key.decode("utf-8", "replace")[len(STREAM_PREFIX) :]

        def peek(entries: Any) -> tuple[int | None, str | None, str | None]:
            if not entries:
                return None, None, None
            fields = entries[0][1]
            seq = _field_int(fields.get(b"sequence"))
            kind = fields.get(b"type")
            timestamp = None
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                timestamp = json.loads(fields.get(b"data")).get("timestamp")
            return (
                seq,
                kind.decode("utf-8", "replace") if isinstance(kind, bytes) else None,
                timestamp if isinstance(timestamp, str) else None,
            )

        first_seq, _, first_ts = peek(first)
        last_seq, last_type, last_ts = peek(last)
        return RunSummary(
            run_id=run_id,
            event_count=int(length),
            first_sequence=first_seq,
            last_sequence=last_seq,
            last_type=last_type,
            first_timestamp=first_ts,
            last_timestamp=last_ts,
            ttl_seconds=int(ttl) if ttl is not None and int(ttl) >= 0 else None,
        )

    async def ping(self) -> None:
        self._check_open()
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, "connecting") from None

    def subscriber_count(self, run_id: str) -> int:
        """Local followers of ``run_id`` whose subscription the server has confirmed."""
        channel = pubsub_channel(run_id).encode()
        return len(self._hub.subscribers(channel))

    @property
    def pubsub_connects(self) -> int:
        """How many times the shared Pub/Sub connection has been (re)established."""
        return self._hub.connects


def _log_skip(count: int, message: str, *args: Any) -> None:
    """The first ten at WARNING, then every thousandth: a stream full of junk must not
    flood the log."""
    level = logging.WARNING if count <= 10 or count % 1000 == 0 else logging.DEBUG
    log.log(level, message, *args)


def _as_sent(response: Any, **options: Any) -> Any:
    return response


_TYPE_CLASSES: dict[bytes, type[BaseEvent]] = {k.encode(): v for k, v in EVENT_CLASSES.items()}
_FIELD_LAYOUT = (b"data", b"sequence", b"type")


def _entry_fields(fields: Any) -> tuple[Any, Any, Any]:
    """``(data, sequence, type)`` of a stream entry's fields (a flat list or a dict)."""
    if type(fields) is list:
        if (
            len(fields) == 6
            and fields[0] == b"data"
            and fields[2] == b"sequence"
            and fields[4] == b"type"
        ):
            return fields[1], fields[3], fields[5]
        fields = dict(zip(fields[::2], fields[1::2], strict=False))  # later ones win
    if not isinstance(fields, dict):
        raise EventValidationError("entry has no fields")
    return fields.get(b"data"), fields.get(b"sequence"), fields.get(b"type")


def _type_hint(data: Any) -> bytes | None:
    """The first ``"type"`` value in a JSON text, a guess checked by ``_fast_model``."""
    if type(data) is not bytes:
        return None
    start = data.find(b'"type":')
    if start < 0:
        return None
    start += 7
    while data[start : start + 1] == b" ":
        start += 1
    if data[start : start + 1] != b'"':
        return None
    end = data.find(b'"', start + 1)
    return data[start + 1 : end] if end > 0 else None


def _type_of(item: StoredEvent) -> Any:
    return item.get("type") if isinstance(item, dict) else item.type


def _entry_id(entry: Any) -> Any:
    return entry[0] if entry else None


def _entry_sequence(entry: Any) -> int:
    """The ``sequence`` field of a raw entry (0 if it has none)."""
    try:
        return _field_int(_entry_fields(entry[1])[1])
    except (EventValidationError, TypeError, IndexError):
        return 0


def _model_sequence(model: BaseEvent) -> int:
    return model.sequence


def _fast_model(run_id: str, data: Any, field_sequence: int, kind: Any) -> BaseEvent | None:
    """The model ``_decode`` would make, straight from the JSON bytes, or None when that
    cannot be vouched for (then the slow path decides, and reports what is wrong).

    The class comes from the entry's ``type`` field; the result counts only if the JSON's own
    ``type`` leads to that same class, was present, the run matches, and the sequence agrees
    with the entry's ``sequence`` field (``_decode`` fills a missing one from it)."""
    if type(data) is not bytes:
        return None
    cls = _TYPE_CLASSES.get(kind, CustomEvent) if type(kind) is bytes else CustomEvent
    try:
        model = cls.model_validate_json(data)
    except ValidationError:
        return None
    if (
        model.run_id != run_id
        or (field_sequence > 0 and model.sequence != field_sequence)
        or EVENT_CLASSES.get(model.type, CustomEvent) is not cls
        or "type" not in model.__pydantic_fields_set__
    ):
        return None
    return model


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _dumps(event: dict[str, Any]) -> str:
    return _ENCODER.encode(event)


_PING = b"*1\r\n$4\r\nPING\r\n"


def _pack(*args: str | int) -> bytes:
    """One command in RESP, as redis-py's ``pack_command`` writes it for str and int
    arguments, in a third of the time (it is on every publish's path)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _field_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
