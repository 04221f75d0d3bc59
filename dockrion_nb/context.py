"""``StreamContext``: the API agent code calls to emit the events of one run.

Method for method the agent-author API of Dockrion's StreamContext, constructor included: with
a bus, events are published (bus mode); with ``queue_mode=True`` they are numbered here and
kept for an adapter to drain, or handed to a ``streaming_backend`` (``streaming``) first.
Differences that matter: in bus mode sequences are left to the bus (so writers in several
processes never collide), ``sync_*`` methods work from any thread, with or without a running
event loop, and keep emission order, and when the bus lives on another thread's loop (the
notebook engine) calls are carried there.

Custom events: ``emit("fraud_check", ...)`` writes Dockrion's type, the plain name
``fraud_check``. Contexts made with ``prefix_custom=True`` (the ones ``%%publish``, ``trace()``
and the CLI hand out) write ``custom:fraud_check``, the form our tables, filters and widget
document. Either way the events filter judges the event as ``("custom", "fraud_check")``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .bus import EventBus
from .events import (
    CUSTOM_PREFIX,
    EVENT_CLASSES,
    TERMINAL_TYPES,
    BaseEvent,
    CancelledEvent,
    CheckpointEvent,
    CompleteEvent,
    CustomEvent,
    ErrorEvent,
    HeartbeatEvent,
    ProgressEvent,
    StartedEvent,
    StepEvent,
    TokenEvent,
    check_publishable,
    custom_type,
    validate_run_id,
    with_sequence,
)
from .filters import EventsFilter
from .outbox import Outbox
from .redaction import masked_logger

if TYPE_CHECKING:
    from .streaming import StreamingBackend

log = masked_logger("dockrion_nb.context")

_current: contextvars.ContextVar[StreamContext | None] = contextvars.ContextVar(
    "dockrion_nb_stream_context", default=None
)


def get_current_context() -> StreamContext | None:
    """The context of the run being traced in this task or thread, if any.

    When none is set here but ``dockrion_events`` is loaded and has one (Dockrion's adapters
    set theirs before running a graph), that one: node code that switched its import to
    ``dockrion_nb`` still finds the context Dockrion's runtime gave it."""
    ctx = _current.get()
    if ctx is None:
        theirs = sys.modules.get("dockrion_events.context")
        if theirs is not None:
            found: StreamContext | None = theirs.get_current_context()
            return found
    return ctx


def set_current_context(context: StreamContext | None) -> None:
    """Make ``context`` the current one for this task or thread (``None`` clears it), as
    Dockrion's adapters do before running a graph; ``context_scope`` also restores the
    previous one."""
    _current.set(context)


