"""Run semantics over any backend: sequences, publish = store + deliver, gapless subscribe.

With one of our backends (``RunLogBackend``) publishing is one atomic step that assigns the
sequence where every writer of the run agrees on it (in Redis, on the server), and subscribing
is the backend's gapless ``follow``. With a backend that only speaks Dockrion's protocol (for
example Dockrion's own ``InMemoryBackend``) the bus numbers events itself and joins the live
subscription to the stored events with the same no-gap, no-duplicate rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from .backends.base import (
    BackendError,
    EventBackend,
    EventDict,
    EventStream,
    RunLogBackend,
    RunSummary,
    StoredEvent,
    channel_for,
)
from .backends.gapless import join_replay_and_live, sequence_of
from .events import (
    GAP_TYPE,
    BaseEvent,
    EventRecord,
    as_model,
    check_fields,
    check_publishable,
    event_types,
    is_event,
    known_run_ids,
    parse_event,
    validate_run_id,
)

EventLike = BaseEvent | Mapping[str, Any]
StoreOne = Callable[
    [str, BaseEvent, dict[str, Any], dict[str, Any] | None, bool], tuple[BaseEvent, bool]
]


def _unshared_count() -> int:
    """What ``sys.getrefcount(event)`` says, as the first statement of a coroutine method, for
    an event no caller holds (``await bus.publish(run, TokenEvent(...))``): measured once on
    this interpreter, with a coroutine of the same shape. 0 (never unshared) where reference
    counts do not tell (not CPython, or free-threaded)."""
    gil = getattr(sys, "_is_gil_enabled", None)  # 3.13+: False on a free-threaded build
    if sys.implementation.name != "cpython" or (gil is not None and not gil()):
        return 0

    async def probe(event: object) -> int:
        return sys.getrefcount(event)

    coro = probe(object())
    try:
        coro.send(None)
    except StopIteration as done:
        return int(done.value)
    return 0


UNSHARED = _unshared_count()


class EventBus:
    """Publish, replay and follow the events of runs on one backend."""

    def __init__(self, backend: EventBackend) -> None:
        self._backend = backend
        self._native = isinstance(backend, RunLogBackend)
        self._stores_models = self._native and bool(getattr(backend, "stores_models", False))
        # One checked model in, the stored model out (the memory backend's single publish).
        self._store_one: StoreOne | None = (
            getattr(backend, "store_one", None) if self._stores_models else None
        )
        self._counters: dict[str, int] = {}
        self._counter_locks: dict[str, asyncio.Lock] = {}

    @property
    def backend(self) -> EventBackend:
        return self._backend

    @property
    def backend_name(self) -> str:
        return str(getattr(self._backend, "name", type(self._backend).__name__))

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, run_id: str, event: EventLike) -> BaseEvent:
        """Store and deliver one event; an event without a sequence gets the run's next one.

        Returns the event as stored (with its sequence).
        """
        # Measured before anything here refers to it: an event only this call holds may be
        # numbered in place (the memory backend's publish), as nobody else can see it change.
        unshared = sys.getrefcount(event) <= UNSHARED
        store_one = self._store_one
        if store_one is not None:  # the hot path of a notebook: no list, no copies, no awaits
            if run_id not in known_run_ids:
                validate_run_id(run_id)
            # Each attribute read on a pydantic model costs as much as a dict lookup and a
            # call: the model's __dict__ and extras are read once, here, for every step.
            model: BaseEvent | None = None
            if type(event) in event_types or is_event(event):  # ``is_event``'s test, inline
                given: BaseEvent = event  # type: ignore[assignment]
                fields: dict[str, Any] = given.__dict__
                extra = given.__pydantic_extra__
                if fields.get("run_id") == run_id and fields.get("type") != GAP_TYPE:
                    check_fields(type(given), fields, extra)  # ``_model``'s checks
                    model = given
            if model is None:
                model = self._model(run_id, event)
                fields, extra = model.__dict__, model.__pydantic_extra__
                unshared = unshared or model is not event  # one we made here
            stored, crowded = store_one(run_id, model, fields, extra, unshared)
            if crowded:  # same-loop subscribers run now instead of after the whole burst
                await asyncio.sleep(0)
            return stored
        if self._stores_models:
            validate_run_id(run_id)
            model = self._model(run_id, event)
            backend: RunLogBackend = self._backend  # type: ignore[assignment]
            return as_model((await backend.append(run_id, (model,)))[0])
        return (await self.publish_many(run_id, (event,)))[0]

    async def publish_many(self, run_id: str, events: Iterable[EventLike]) -> list[BaseEvent]:
        """Publish a batch in order; on our Redis backend this is one round trip."""
        validate_run_id(run_id)
        models = [self._model(run_id, e) for e in events]
        if not models:
            return []
        if self._native:
            backend: RunLogBackend = self._backend  # type: ignore[assignment]
            if self._stores_models:
                stored = await backend.append(run_id, models)
            else:
                stored = await backend.append(run_id, [EventRecord(m.to_dict(), m) for m in models])
        else:
            records = [EventRecord(m.to_dict(), m) for m in models]
            stored = await self._publish_foreign(run_id, records)
        return [as_model(r) for r in stored]

    @staticmethod
    def _model(run_id: str, event: EventLike) -> BaseEvent:
        """The model to store: validated, JSON all through (``EventContentError`` names the
        field that is not), never a ``gap``; refused here, so nothing of it is stored."""
        if not is_event(event):
            return EventBus._model(run_id, parse_event({"run_id": run_id, **event}))  # type: ignore[dict-item]
        model = event
        if model.run_id != run_id:
            raise ValueError(f"event for run {model.run_id!r} published to run {run_id!r}")
        return check_publishable(model)

    async def _publish_foreign(self, run_id: str, records: list[EventRecord]) -> list[StoredEvent]:
        channel = channel_for(run_id)
        for record in records:
            if not record.get("sequence"):
                record["sequence"] = await self._next_sequence(run_id)
            else:
                self._counters[run_id] = max(self._counters.get(run_id, 0), record["sequence"])
            await self._backend.publish(channel, record)
            await self._backend.store_event(run_id, record)
        return list(records)

    async def _next_sequence(self, run_id: str) -> int:
        if run_id not in self._counters:
            lock = self._counter_locks.setdefault(run_id, asyncio.Lock())
            async with lock:
                if run_id not in self._counters:
                    stored = await self._backend.get_events(run_id, 0)
                    self._counters[run_id] = max((sequence_of(e) for e in stored), default=0)
        self._counters[run_id] += 1
        return self._counters[run_id]

    # -- reading -------------------------------------------------------------------------------

    async def get_events(self, run_id: str, from_sequence: int = 0) -> list[BaseEvent]:
        """Stored events with ``sequence >= from_sequence``, in order."""
        validate_run_id(run_id)
        if self._native:
            backend: RunLogBackend = self._backend  # type: ignore[assignment]
            return [as_model(d) for d in await backend.read(run_id, from_sequence)]
        return [as_model(d) for d in await self._backend.get_events(run_id, from_sequence)]

    def subscribe(
        self,
        run_id: str,
        from_sequence: int = 0,
        include_stored: bool = True,
        *,
        live: bool = True,
    ) -> AsyncIterator[BaseEvent]:
        """Every event with ``sequence >= from_sequence`` exactly once and in order: the stored
        ones first, then live ones as they are published (``from_sequence`` 0 or 1: the whole
        run). Where requested events no longer exist a ``GapEvent`` says so. With
        ``live=False`` it ends after the replay.

        ``include_stored=False`` (Dockrion's flag) skips what is already stored: only events
        published after the subscription starts (its first step), still each once and in
        order, with no gap if the subscriber falls behind.

        The subscription is in place when this returns (on the memory backend), so events
        published after the call are never missed; close it with ``aclose()`` to stop early.
        """
        validate_run_id(run_id)
        if not include_stored:
            return self._subscribe_new(run_id, from_sequence, live)
        follow_models = getattr(self._backend, "follow_models", None) if self._native else None
        if follow_models is not None:
            stream: AsyncIterator[BaseEvent] = follow_models(run_id, from_sequence, live=live)
            return stream
        return self._subscribe(run_id, from_sequence, live)

    async def _subscribe(
        self, run_id: str, from_sequence: int, live: bool
    ) -> AsyncGenerator[BaseEvent, None]:
        last = 0
        async with contextlib.aclosing(self._raw(run_id, from_sequence, live)) as source:
            async for data in source:
                model = as_model(data) if isinstance(data, dict) else data
                seq = model.sequence
                if seq:
                    if seq <= last:
                        continue
                    last = seq
                yield model

    async def _subscribe_new(
        self, run_id: str, from_sequence: int, live: bool
    ) -> AsyncGenerator[BaseEvent, None]:
        """Events published from now on (``include_stored=False``)."""
        if not live:
            return
        last_sequence = getattr(self._backend, "last_sequence", None) if self._native else None
        if last_sequence is not None:
            start = max(from_sequence, int(await last_sequence(run_id)) + 1)
            async with contextlib.aclosing(self.subscribe(run_id, start)) as events:  # type: ignore[type-var]
                async for event in events:
                    yield event
            return
        # Dockrion's backends: their live channel, parsed, each sequence once.
        last = from_sequence - 1
        source = self._backend.subscribe(channel_for(run_id))
        try:
            async for data in source:
                model = as_model(data)
                if model.sequence:
                    if model.sequence <= last:
                        continue
                    last = model.sequence
                yield model
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _raw(self, run_id: str, from_sequence: int, live: bool) -> EventStream:
        if self._native:
            backend: RunLogBackend = self._backend  # type: ignore[assignment]
            return backend.follow(run_id, from_sequence, live=live)
        return self._follow_foreign(run_id, from_sequence, live)

    async def _follow_foreign(
        self, run_id: str, from_sequence: int, live: bool
    ) -> AsyncGenerator[EventDict, None]:
        async def fetch(k: int) -> list[EventDict]:
            return await self._backend.get_events(run_id, k)

        if not live:
            async for e in join_replay_and_live(run_id, from_sequence, fetch, None):
                yield e
            return
        buffer: asyncio.Queue[EventDict | None] = asyncio.Queue()
        source = self._backend.subscribe(channel_for(run_id))

        async def pump() -> None:
            try:
                async for e in source:
                    buffer.put_nowait(e)
            finally:
                buffer.put_nowait(None)

        task = asyncio.create_task(pump())
        # Let the subscription register before the replay is read; a late registration is
        # still safe, because a jump in sequence is filled from the store.
        for _ in range(3):
            await asyncio.sleep(0)

        async def drain() -> AsyncGenerator[EventDict, None]:
            while (e := await buffer.get()) is not None:
                yield e

        try:
            async for e in join_replay_and_live(run_id, from_sequence, fetch, drain()):
                yield e
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- Dockrion's raw forms ---------------------------------------------------------------------

    def subscribe_raw(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """Live wire dicts of the run as the backend delivers them (no replay, no parsing), as
        in Dockrion."""
        validate_run_id(run_id)
        return self._backend.subscribe(channel_for(run_id))

    async def get_events_raw(self, run_id: str, from_sequence: int = 0) -> list[dict[str, Any]]:
        """Stored wire dicts with ``sequence >= from_sequence``, in order."""
        validate_run_id(run_id)
        return await self._backend.get_events(run_id, from_sequence)

    async def publish_raw(self, run_id: str, event_data: dict[str, Any]) -> BaseEvent:
        """Publish a wire dict. Unlike Dockrion's, it is checked like any event (an unknown
        type is kept as a custom event; data that is no event raises) and numbered."""
        return await self.publish(run_id, event_data)

    async def list_runs(self, pattern: str | None = None) -> list[RunSummary]:
        """Runs the backend holds (``pattern`` is a glob on the run id)."""
        if not self._native:
            raise BackendError(
                f"{type(self._backend).__name__} cannot list runs; use a dockrion_nb backend",
                backend=self.backend_name,
            )
        backend: RunLogBackend = self._backend  # type: ignore[assignment]
        return await backend.list_runs(pattern)

    async def run_summary(self, run_id: str) -> RunSummary | None:
        """What the backend holds of one run (None: no events), without reading it all on our
        backends."""
        validate_run_id(run_id)
        if self._native:
            backend: RunLogBackend = self._backend  # type: ignore[assignment]
            return await backend.summary(run_id)
        stored = await self._backend.get_events(run_id, 0)
        if not stored:
            return None
        first, last = stored[0], stored[-1]
        return RunSummary(
            run_id=run_id,
            event_count=len(stored),
            first_sequence=sequence_of(first) or None,
            last_sequence=sequence_of(last) or None,
            last_type=str(last.get("type")),
            first_timestamp=str(first.get("timestamp")),
            last_timestamp=str(last.get("timestamp")),
        )

    async def clear_run(self, run_id: str) -> None:
        validate_run_id(run_id)
        self._counters.pop(run_id, None)
        await self._backend.clear_run(run_id)

    async def close(self) -> None:
        await self._backend.close()


class EventBusFactory:
    """Dockrion's factory: ``await EventBusFactory.create("memory")`` or
    ``create("redis", url=..., stream_ttl_seconds=..., max_events_per_run=...,
    connection_pool_size=...)``, with our backends."""

    @staticmethod
    async def create(backend_type: str = "memory", **kwargs: Any) -> EventBus:
        if backend_type == "memory":
            from .backends.memory import InMemoryBackend

            return EventBus(
                InMemoryBackend(max_events_per_run=kwargs.get("max_events_per_run", 1000))
            )
        if backend_type == "redis":
            from .backends.redis import RedisBackend

            return EventBus(
                RedisBackend(
                    url=kwargs.get("url", "redis://localhost:6379"),
                    stream_ttl_seconds=kwargs.get("stream_ttl_seconds", 3600),
                    max_events_per_run=kwargs.get("max_events_per_run", 1000),
                    connection_pool_size=kwargs.get("connection_pool_size", 10),
                )
            )
        raise ValueError(f"Unknown backend type: {backend_type}; use 'memory' or 'redis'")


async def create_event_bus(backend_type: str = "memory", **kwargs: Any) -> EventBus:
    """``EventBusFactory.create``."""
    return await EventBusFactory.create(backend_type, **kwargs)
