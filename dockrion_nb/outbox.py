"""An ordered, batched hand-off of one run's events to the loop its bus lives on.

Why: agent code emits from its own threads (LangChain callbacks, SDK stream readers, OTel span
processors), and a publish that waits for the bus's loop costs the agent a thread hop and a
round trip per event: 50-200 us a token on a quiet machine, milliseconds on a busy one. Here a
sync emit appends to a deque and, when no drain is under way, wakes the loop once; one drain
task publishes what has gathered in order, in batches (one Redis round trip per batch). The
agent's thread never waits for I/O, so the cost per event is an append.

What callers can rely on:

- Order: events leave in the order they were put, whichever thread put them.
- Refusals stay synchronous: events are checked (``check_publishable``) before they are put,
  so a bad event is an error in the caller, as with a blocking publish.
- Nothing silently lost: a transient backend failure is retried with backoff (retried batches
  are never stored twice: our Redis script recognises them by event id); a batch that still
  fails is reported, once, by the next ``put`` or ``flush`` from a sync caller, and logged.
- ``flush`` waits until everything put before it is stored, and a waiter given to ``put``
  resolves with the stored event (its sequence): how async emits, terminal events and reads
  that follow writes get their guarantees.
- Backpressure: a producer more than ``HIGH_WATER`` events ahead of the bus waits (unless it
  runs on the bus's own loop, which must not block), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .backends.base import BackendClosedError, BackendConnectionError
from .events import BaseEvent
from .redaction import masked_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from .bus import EventBus

log = masked_logger("dockrion_nb.outbox")

BATCH = 1000
"""Events per publish: one round trip on Redis."""
HIGH_WATER = 20_000
"""Events waiting before a producer thread waits for the bus."""
LINGER = 0.0005
"""Seconds a drain waits on an empty queue before it ends (see ``Outbox._next_batch``)."""
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0)
"""Seconds between attempts at a batch the backend could not take (about 8 s in all)."""

Waiter = concurrent.futures.Future[BaseEvent | None]
_FLUSH = None  # a marker in the queue: its waiter resolves once everything before it is stored


def _release(future: asyncio.Future[None]) -> None:
    """End a drain's linger (from its timer or from a ``put``), once."""
    if not future.done():
        future.set_result(None)


class OutboxError(RuntimeError):
    """Events put earlier could not be stored; the message says how many and why."""


