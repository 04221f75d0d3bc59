"""In-memory backend: the seed's design without the reference's losses.

Events live in ``_events`` (a dict keyed by run id, each run a ``RunLog`` of compact records,
see ``compact.py``) trimmed to ``max_events_per_run``; each subscriber has its own bounded
queue. Unlike the reference there is no polling loop and no
silent drop: a subscriber whose queue fills stops receiving through it and, once it has drained
the queue, catches up from the store; if the store has trimmed what it missed, it receives a
``gap`` event that says so. Publishers yield to the loop when a subscriber falls behind, so a
same-loop consumer keeps up instead of overflowing.

Followers (``follow``, what the bus uses) only ever see stored events: a Dockrion-protocol
``publish`` that is never stored reaches Dockrion-protocol subscribers only, as Redis Pub/Sub
would, and cannot make a follower skip the stored events that follow it. Subscriptions are held
weakly: one that is dropped without being read or closed is released when it is collected.

Runs are kept until cleared, unless ``max_runs`` is set: then the run written to least
recently is evicted when a new run would exceed it, and a log line names it.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import weakref
from array import array
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import (
    MAX_SEQUENCE,
    BaseEvent,
    EventValidationError,
    as_model,
    as_wire,
    check_wire,
    numbered,
    with_sequence,
)
from ..redaction import masked_logger
from .base import (
    BackendClosedError,
    RunSummary,
    StoredEvent,
    gap_event,
    run_id_of,
)
from .collector import gc_paused
from .compact import BUILDERS, compact, record_of
from .feed import Feed
from .gapless import sequence_of


def _field(event: StoredEvent, name: str) -> Any:
    if not isinstance(event, dict):
        value = getattr(event, name, None)
        return value.isoformat() if name == "timestamp" and value is not None else value
    return event.get(name)


def _summary(run_id: str, log_: RunLog) -> RunSummary:
    first, last = log_.first(), log_.last()
    return RunSummary(
        run_id=run_id,
        event_count=len(log_),
        first_sequence=sequence_of(first) if first else None,
        last_sequence=log_.last_sequence or None,
        last_type=_field(last, "type") if last else None,
        first_timestamp=_field(first, "timestamp") if first else None,
        last_timestamp=_field(last, "timestamp") if last else None,
    )


log = masked_logger("dockrion_nb.memory")

DEFAULT_QUEUE_SIZE = 4096
BUILD_CHUNK = 1000  # models a replay builds at once, with the collector paused
YIELD_AT = 256  # a publisher lets subscribers run once one of them has this many queued


@dataclass
class Replay:
    """Stored events taken for a subscriber: first and last sequence (0: none), the events,
    and whether they are strictly in order (then nothing in them needs skipping)."""

    first: int
    last: int
    events: Iterator[StoredEvent]
    ordered: bool


def _sequences_used_up(run_id: str) -> EventValidationError:
    return EventValidationError(
        f"run {run_id!r} has reached the last sequence (2**53-1): clear it (clear_run) or "
        "publish to a new run id"
    )


class RunLog:
    """One run's events in arrival order, trimmed from the front in amortised O(1).

    Models are kept as compact records (``compact.py``: a tuple of what differs per event,
    about a quarter of a model's memory) and built again when read; wire dicts are kept as they are.
    Sequences sit in an array beside them (8 bytes each), for bisecting and for the records.
    """

    __slots__ = ("_head", "_items", "_seqs", "last_sequence", "monotonic", "run_id")

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self._items: list[Any] = []  # records, models, wire dicts
        self._seqs = array("q")
        self._head = 0
        self.last_sequence = 0
        self.monotonic = True

    def __len__(self) -> int:
        return len(self._items) - self._head

    def append(self, event: StoredEvent, limit: int) -> None:
        item = event if isinstance(event, dict) else compact(event, self.run_id)
        self.add(item, sequence_of(event), limit)

    def add(self, item: Any, seq: int, limit: int) -> None:
        """Keep ``item`` (a record, a model or a wire dict) as the event numbered ``seq``."""
        items = self._items
        if seq > self.last_sequence:  # while in order, the last sequence is the highest
            self.last_sequence = seq
        elif items:
            self.monotonic = False
        items.append(item)
        self._seqs.append(seq)
        excess = len(items) - self._head - limit
        if excess > 0:
            self._head += excess
            if self._head >= max(64, limit):
                del self._items[: self._head]
                del self._seqs[: self._head]
                self._head = 0

    def reader(self, from_sequence: int) -> Replay:
        """The events with ``sequence >= from_sequence`` as they are now: the records are
        taken at once, their models built one by one as they are read, so a long replay
        never holds them all at once."""
        if not self.monotonic:
            events = self.from_sequence(from_sequence)
            first = sequence_of(events[0]) if events else 0
            return Replay(first, sequence_of(events[-1]) if events else 0, iter(events), False)
        start = bisect.bisect_left(self._seqs, from_sequence, lo=self._head)
        items, seqs = self._items[start:], self._seqs[start:]
        if not seqs:
            return Replay(0, 0, iter(()), True)
        return Replay(seqs[0], seqs[-1], self._built(items, seqs), True)

    def _built(self, items: list[Any], seqs: array[int]) -> Iterator[StoredEvent]:
        """Models of ``items`` as they are read, ``BUILD_CHUNK`` at a time with the collector
        paused (never across a ``yield``: the reader's caller runs in between)."""
        for start in range(0, len(items), BUILD_CHUNK):
            stop = start + BUILD_CHUNK
            yield from self._models(items[start:stop], seqs[start:stop])

    def _models(self, items: list[Any], seqs: Sequence[int]) -> list[StoredEvent]:
        run_id, builders = self.run_id, BUILDERS
        with gc_paused():
            return [
                builders[item[-1]](item, run_id, seq) if type(item) is tuple else item
                for item, seq in zip(items, seqs, strict=True)
            ]

    def _events(self, start: int, stop: int | None = None) -> list[StoredEvent]:
        """Stored events ``start:stop`` (indexes into the log), records built into models."""
        return self._models(self._items[start:stop], self._seqs[start:stop])

    def live(self) -> list[StoredEvent]:
        return self._events(self._head)

    def first(self) -> StoredEvent | None:
        return self._events(self._head, self._head + 1)[0] if len(self) else None

    def last(self) -> StoredEvent | None:
        return self._events(len(self._items) - 1)[0] if len(self) else None

    def from_sequence(self, from_sequence: int) -> list[StoredEvent]:
        """Events with ``sequence >= from_sequence`` ordered by sequence; O(k) when in order."""
        if self.monotonic:
            return self._events(bisect.bisect_left(self._seqs, from_sequence, lo=self._head))
        picked = [e for e in self.live() if sequence_of(e) >= from_sequence]
        picked.sort(key=sequence_of)
        return picked


class _Subscription(Feed[StoredEvent]):
    """One subscriber: a bounded feed while it keeps up, the store when it falls behind.

    It is offered events only while attached to the backend (closing detaches it)."""

    def __init__(self, backend: InMemoryBackend, run_id: str, after: int, maxsize: int) -> None:
        super().__init__(maxsize)
        self.backend = backend
        self.run_id = run_id
        self.pending: deque[StoredEvent] = deque()
        self.replay: Replay | None = None  # stored events, handed out after ``pending``
        self.wire = False  # Dockrion's protocol: hand out wire dicts, never models
        self.replay_only = False  # ends when ``pending`` and ``replay`` are done
        self.models = False  # the bus's fast path: hand out models, each sequence once
        self.last_sequence = after  # highest sequence handed out (or queued)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.wake()

    def _catch_up(self) -> None:
        """Runs with no await: the store read and re-attach to the queue are atomic."""
        log_ = self.backend._events.get(self.run_id)
        missed = log_.from_sequence(self.last_sequence + 1) if log_ is not None else []
        first = sequence_of(missed[0]) if missed else None
        if first is not None and first > self.last_sequence + 1:
            self.pending.append(
                gap_event(
                    self.run_id,
                    self.last_sequence + 1,
                    first - 1,
                    "trimmed by max_events_per_run before this subscriber read them",
                )
            )
        self.pending.extend(missed)
        self.behind = False

    def _take(self, event: StoredEvent) -> StoredEvent | None:
        """The event to hand out, or None for one already handed out (models mode)."""
        seq = sequence_of(event)
        if seq > self.last_sequence:
            self.last_sequence = seq
        elif seq and self.models:
            return None
        if self.wire:
            return as_wire(event)
        if self.models and isinstance(event, dict):
            return as_model(event)
        return event

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        """What ``async for`` reads: one generator resumed per event, cheaper than a new
        ``__anext__`` coroutine per event (a follower of a busy run takes thousands a
        second); the same steps as ``__anext__``, which it falls back to."""
        items = self.items
        while True:
            replay = self.replay
            if replay is not None and not self.pending:  # a replay: built one by one
                if self.models and replay.ordered:  # each sequence once, in order: no checks
                    for event in replay.events:
                        if self.closed:
                            break
                        yield as_model(event) if isinstance(event, dict) else event
                    self.last_sequence = max(self.last_sequence, replay.last)
                else:
                    for event in replay.events:
                        if self.closed:
                            break
                        out = self._take(event)
                        if out is not None:
                            yield out
                self.replay = None
                continue
            if self.models and not self.pending and items and not self.closed:
                # the live path of a follower that keeps up: models in order, taken while
                # nothing else needs a look (one generator resume per event, no other calls)
                last = self.last_sequence
                while items:
                    item = items[0]
                    if type(item) is dict:
                        break
                    seq = item.__dict__["sequence"]
                    if seq <= last:
                        break
                    items.popleft()
                    self.last_sequence = last = seq
                    yield item
                    if self.closed or self.pending:
                        break
                else:
                    continue  # all taken: the next pass waits for more
                if self.closed or self.pending:
                    continue
            try:
                item = await self.__anext__()
            except StopAsyncIteration:
                return
            yield item

    async def __anext__(self) -> Any:
        while not self.closed:
            if self.pending:
                item = self.pending.popleft()
            elif self.replay is not None:
                stored = next(self.replay.events, None)
                if stored is None:
                    self.replay = None
                    continue
                item = stored
            elif self.replay_only:
                break
            elif self.items:  # no await while events are queued
                item = self.items.popleft()
            elif self.behind:
                self._catch_up()
                continue
            else:
                try:
                    await self.wait()
                except BaseException:
                    await self.aclose()
                    raise
                continue
            out = self._take(item)
            if out is not None:
                return out
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Detach from the backend; safe to call twice, and before the first event."""
        self.closed = True
        self.backend._detach(self)


class InMemoryBackend:
    """Single-process backend; events are lost when the process ends."""

    name = "memory"
    stores_models = True  # the bus may hand it event models (see ``append``)

    def __init__(
        self,
        max_events_per_run: int = 1000,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_runs: int | None = None,
    ):
        if max_events_per_run < 1:
            raise ValueError(f"max_events_per_run must be >= 1, not {max_events_per_run}")
        if max_runs is not None and max_runs < 1:
            raise ValueError(f"max_runs must be >= 1 or None, not {max_runs}")
        # Runs in the order they were last written to (the last is the most recent).
        self._events: dict[str, RunLog] = {}
        # Held weakly (see the module doc); each list is replaced, never changed in place, so
        # a publisher iterating it is not disturbed by a subscription collected meanwhile.
        self._subscribers: dict[str, list[weakref.ref[_Subscription]]] = {}
        self._max_events_per_run = max_events_per_run
        self._max_runs = max_runs
        self._queue_size = queue_size
        self._closed = False
        self.fallback_reason: str | None = None
        self.evicted_runs = 0
        self._recent = ""  # the run written to last (it is already last in ``_events``)

    @property
    def max_events_per_run(self) -> int:
        return self._max_events_per_run

    @property
    def max_runs(self) -> int | None:
        return self._max_runs

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "memory", "max_events_per_run": self._max_events_per_run}
        if self._max_runs is not None:
            out["max_runs"] = self._max_runs
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        return out

    async def ping(self) -> None:
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError("the memory backend is closed", backend="memory")

    # -- Dockrion's protocol -------------------------------------------------------------

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Deliver to Dockrion-protocol subscribers only (store with ``store_event``), as
        Dockrion does; followers get the event when it is stored."""
        self._check_open()
        check_wire(event)
        for ref in self._subscribers.get(run_id_of(channel), ()):
            sub = ref()
            if sub is not None and sub.wire:
                sub.offer(event)

    async def store_event(self, run_id: str, event: dict[str, Any]) -> None:
        """Store, and hand to followers (who read stored events only)."""
        self._check_open()
        check_wire(event)
        self._log(run_id).append(event, self._max_events_per_run)
        for ref in self._subscribers.get(run_id, ()):
            sub = ref()
            if sub is not None and not sub.wire:
                sub.offer(event)

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Live events on ``channel`` from now on (Dockrion's semantics)."""
        self._check_open()
        run_id = run_id_of(channel)
        log_ = self._events.get(run_id)
        sub = self._attach(run_id, log_.last_sequence if log_ else 0)
        sub.wire = True
        return sub  # yields wire dicts, since ``wire`` is set

    async def get_events(self, run_id: str, from_sequence: int = 0) -> list[dict[str, Any]]:
        return [as_wire(e) for e in await self.read(run_id, from_sequence)]

    async def read(self, run_id: str, from_sequence: int = 0) -> list[StoredEvent]:
        log_ = self._events.get(run_id)
        return log_.from_sequence(from_sequence) if log_ is not None else []

    async def clear_run(self, run_id: str) -> None:
        self._events.pop(run_id, None)

    async def close(self) -> None:
        """End every subscriber at once; later calls raise ``BackendClosedError``."""
        self._closed = True
        for refs in list(self._subscribers.values()):
            for ref in refs:
                sub = ref()
                if sub is not None:
                    sub.close()
        self._subscribers.clear()

    # -- ours ------------------------------------------------------------------------------

    async def append(self, run_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Models are kept as compact records (no serialising inside one process), dicts as
        they are.

        Models come checked from the bus (``check_publishable``); dicts are checked here. A
        batch is refused whole, before anything of it is stored."""
        self._check_open()
        unnumbered = 0
        for event in events:
            if isinstance(event, dict):
                check_wire(event)
                unnumbered += not event.get("sequence")
            else:
                unnumbered += not event.sequence
        log_ = self._log(run_id)
        if unnumbered and log_.last_sequence + unnumbered > MAX_SEQUENCE:
            raise _sequences_used_up(run_id)
        refs = self._subscribers.get(run_id, ())
        subs = [sub for ref in refs if (sub := ref()) is not None]
        limit = self._max_events_per_run
        stored: list[StoredEvent] = []
        for event in events:
            if isinstance(event, dict):
                if not event.get("sequence"):
                    event["sequence"] = log_.last_sequence + 1
            elif not event.sequence:
                event = with_sequence(event, log_.last_sequence + 1)
            log_.append(event, limit)
            stored.append(event)
            for sub in subs:
                sub.offer(event)
        for sub in subs:
            if len(sub.items) >= YIELD_AT:
                # Same-loop subscribers run now instead of after the whole burst.
                await asyncio.sleep(0)
                break
        return stored

    def store_one(
        self,
        run_id: str,
        event: BaseEvent,
        fields: dict[str, Any],
        extra: dict[str, Any] | None,
        unshared: bool = False,
    ) -> tuple[BaseEvent, bool]:
        """``append`` of one model of run ``run_id`` checked by the bus (its ``publish``,
        which passes the model's ``__dict__`` and extras it has read), with none of the
        batch's bookkeeping and no coroutine: the cost of this call is most of a notebook's
        publish. An ``unshared`` model (no caller holds it) is numbered in place, others in a
        copy. Returns the stored model and whether a subscriber has ``YIELD_AT`` events
        queued (the caller then lets it run)."""
        if self._closed:
            self._check_open()
        # ``_log``'s first look, inline (a run written to again): saves a call per publish
        log_ = self._events.get(run_id) if run_id == self._recent else None
        if log_ is None:
            log_ = self._log(run_id)
        private = event.__pydantic_private__
        seq = fields["sequence"]
        if not seq:
            seq = log_.last_sequence + 1
            if seq > MAX_SEQUENCE:
                raise _sequences_used_up(run_id)
            if unshared:
                fields["sequence"] = seq  # nobody else can see it change
            else:
                event = numbered(event, fields, extra, private, seq)
        item = record_of(type(event), fields, extra, private, run_id) or event
        log_.add(item, seq, self._max_events_per_run)
        crowded = False
        refs = self._subscribers.get(run_id)
        if refs:
            for ref in refs:
                sub = ref()
                if sub is not None and sub.offer(event) >= YIELD_AT:
                    crowded = True
        return event, crowded

    def follow_models(
        self, run_id: str, from_sequence: int = 1, *, live: bool = True
    ) -> AsyncIterator[BaseEvent]:
        """``follow`` handing out parsed event models, each sequence once: what
        ``EventBus.subscribe`` returns on this backend, with no layer in between."""
        sub = self.follow(run_id, from_sequence, live=live)
        sub.models = True
        return sub

    def follow(self, run_id: str, from_sequence: int = 1, *, live: bool = True) -> _Subscription:
        """Snapshot and attach in one synchronous step (no await between them), so nothing
        published meanwhile can fall between the replay and the live part."""
        self._check_open()
        from_sequence = max(1, from_sequence)
        log_ = self._events.get(run_id)
        replay = log_.reader(from_sequence) if log_ is not None else None
        # ``last_sequence`` counts what was handed out; the replay is handed out first.
        last = from_sequence - 1
        sub = self._attach(run_id, last) if live else _Subscription(self, run_id, last, 1)
        if replay is not None and replay.first > from_sequence:
            sub.pending.append(
                gap_event(run_id, from_sequence, replay.first - 1, "trimmed by max_events_per_run")
            )
        sub.replay = replay
        sub.replay_only = not live
        return sub

    async def list_runs(self, pattern: str | None = None) -> list[RunSummary]:
        return [
            _summary(run_id, log_)
            for run_id, log_ in self._events.items()
            if not pattern or fnmatch.fnmatchcase(run_id, pattern)
        ]

    async def summary(self, run_id: str) -> RunSummary | None:
        """What this backend holds of one run (None: nothing)."""
        log_ = self._events.get(run_id)
        return _summary(run_id, log_) if log_ is not None and len(log_) else None

    def subscriber_count(self, run_id: str) -> int:
        """Live subscriptions of ``run_id`` (collected ones are not counted)."""
        return sum(ref() is not None for ref in self._subscribers.get(run_id, ()))

    def get_subscriber_count(self, channel: str) -> int:
        """Dockrion's form: live subscribers of ``channel`` (``run:{run_id}``)."""
        return self.subscriber_count(run_id_of(channel))

    def get_event_count(self, run_id: str) -> int:
        """Stored events of ``run_id`` (after trimming), as in Dockrion."""
        log_ = self._events.get(run_id)
        return len(log_) if log_ is not None else 0

    async def last_sequence(self, run_id: str) -> int:
        """The highest sequence stored for ``run_id`` (0: none)."""
        log_ = self._events.get(run_id)
        return log_.last_sequence if log_ is not None else 0

    # -- internals ---------------------------------------------------------------------------

    def _log(self, run_id: str) -> RunLog:
        """The run's log, made the most recently written run (``max_runs`` evicts the least)."""
        events = self._events
        log_ = events.get(run_id)
        if log_ is not None and run_id == self._recent:  # a run written to again: the usual
            return log_
        self._recent = run_id
        if log_ is None:
            log_ = events[run_id] = RunLog(run_id)
            if self._max_runs is not None and len(events) > self._max_runs:
                self._evict(len(events) - self._max_runs)
        elif next(reversed(events)) != run_id:
            del events[run_id]
            events[run_id] = log_
        return log_

    def _evict(self, count: int) -> None:
        gone = [run_id for run_id, _ in zip(self._events, range(count), strict=False)]
        for run_id in gone:
            del self._events[run_id]
        self.evicted_runs += len(gone)
        log.warning(
            "memory backend holds at most %d runs (max_runs): evicted %s, the least recently "
            "written",
            self._max_runs,
            ", ".join(repr(r) for r in gone),
        )

    def _attach(self, run_id: str, after: int) -> _Subscription:
        sub = _Subscription(self, run_id, after, self._queue_size)

        def collected(ref: weakref.ref[_Subscription], run_id: str = run_id) -> None:
            self._remove_ref(run_id, ref)

        refs = self._subscribers.get(run_id, [])
        self._subscribers[run_id] = [*refs, weakref.ref(sub, collected)]
        return sub

    def _detach(self, sub: _Subscription) -> None:
        for ref in self._subscribers.get(sub.run_id, ()):
            if ref() is sub:
                self._remove_ref(sub.run_id, ref)
                return

    def _remove_ref(self, run_id: str, dead: weakref.ref[_Subscription]) -> None:
        refs = self._subscribers.get(run_id)
        if refs is None or dead not in refs:
            return
        rest = [r for r in refs if r is not dead]
        if rest:
            self._subscribers[run_id] = rest
        else:
            del self._subscribers[run_id]