@contextlib.contextmanager
def context_scope(context: StreamContext | None) -> Iterator[StreamContext | None]:
    """``context`` is the current context inside the block; the previous one comes back after."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


class StreamContext:
    """Emit the events of one run through an ``EventBus``, or into a queue (``queue_mode``).

    ``events_filter`` is an ``EventsFilter`` or what one takes (a preset name, a list).
    ``streaming_backend`` (queue mode) gets each event first; what it declines is queued.
    ``prefix_custom`` writes custom events as ``custom:<name>``. ``loop`` is the loop the bus
    lives on, when that is not the caller's (the notebook engine passes its own); ``timeout``
    bounds how long a sync call waits for it.
    """

    def __init__(
        self,
        run_id: str,
        bus: EventBus | None = None,
        agent_name: str | None = None,
        framework: str | None = None,
        queue_mode: bool = False,
        events_filter: EventsFilter | str | list[str] | None = None,
        streaming_backend: StreamingBackend | None = None,
        *,
        prefix_custom: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not queue_mode and bus is None:
            raise ValueError(
                "EventBus required when queue_mode is False: pass bus=EventBus(backend), or "
                "queue_mode=True to keep the events for an adapter to drain"
            )
        self._run_id = validate_run_id(run_id)
        self._bus = bus
        self._agent_name = agent_name
        self._framework = framework
        if events_filter is not None and not isinstance(events_filter, EventsFilter):
            events_filter = EventsFilter(events_filter)
        self._events_filter = events_filter
        self._queue_mode = queue_mode
        self._streaming_backend = streaming_backend
        self._event_queue: deque[BaseEvent] = deque()
        self._sequence = 0  # queue mode numbers its own events (there is no bus to do it)
        self._prefix_custom = prefix_custom
        self._loop = loop
        self._timeout = timeout
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._outboxes: dict[asyncio.AbstractEventLoop, Outbox] = {}
        self.emitted = 0
        self.last_event: BaseEvent | None = None
        # Set by integrations (``integrations.steps``) and read by ``Trace``: the step whose
        # failure ended the run, and token usage summed over the run's LLM calls.
        self.failed_step: str | None = None
        self.usage: dict[str, Any] = {}
        # True while a ``Trace`` owns this run's terminal event (it emits complete/error).
        self.traced = False

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def bus(self) -> EventBus:
        if self._bus is None:
            raise ValueError(
                f"the context of run {self._run_id!r} is in queue mode and has no bus: its "
                "events are drained with drain_queued_events()"
            )
        return self._bus

    @property
    def events_filter(self) -> EventsFilter | None:
        return self._events_filter

    @property
    def queue_mode(self) -> bool:
        return self._queue_mode

    @property
    def streaming_backend(self) -> StreamingBackend | None:
        return self._streaming_backend

    def _allowed(self, event_type: str, custom_name: str | None = None) -> bool:
        f = self._events_filter
        return f is None or f.is_allowed(event_type, custom_name)

    # -- queue mode ------------------------------------------------------------------------------

    def _queue(self, event: BaseEvent) -> BaseEvent:
        """Number ``event``, offer it to the streaming backend, else keep it for draining."""
        with self._lock:
            self._sequence += 1
            event = with_sequence(event, self._sequence)
        backend = self._streaming_backend
        taken = False
        if backend is not None:
            try:
                taken = bool(backend.emit(event))
            except Exception:
                log.debug("streaming backend %s refused an event; queued", backend.name)
        if not taken:
            self._event_queue.append(event)
        self.emitted += 1
        self.last_event = event
        return event

    def drain_queued_events(self) -> list[BaseEvent]:
        """The queued events in emission order; the queue is empty afterwards."""
        out: list[BaseEvent] = []
        queue = self._event_queue
        while queue:
            try:
                out.append(queue.popleft())
            except IndexError:  # drained by another thread meanwhile
                break
        return out

    def has_queued_events(self) -> bool:
        return bool(self._event_queue)

    def queue_size(self) -> int:
        return len(self._event_queue)

    # -- carrying a publish to the bus's loop ---------------------------------------------------

    def _outbox(self, loop: asyncio.AbstractEventLoop) -> Outbox:
        """This run's ordered hand-off to ``loop`` (one per loop the bus is driven from)."""
        box = self._outboxes.get(loop)
        if box is None:
            with self._lock:
                box = self._outboxes.get(loop)
                if box is None:
                    box = Outbox(self.bus, self._run_id, loop, self._stored)
                    self._outboxes[loop] = box
        return box

    def _stored(self, event: BaseEvent) -> None:
        self.emitted += 1
        self.last_event = event

    @property
    def pending(self) -> bool:
        """Whether events emitted here are still on their way to the bus."""
        return any(box.busy for box in list(self._outboxes.values()))

    def _target(self) -> tuple[asyncio.AbstractEventLoop | None, asyncio.AbstractEventLoop | None]:
        """(the loop the bus lives on, or None when there is none to use; this thread's)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        target = self._loop
        if target is None or not target.is_running():
            target = running
        return target, running

    async def _publish(self, event: BaseEvent) -> BaseEvent:
        if self._queue_mode or self._bus is None:
            return self._queue(event)
        target, running = self._target()
        assert running is not None
        target = target or running
        box = self._outboxes.get(target)
        if target is running and (box is None or not box.busy):
            stored = await self._bus.publish(self._run_id, event)  # nothing queued ahead of it
            self._stored(stored)
            return stored
        check_publishable(event)  # a refusal is this caller's error, not a failed batch
        waiter: concurrent.futures.Future[BaseEvent | None] = concurrent.futures.Future()
        self._outbox(target).put(event, waiter)
        stored_event = await asyncio.wrap_future(waiter)
        assert stored_event is not None
        return stored_event

    def _sync_publish(self, event: BaseEvent) -> bool:
        """Hand ``event`` to the bus's loop without waiting for it to be stored (in order with
        everything else this context emits); a terminal event waits, so that when
        ``sync_emit_complete`` returns the whole run is stored. With no loop anywhere, publish
        on a private one and wait."""
        if self._queue_mode or self._bus is None:
            self._queue(event)
            return True
        target, running = self._target()
        if target is None:
            with self._lock:
                if self._private_loop is None:
                    self._private_loop = asyncio.new_event_loop()
                loop = self._private_loop
                loop.run_until_complete(self._publish(event))
            return True
        check_publishable(event)  # refused here, in the caller, never in the drain
        box = self._outbox(target)
        box.raise_failure()
        if event.type in TERMINAL_TYPES and target is not running:
            waiter: concurrent.futures.Future[BaseEvent | None] = concurrent.futures.Future()
            box.put(event, waiter)
            try:
                waiter.result(self._timeout)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(
                    f"publishing to run {self._run_id} took longer than {self._timeout} s"
                ) from None
            return True
        box.put(event)
        return True

    async def flush(self) -> None:
        """Wait until every event emitted here so far is stored."""
        for box in list(self._outboxes.values()):
            await box.aflush()

    def sync_flush(self, timeout: float | None = None, *, report: bool = True) -> None:
        """Block until every event emitted here so far is stored; with ``report``, raise if
        some could not be (``OutboxError``, once). From a thread that is not the bus's."""
        for box in list(self._outboxes.values()):
            box.flush(self._timeout if timeout is None else timeout, report=report)

    def close(self) -> None:
        """Wait for events still on their way, and release the private loop used by
        ``sync_*`` calls made with no loop running."""
        with contextlib.suppress(Exception):
            target, running = self._target()
            if target is not running:
                self.sync_flush(report=False)
        with self._lock:
            if self._private_loop is not None:
                self._private_loop.close()
                self._private_loop = None

    # -- event builders ------------------------------------------------------------------------

    def _started(self, agent_name: str | None, framework: str | None) -> StartedEvent:
        return StartedEvent(
            run_id=self._run_id,
            agent_name=agent_name or self._agent_name,
            framework=framework or self._framework,
        )

    def _custom(
        self, event_type: str, data: Mapping[str, Any] | None, fields: dict[str, Any]
    ) -> CustomEvent | None:
        name = (
            event_type[len(CUSTOM_PREFIX) :] if event_type.startswith(CUSTOM_PREFIX) else event_type
        )
        if not self._allowed("custom", name):
            return None
        kind = custom_type(event_type) if self._prefix_custom else event_type
        if kind in EVENT_CLASSES:
            raise ValueError(
                f"custom event name {event_type!r} is a built-in event type: use that type's "
                f"own method, or another name (e.g. 'custom:{event_type}')"
            )
        payload = {**(data or {}), **fields}
        reserved = {"id", "type", "run_id", "sequence", "timestamp"} & payload.keys()
        if reserved:
            raise ValueError(f"custom event fields may not use reserved names: {sorted(reserved)}")
        return CustomEvent(run_id=self._run_id, type=kind, **payload)

    # -- any event ---------------------------------------------------------------------------------

    async def emit_event(
        self, event: BaseEvent, *, filter_as: str | None = None
    ) -> BaseEvent | None:
        """Publish a ready-made event of this run (integrations build steps with extra fields).

        The events filter is applied to ``filter_as`` (default: the event's type), so a
        ``custom:step_start`` can pass or fail with ``step``."""
        if event.run_id != self._run_id:
            raise ValueError(f"event for run {event.run_id!r} emitted on run {self._run_id!r}")
        if not self._allowed(filter_as or event.type):
            return None
        return await self._publish(event)

    def sync_emit_event(self, event: BaseEvent, *, filter_as: str | None = None) -> bool:
        """``emit_event`` from sync code, in any thread."""
        if event.run_id != self._run_id:
            raise ValueError(f"event for run {event.run_id!r} emitted on run {self._run_id!r}")
        if not self._allowed(filter_as or event.type):
            return False
        return self._sync_publish(event)

    # -- async API -------------------------------------------------------------------------------

    async def emit_started(
        self, agent_name: str | None = None, framework: str | None = None
    ) -> BaseEvent:
        return await self._publish(self._started(agent_name, framework))

    async def emit_progress(
        self, step: str, progress: float, message: str | None = None
    ) -> BaseEvent | None:
        if not self._allowed("progress"):
            return None
        return await self._publish(
            ProgressEvent(run_id=self._run_id, step=step, progress=progress, message=message)
        )

    async def checkpoint(self, name: str, data: dict[str, Any]) -> BaseEvent | None:
        if not self._allowed("checkpoint"):
            return None
        return await self._publish(CheckpointEvent(run_id=self._run_id, name=name, data=data))

    async def emit_token(self, content: str, finish_reason: str | None = None) -> BaseEvent | None:
        if not self._allowed("token"):
            return None
        return await self._publish(
            TokenEvent(run_id=self._run_id, content=content, finish_reason=finish_reason)
        )

    async def emit_step(
        self,
        node_name: str,
        duration_ms: int | None = None,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> BaseEvent | None:
        if not self._allowed("step"):
            return None
        return await self._publish(
            StepEvent(
                run_id=self._run_id,
                node_name=node_name,
                duration_ms=duration_ms,
                input_keys=input_keys or [],
                output_keys=output_keys or [],
            )
        )

    async def emit_complete(
        self,
        output: dict[str, Any] | None = None,
        latency_seconds: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> BaseEvent:
        return await self._publish(
            CompleteEvent(
                run_id=self._run_id,
                output=output or {},
                latency_seconds=latency_seconds,
                metadata=metadata or {},
            )
        )

    async def emit_error(
        self, error: str, code: str = "INTERNAL_ERROR", details: dict[str, Any] | None = None
    ) -> BaseEvent:
        return await self._publish(
            ErrorEvent(run_id=self._run_id, error=error, code=code, details=details)
        )

    async def emit_heartbeat(self) -> BaseEvent | None:
        if not self._allowed("heartbeat"):
            return None
        return await self._publish(HeartbeatEvent(run_id=self._run_id))

    async def emit_cancelled(self, reason: str | None = None) -> BaseEvent:
        return await self._publish(CancelledEvent(run_id=self._run_id, reason=reason))

    async def emit(
        self, event_type: str, data: Mapping[str, Any] | None = None, **fields: Any
    ) -> BaseEvent | None:
        """A custom event: ``emit("fraud_check", {"score": 0.1})`` or
        ``emit("fraud_check", score=0.1)``; its type is ``fraud_check`` (Dockrion's), or
        ``custom:fraud_check`` on a context made with ``prefix_custom=True``."""
        event = self._custom(event_type, data, fields)
        return None if event is None else await self._publish(event)

    @contextlib.asynccontextmanager
    async def step(
        self,
        node_name: str,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> AsyncIterator[None]:
        """Time a block and emit a ``step`` event with its duration when it ends."""
        start = time.perf_counter()
        yield
        await self.emit_step(
            node_name, int((time.perf_counter() - start) * 1000), input_keys, output_keys
        )

    # -- sync API ---------------------------------------------------------------------------------

    def sync_emit_started(
        self, agent_name: str | None = None, framework: str | None = None
    ) -> bool:
        return self._sync_publish(self._started(agent_name, framework))

    def sync_emit_progress(self, step: str, progress: float, message: str | None = None) -> bool:
        if not self._allowed("progress"):
            return False
        return self._sync_publish(
            ProgressEvent(run_id=self._run_id, step=step, progress=progress, message=message)
        )

    def sync_checkpoint(self, name: str, data: dict[str, Any]) -> bool:
        if not self._allowed("checkpoint"):
            return False
        return self._sync_publish(CheckpointEvent(run_id=self._run_id, name=name, data=data))

    def sync_emit_token(self, content: str, finish_reason: str | None = None) -> bool:
        if not self._allowed("token"):
            return False
        return self._sync_publish(
            TokenEvent(run_id=self._run_id, content=content, finish_reason=finish_reason)
        )

    def sync_emit_step(
        self,
        node_name: str,
        duration_ms: int | None = None,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> bool:
        if not self._allowed("step"):
            return False
        return self._sync_publish(
            StepEvent(
                run_id=self._run_id,
                node_name=node_name,
                duration_ms=duration_ms,
                input_keys=input_keys or [],
                output_keys=output_keys or [],
            )
        )

    def sync_emit_complete(
        self,
        output: dict[str, Any] | None = None,
        latency_seconds: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        return self._sync_publish(
            CompleteEvent(
                run_id=self._run_id,
                output=output or {},
                latency_seconds=latency_seconds,
                metadata=metadata or {},
            )
        )

    def sync_emit_error(
        self, error: str, code: str = "INTERNAL_ERROR", details: dict[str, Any] | None = None
    ) -> bool:
        return self._sync_publish(
            ErrorEvent(run_id=self._run_id, error=error, code=code, details=details)
        )

    def sync_emit_heartbeat(self) -> bool:
        if not self._allowed("heartbeat"):
            return False
        return self._sync_publish(HeartbeatEvent(run_id=self._run_id))

    def sync_emit_cancelled(self, reason: str | None = None) -> bool:
        return self._sync_publish(CancelledEvent(run_id=self._run_id, reason=reason))

    def sync_emit(
        self, event_type: str, data: Mapping[str, Any] | None = None, **fields: Any
    ) -> bool:
        event = self._custom(event_type, data, fields)
        return False if event is None else self._sync_publish(event)

    @contextlib.contextmanager
    def sync_step(
        self,
        node_name: str,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> Iterator[None]:
        """Time a block of sync code and emit a ``step`` event with its duration."""
        start = time.perf_counter()
        yield
        self.sync_emit_step(
            node_name, int((time.perf_counter() - start) * 1000), input_keys, output_keys
        )
