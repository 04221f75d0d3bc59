"""``RedisBackend``: Dockrion's protocol and ours over Redis Streams + Pub/Sub; the why of
each choice is in the package's doc."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ...events import (
    BaseEvent,
    EventValidationError,
    as_model,
    as_wire,
    check_wire,
    validate_run_id,
)
from ...redaction import mask_url, masked_logger, remember, scrub
from ...redis_urls import topology_of
from ..base import (
    BackendClosedError,
    BackendConnectionError,
    BackendError,
    EventDict,
    RunSummary,
    StoredEvent,
    run_id_of,
)
from ..collector import gc_paused
from ..gapless import Joiner, sequence_of
from .appender import Appender
from .decode import (
    StreamRecord,
    as_sent,
    decode_record,
    entry_fields,
    entry_sequence,
    fast_model,
    field_int,
    log_skip,
    type_hint,
    type_of,
)
from .errors import TRANSIENT, backoff_delay, describe_failure
from .keys import SINGLE_SERVER, STREAM_PREFIX, KeyLayout, stream_key
from .pubsub import LiveSub, PubSubHub, Signal
from .reads import decoded_in_order, models_in_order, read_all, read_tail
from .runstate import RedisRunStates
from .script import dumps

log = masked_logger("dockrion_nb.redis")

BATCH_LIMIT = 1000  # events per script call; a larger append takes one round trip per 1000
SETTLE_SECONDS = 0.5  # see RedisBackend._drain
# A repeat is checked for a reset run at once after a resync, else at most once a second.
RESET_CHECK_SECONDS = 1.0
SKIPPED_IDS_KEPT = 10_000  # bad entries remembered, so each is counted once
SUMMARY_PEEK = 8  # entries read from each end of a stream to summarise its run


class RedisBackend:
    """Pub/Sub for live delivery, Streams for replay, EXPIRE for retention; see the package doc.

    ``RedisBackend(url)`` with a ``redis+cluster://`` or ``redis+sentinel://`` URL builds the
    subclass for that deployment (``RedisClusterBackend``, ``RedisSentinelBackend``): same
    settings, same behaviour, another URL."""

    name = "redis"
    topology = "single"

    def __new__(cls, url: str = "redis://localhost:6379/0", *args: Any, **kwargs: Any) -> Any:
        if cls is RedisBackend and isinstance(url, str):
            kind = topology_of(url)
            if kind == "cluster":
                from .cluster import RedisClusterBackend

                return super().__new__(RedisClusterBackend)
            if kind == "sentinel":
                from .sentinel import RedisSentinelBackend

                return super().__new__(RedisSentinelBackend)
        return super().__new__(cls)

    def __init__(
        self,
        url: str = "redis://localhost:6379",
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
        remember(url)
        self.stream_ttl_seconds = stream_ttl_seconds
        self.max_events_per_run = max_events_per_run
        self.connection_pool_size = connection_pool_size
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.layout: KeyLayout = SINGLE_SERVER
        self._open()
        self._run_states: RedisRunStates | None = None
        self._closed = False
        self._state = "idle"
        self._listeners: list[Callable[[str], None]] = []
        self.skipped_entries = 0  # bad stream entries, each counted once
        self._skipped_ids: set[tuple[str, Any]] = set()
        self.skipped_messages = 0
        self.entries_read = 0
        self.fallback_reason: str | None = None

    def _open(self) -> None:
        """The clients, the appender and the Pub/Sub hub (a subclass opens its own)."""
        try:
            # Blocking: a burst of more concurrent commands than connections waits for one.
            self._pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.connection_pool_size,
                timeout=self.command_timeout,
                socket_timeout=self.command_timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=Retry(NoBackoff(), 0),  # a retried script could store an event twice
            )
        except (ValueError, RedisError) as exc:
            raise self.invalid_url(exc) from None
        # RESP2 everywhere: plain arrays for Pub/Sub, and servers older than 6 still work.
        self._pool.connection_kwargs["protocol"] = 2
        self._use_pool(self._pool)
        self._appender = Appender(self)
        self._hub = PubSubHub(self)

    def _use_pool(self, pool: ConnectionPool) -> None:
        self._client = aioredis.Redis(connection_pool=pool)
        # Stream reads keep Redis's flat field lists: decode_model reads them in place, and
        # redis-py's per-entry dict would cost more than the rest of a replay's reading.
        self._raw = aioredis.Redis(connection_pool=pool)
        for command in ("XRANGE", "XREVRANGE"):
            self._raw.set_response_callback(command, as_sent)

    def invalid_url(self, exc: BaseException) -> BackendConnectionError:
        return BackendConnectionError(
            f"invalid Redis URL {self.masked_url}: {scrub(str(exc), self.url)} (use redis://, "
            "rediss://, unix://, redis+cluster:// or redis+sentinel://, e.g. "
            "redis://:password@localhost:6379/0)",
            backend="redis",
        )

    async def ready(self) -> None:
        """Settle what the first command must know (a cluster: which Pub/Sub its servers
        speak); nothing to settle on one server."""

    async def _close_clients(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.aclose()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()

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
            "topology": self.layout.describe(),
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

    def check_open(self) -> None:
        if self._closed:
            raise BackendClosedError("the Redis backend is closed", backend="redis")

    def error_for(self, exc: BaseException, doing: str) -> BackendError:
        """One readable message, password masked, for a failure while ``doing`` something."""
        return describe_failure(exc, doing, url=self.url, masked_url=self.masked_url)

    # -- decoding -------------------------------------------------------------------------------

    def decode_entry(self, run_id: str, entry_id: Any, fields: Any) -> StreamRecord | None:
        """A stream entry as an event, or None (skipped, counted and logged) if it is not one.

        ``fields`` is the entry's field list as Redis sends it, or a dict of it."""
        try:
            data, seq, _ = entry_fields(fields)
            return decode_record(run_id, data, field_int(seq))
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
            data, seq, kind = entry_fields(fields)
        except EventValidationError as exc:
            self._skip_entry(run_id, entry_id, exc)
            return None
        field_sequence = field_int(seq)
        model = fast_model(run_id, data, field_sequence, kind)
        if model is not None:
            return model
        record = self.decode_entry(run_id, entry_id, fields)
        return None if record is None else record.model

    def _skip_entry(self, run_id: str, entry_id: Any, exc: EventValidationError) -> None:
        """Count and log a bad entry once, however often it is read (replays, summaries)."""
        key = (run_id, entry_id)
        if key in self._skipped_ids:
            return
        if len(self._skipped_ids) >= SKIPPED_IDS_KEPT:
            self._skipped_ids.clear()
        self._skipped_ids.add(key)
        self.skipped_entries += 1
        log_skip(
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
        model = fast_model(run_id, data, 0, type_hint(data))
        if model is not None:
            return model
        record = self.decode_message(run_id, data)
        return None if record is None else record.model

    def decode_message(self, run_id: str, data: bytes) -> StreamRecord | None:
        try:
            return decode_record(run_id, data, 0)
        except EventValidationError as exc:
            self.skipped_messages += 1
            log_skip(
                self.skipped_messages,
                "skipped Pub/Sub message on run %s: not a valid event (%s); %d skipped so far",
                run_id,
                exc,
                self.skipped_messages,
            )
            return None

    def _unconfirmed(self, run_id: str, event: StoredEvent) -> None:
        """A live message ahead of the run that the stream never held: skipped, counted."""
        self.skipped_messages += 1
        log_skip(
            self.skipped_messages,
            "skipped Pub/Sub message on run %s: sequence %d was published but is not in the "
            "stream (a writer that publishes without storing?); %d skipped so far",
            run_id,
            sequence_of(event),
            self.skipped_messages,
        )

    # -- reading the stream ----------------------------------------------------------------------

    async def _read_from(self, run_id: str, from_sequence: int) -> list[EventDict]:
        """Stored events with ``sequence >= from_sequence``, ordered by sequence, as wire
        dicts (each carrying its model). Raises redis-py errors."""
        with gc_paused():
            entries = await self._read_entries(run_id, from_sequence)
            out: list[EventDict] = decoded_in_order(
                run_id, entries, from_sequence, self.decode_entry, sequence_of
            )
            del entries  # freed now: the collector, back on, then has only the events to scan
        return out

    async def _read_models(self, run_id: str, from_sequence: int) -> list[BaseEvent]:
        """``_read_from`` as models only: what our bus and followers use (no wire dicts)."""
        with gc_paused():
            entries = await self._read_entries(run_id, from_sequence)
            out = models_in_order(run_id, entries, from_sequence, self.decode_model)
            del entries
        return out

    async def _read_entries(self, run_id: str, from_sequence: int) -> list[Any]:
        """The raw entries holding ``sequence >= from_sequence`` (and perhaps a few before):
        the whole stream when reading from the start, else its tail (see ``reads``)."""
        key = stream_key(run_id)
        if from_sequence <= 1:
            entries = await read_all(self._raw, key)
        else:
            entries = await read_tail(self._raw, key, from_sequence)
        self.entries_read += len(entries)
        return entries

    # -- Dockrion's protocol ----------------------------------------------------------------------

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """PUBLISH only (store with ``store_event``), as Dockrion's backend does."""
        self.check_open()
        check_wire(event)
        try:
            await self.ready()
            layout = self.layout
            await self._client.execute_command(  # type: ignore[no-untyped-call]
                layout.publish_command, layout.channel(run_id_of(channel)), dumps(event)
            )
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"publishing to {channel!r}") from None

    async def store_event(self, run_id: str, event: dict[str, Any]) -> None:
        """XADD + EXPIRE in one round trip; the event keeps its sequence (even 0), as in
        Dockrion, and the run's counter moves up to it. Failures raise (Dockrion logs them)."""
        self.check_open()
        check_wire(event)
        await self._appender.append(run_id, [event], publish=False, assign=False)

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Live events on ``channel`` from now on (Dockrion's semantics); survives reconnects:
        what was published while the connection was down is read from the stream."""
        self.check_open()
        return self._live(run_id_of(channel))

    async def get_events(self, run_id: str, from_sequence: int = 0) -> list[dict[str, Any]]:
        self.check_open()
        try:
            return await self._read_from(run_id, from_sequence)
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None

    async def clear_run(self, run_id: str) -> None:
        self.check_open()
        try:
            await self._client.delete(self.layout.stream(run_id), self.layout.counter(run_id))
            self._appender.forget(run_id)
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"clearing run {run_id!r}") from None

    async def close(self) -> None:
        """End every follower, close the Pub/Sub connection and the pool."""
        if self._closed:
            return
        self._closed = True
        await self._hub.close()
        await self._close_clients()
        await self._appender.close()
        self.set_state("closed")

    # -- ours --------------------------------------------------------------------------------

    async def append(self, run_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Assign, store and publish in one round trip per ``BATCH_LIMIT`` events."""
        self.check_open()
        validate_run_id(run_id)
        for event in events:
            if isinstance(event, dict):  # models come checked from the bus
                check_wire(event)
        wire = [as_wire(e) for e in events]
        for start in range(0, len(wire), BATCH_LIMIT):
            await self._appender.append(
                run_id, wire[start : start + BATCH_LIMIT], publish=True, assign=True
            )
        return list(wire)

    async def read(self, run_id: str, from_sequence: int = 0) -> list[StoredEvent]:
        """Models only: the bus needs no wire dicts."""
        self.check_open()
        try:
            return list(await self._read_models(run_id, from_sequence))
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None

    def follow(
        self, run_id: str, from_sequence: int = 1, *, live: bool = True
    ) -> AsyncGenerator[BaseEvent, None]:
        """Models, each sequence once and in order (see ``RunLogBackend.follow``)."""
        self.check_open()
        validate_run_id(run_id)
        return self._follow(run_id, max(1, from_sequence), live)

    # The bus hands this to its subscribers as it is: no layer of its own per event.
    follow_models = follow

    async def _follow(
        self, run_id: str, from_sequence: int, live: bool
    ) -> AsyncGenerator[BaseEvent, None]:
        # Stored and live events come as models; only gap notices are dicts.
        joiner = Joiner(
            run_id,
            from_sequence,
            lambda k: self._read_models(run_id, k),
            lambda event: self._unconfirmed(run_id, event),
        )
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
                if item is Signal.CLOSED:
                    return
                if item is Signal.RESYNC:
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
        self, sub: LiveSub, joiner: Joiner, *, settle: bool
    ) -> AsyncGenerator[StoredEvent, None]:
        """Live events through the joiner. With ``settle``, a follower that hears nothing for
        ``SETTLE_SECONDS`` after reading the stream reads it once more: a writer that
        publishes before it stores (Dockrion does) may have stored, after our read, an event
        it published before our subscription; nothing live would ever reveal it."""
        unsettled = settle
        reset_checked_at, reset_told = -RESET_CHECK_SECONDS, False
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
            if item is Signal.CLOSED:
                return
            if item is Signal.RESYNC:
                async for event in self._fill(joiner):
                    yield event
                unsettled = settle
                reset_checked_at = -RESET_CHECK_SECONDS  # the next repeat is checked at once
                continue
            seq = sequence_of(item)
            if seq and seq == joiner.next_sequence and type_of(item) != "gap":
                joiner.next_sequence = seq + 1  # the usual case, as joiner.accept would do
                yield item
                continue
            if 0 < seq < joiner.next_sequence and not reset_told:  # a repeat, or a reset
                now = time.monotonic()
                if now - reset_checked_at >= RESET_CHECK_SECONDS:
                    reset_checked_at = now
                    reset_told = await self._warn_if_reset(joiner, seq)
            try:
                async for event in joiner.accept(item):
                    yield event
            except TRANSIENT:
                # The event is stored (scripts store before they publish): read it back.
                async for event in self._fill(joiner):
                    yield event

    async def _warn_if_reset(self, joiner: Joiner, seq: int) -> bool:
        """Say so when live events come numbered below what this follower has delivered and
        the server holds nothing that far: the run was reset (a server restarted without
        persistence, or the run was cleared, and then a writer that had not written to it
        numbered from 1 again). Those events are repeats by number and are skipped; without
        this, the follower would go quiet with no word of why."""
        run_id = joiner.run_id
        try:
            counter = await self._client.get(self.layout.counter(run_id))
            tail = await self._raw.xrevrange(stream_key(run_id), max="+", min="-", count=1)
        except (RedisError, OSError):
            return False  # the usual path goes on; a later repeat checks again
        held = max(field_int(counter), entry_sequence(tail[0]) if tail else 0)
        delivered = joiner.next_sequence - 1
        if held >= delivered:
            return False  # an ordinary repeat (a live copy of an event already read)
        log.warning(
            "run %s on %s was reset: this follower has delivered sequences up to %d, the "
            "server holds none past %d, and live events come numbered from %d again. They "
            "are skipped as repeats; follow the run again to read it from its new start.",
            run_id,
            self.masked_url,
            delivered,
            held,
            seq,
        )
        return True

    async def _fill(self, joiner: Joiner) -> AsyncGenerator[StoredEvent, None]:
        """Stored events from the joiner's next sequence, retrying while Redis is away."""
        attempt = 0
        while True:
            try:
                async for event in joiner.fill():
                    yield event
                if attempt and self._hub.live:
                    self.set_state("live")
                return
            except TRANSIENT as exc:
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
        self.check_open()
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
                out += await self._summaries(keys[start : start + 200])
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, "listing runs") from None
        out.sort(key=lambda s: s.run_id)
        return out

    async def summary(self, run_id: str) -> RunSummary | None:
        """What the server holds of one run (None: nothing), in one round trip."""
        self.check_open()
        try:
            found = await self._summaries([stream_key(run_id).encode()])
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None
        return found[0] if found else None

    async def _summaries(self, keys: list[bytes]) -> list[RunSummary]:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.xlen(key)
            pipe.xrange(key, count=SUMMARY_PEEK)
            pipe.xrevrange(key, count=SUMMARY_PEEK)
            pipe.ttl(key)
        replies = await pipe.execute()
        out = []
        for i, key in enumerate(keys):
            length, first, last, ttl = replies[4 * i : 4 * i + 4]
            summary = self._summary(key, length, first, last, ttl) if length else None
            if summary is not None:
                out.append(summary)
        return out

    def _summary(
        self, key: bytes, length: int, first: Any, last: Any, ttl: int
    ) -> RunSummary | None:
        """A run's summary from the stream's length and its first and last few entries;
        entries that are not events (garbage written by others) are not counted."""
        run_id = key.decode("utf-8", "replace")[len(STREAM_PREFIX) :]
        events: dict[Any, StreamRecord] = {}
        for entry_id, fields in [*first, *reversed(last)]:
            if entry_id not in events:
                record = self.decode_entry(run_id, entry_id, fields)
                if record is not None:
                    events[entry_id] = record
        if not events:
            if length <= 2 * SUMMARY_PEEK:
                return None  # nothing but garbage
            count = int(length)  # cannot tell without reading it all
            head = tail = None
        else:
            ordered = list(events.values())
            head, tail = ordered[0], ordered[-1]
            if length <= 2 * SUMMARY_PEEK:
                count = len(ordered)  # every entry was read
            else:  # numbered in steps of one: the span, where garbage made the stream longer
                count = min(int(length), sequence_of(tail) - sequence_of(head) + 1)
        return RunSummary(
            run_id=run_id,
            event_count=max(count, 0),
            first_sequence=sequence_of(head) if head else None,
            last_sequence=sequence_of(tail) if tail else None,
            last_type=type_of(tail) if tail else None,
            first_timestamp=str(head.get("timestamp")) if head else None,
            last_timestamp=str(tail.get("timestamp")) if tail else None,
            ttl_seconds=int(ttl) if ttl is not None and int(ttl) >= 0 else None,
        )

    async def ping(self) -> None:
        self.check_open()
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, "connecting") from None

    @property
    def command_client(self) -> aioredis.Redis:
        """The pooled redis-py client for occasional commands (run states)."""
        return self._client

    @property
    def run_states(self) -> RedisRunStates:
        """The run-state hashes (``runstate:run:{run_id}``) that ``RunManager`` keeps here."""
        if self._run_states is None:
            self._run_states = RedisRunStates(self)
        return self._run_states

    async def last_sequence(self, run_id: str) -> int:
        """The highest sequence written to ``run_id``: its counter or its last entry's (0:
        none), in one round trip."""
        self.check_open()
        try:
            pipe = self._raw.pipeline(transaction=False)
            pipe.get(self.layout.counter(run_id))
            pipe.xrevrange(stream_key(run_id), count=1)
            counter, last = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self.error_for(exc, f"reading run {run_id!r}") from None
        return max(field_int(counter) or 0, entry_sequence(last[0]) if last else 0)

    async def health_check(self) -> bool:
        """Dockrion's: whether the server answers a PING."""
        try:
            await self.ping()
        except BackendError:
            return False
        return True

    def get_stats(self) -> dict[str, Any]:
        """Dockrion's keys (``backend``, ``connected``, ``closed``, ``stream_ttl_seconds``,
        ``max_events_per_run``, ``pool_size``) and our ``state`` and skip counters."""
        return {
            "backend": "redis",
            "connected": self._appender.connected or self._state == "live",
            "closed": self._closed,
            "stream_ttl_seconds": self.stream_ttl_seconds,
            "max_events_per_run": self.max_events_per_run,
            "pool_size": self.connection_pool_size,
            "state": self._state,
            "skipped_entries": self.skipped_entries,
            "skipped_messages": self.skipped_messages,
        }

    def subscriber_count(self, run_id: str) -> int:
        """Local followers of ``run_id`` whose subscription the server has confirmed."""
        channel = self.layout.channel(run_id).encode()
        return len(self._hub.subscribers(channel))

    @property
    def pubsub_connects(self) -> int:
        """How many times the shared Pub/Sub connection has been (re)established."""
        return self._hub.connects