class Outbox:
    """Events of one run on their way to ``bus``, which lives on ``loop``."""

    def __init__(
        self,
        bus: EventBus,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        on_stored: Callable[[BaseEvent], None],
    ) -> None:
        self._bus = bus
        self._run_id = run_id
        self._loop = loop
        self._on_stored = on_stored
        self._items: deque[tuple[BaseEvent | None, Waiter | None]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._draining = False  # a drain is scheduled or running
        self._failure: OutboxError | None = None
        self._degraded = False  # the last batch failed: try the next ones once, no retries
        self._in_flight = False  # a batch is being stored
        self._linger: asyncio.Future[None] | None = None  # set while the drain lingers

    @property
    def busy(self) -> bool:
        """Whether events are waiting or being stored."""
        return bool(self._items) or self._in_flight

    def put(self, event: BaseEvent | None, waiter: Waiter | None = None) -> None:
        """Queue ``event`` (``None``: a flush marker) behind everything put before it."""
        on_loop = self._on_loop()
        with self._cond:
            if not on_loop:
                while len(self._items) >= HIGH_WATER and self._draining:
                    self._cond.wait(1.0)
            self._items.append((event, waiter))
            linger: asyncio.Future[None] | None = None
            if not self._draining:
                self._draining = True
            elif self._linger is not None:  # the drain waits on an empty queue: end the wait
                linger, self._linger = self._linger, None  # one wake-up per linger
            else:
                return  # the drain is busy: it takes this with its next batch
        try:
            if linger is not None:
                self._loop.call_soon_threadsafe(_release, linger)
            else:
                self._loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop is closed: nothing will ever drain
            with self._cond:
                self._items.clear()
                self._draining = False
            raise BackendClosedError(
                f"the loop that publishes run {self._run_id!r} is closed", backend="engine"
            ) from None

    def raise_failure(self) -> None:
        """Raise (once) the failure of events put earlier, for a sync caller to see."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def flush(self, timeout: float | None, *, report: bool = True) -> None:
        """Block until everything put so far is stored (from a thread not running the loop);
        with ``report``, then raise the failure of events put earlier, if any."""
        if self.busy:
            waiter: Waiter = concurrent.futures.Future()
            self.put(_FLUSH, waiter)
            try:
                waiter.result(timeout)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(
                    f"publishing to run {self._run_id} took longer than {timeout} s"
                ) from None
        if report:
            self.raise_failure()

    async def aflush(self) -> None:
        """``flush`` for async callers (on the bus's loop or another)."""
        if not self.busy:
            return
        waiter: Waiter = concurrent.futures.Future()
        self.put(_FLUSH, waiter)
        await asyncio.wrap_future(waiter)

    # -- on the loop -------------------------------------------------------------------------------

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _start(self) -> None:
        self._loop.create_task(self._drain())

    def _take(self, *, finish: bool) -> list[tuple[BaseEvent | None, Waiter | None]]:
        """The next batch; with ``finish``, an empty queue ends the drain (the next ``put``
        starts another)."""
        with self._cond:
            items = self._items
            if not items:
                if finish:
                    self._draining = False
                self._cond.notify_all()
                return []
            batch = [items.popleft() for _ in range(min(BATCH, len(items)))]
            self._in_flight = True
            self._cond.notify_all()
            return batch

    async def _next_batch(self) -> list[tuple[BaseEvent | None, Waiter | None]]:
        """What to publish next. An empty queue is given ``LINGER`` seconds to fill before the
        drain ends (the drain task is not started again for each event of a steady producer);
        the first ``put`` meanwhile ends the wait at once, so lingering never delays an event."""
        batch = self._take(finish=False)
        if batch:
            return batch
        linger = self._loop.create_future()
        with self._cond:
            if self._items:  # put between the two looks: no wake-up is coming for it
                linger.set_result(None)
            else:
                self._linger = linger
        timer = self._loop.call_later(LINGER, _release, linger)
        try:
            await linger
        finally:
            timer.cancel()
            with self._cond:
                if self._linger is linger:
                    self._linger = None
        return self._take(finish=True)

    async def _drain(self) -> None:
        while batch := await self._next_batch():
            events = [e for e, _ in batch if e is not None]
            stored: list[BaseEvent] = []
            error: BaseException | None = None
            if events:
                try:
                    stored = await self._publish(events)
                except asyncio.CancelledError:
                    error = BackendClosedError(
                        f"publishing to run {self._run_id!r} was cancelled", backend="engine"
                    )
                except Exception as exc:
                    error = exc
            self._in_flight = False  # stored (or failed): only the waiters are left to tell
            self._settle(batch, stored, error)

    async def _publish(self, events: list[BaseEvent]) -> list[BaseEvent]:
        """``publish_many``, retried while the backend is unreachable (unless the previous
        batch already failed that way: then the queue fails fast instead of stalling)."""
        delays = () if self._degraded else RETRY_DELAYS
        deadline = time.monotonic() + sum(delays)
        for delay in (*delays, None):
            try:
                stored = await self._bus.publish_many(self._run_id, events)
            except BackendConnectionError as exc:
                if delay is None or time.monotonic() + delay > deadline:
                    self._degraded = True
                    raise
                log.info("publishing to run %s failed (%s); retrying", self._run_id, exc)
                await asyncio.sleep(delay)
            else:
                self._degraded = False
                return stored
        raise AssertionError("unreachable")  # pragma: no cover

    def _settle(
        self,
        batch: list[tuple[BaseEvent | None, Waiter | None]],
        stored: list[BaseEvent],
        error: BaseException | None,
    ) -> None:
        if error is not None:
            lost = sum(e is not None for e, _ in batch)
            failure = OutboxError(
                f"{lost} event{'s' if lost != 1 else ''} of run {self._run_id} could not be "
                f"published: {error}"
            )
            log.warning("%s", failure)
            unawaited = any(e is not None and w is None for e, w in batch)
            if unawaited and self._failure is None:  # nobody else will hear of it
                self._failure = failure
        results = iter(stored)
        for event, waiter in batch:
            result = next(results, None) if event is not None else None
            if event is not None and result is not None:
                self._on_stored(result)
            if waiter is None or waiter.done():
                continue
            if error is not None and event is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(result)


__all__ = ["HIGH_WATER", "Outbox", "OutboxError"]
