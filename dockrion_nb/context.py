"""``StreamContext``: the API agent code calls to emit the events of one run.

Method for method the agent-author API of Dockrion's StreamContext. Differences that matter:
sequences are left to the bus (so writers in several processes never collide), ``sync_*``
methods work from any thread, with or without a running event loop, and keep emission order,
and when the bus lives on another thread's loop (the notebook engine) calls are carried there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from .bus import EventBus
from .events import (
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
)
from .filters import EventsFilter
from .redaction import masked_logger

log = masked_logger("dockrion_nb.context")

_current: contextvars.ContextVar[StreamContext | None] = contextvars.ContextVar(
    "dockrion_nb_stream_context", default=None
)


def get_current_context() -> StreamContext | None:
    """The context of the run being traced in this task or thread, if any."""
    return _current.get()


@contextlib.contextmanager
def context_scope(ctx: StreamContext | None) -> Iterator[StreamContext | None]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


class StreamContext:
    """Emit the events of one run through an ``EventBus``.

    ``loop`` is the loop the bus lives on, when that is not the caller's (the notebook engine
    passes its own); ``timeout`` bounds how long a sync call waits for it.
    """

    def __init__(
        self,
        run_id: str,
        bus: EventBus,
        agent_name: str | None = None,
        framework: str | None = None,
        events_filter: EventsFilter | str | list[str] | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._run_id = validate_run_id(run_id)
        self._bus = bus
        self._agent_name = agent_name
        self._framework = framework
        if events_filter is not None and not isinstance(events_filter, EventsFilter):
            events_filter = EventsFilter(events_filter)
        self._filter = events_filter
        self._loop = loop
        self._timeout = timeout
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._ordered: dict[asyncio.AbstractEventLoop, asyncio.Queue[BaseEvent]] = {}
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
        return self._bus

    @property
    def events_filter(self) -> EventsFilter | None:
        return self._filter

    def _allowed(self, event_type: str, custom_name: str | None = None) -> bool:
        return self._filter is None or self._filter.is_allowed(event_type, custom_name)

    # -- carrying a publish to the bus's loop ---------------------------------------------------

    async def _publish(self, event: BaseEvent) -> BaseEvent:
        target = self._loop
        running = asyncio.get_running_loop()
        if target is None or target is running:
            stored = await self._bus.publish(self._run_id, event)
        else:
            fut = asyncio.run_coroutine_threadsafe(self._bus.publish(self._run_id, event), target)
            stored = await asyncio.wrap_future(fut)
        self.emitted += 1
        self.last_event = stored
        return stored

    def _sync_publish(self, event: BaseEvent) -> bool:
        """Publish from sync code and wait, unless that would block this thread's own loop."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        target = self._loop
        if target is not None and target is not running and target.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._publish(event), target)
            try:
                fut.result(self._timeout)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise TimeoutError(
                    f"publishing to run {self._run_id} took longer than {self._timeout} s"
                ) from None
            return True
        if running is not None:
            # Called from sync code inside a running loop: we cannot block it, so queue the
            # event behind earlier ones and let one task publish them in order. Checked now,
            # so a refused event is an error here, not a log line from that task.
            check_publishable(event)
            self._enqueue_ordered(running, event)
            return True
        with self._lock:
            if self._private_loop is None:
                self._private_loop = asyncio.new_event_loop()
            loop = self._private_loop
            loop.run_until_complete(self._publish(event))
        return True

    def _enqueue_ordered(self, loop: asyncio.AbstractEventLoop, event: BaseEvent) -> None:
        queue = self._ordered.get(loop)
        if queue is None:
            queue = self._ordered[loop] = asyncio.Queue()
            loop.create_task(self._drain(loop, queue))
        queue.put_nowait(event)

    async def _drain(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[BaseEvent]
    ) -> None:
        try:
            while not queue.empty():
                event = queue.get_nowait()
                try:
                    await self._publish(event)
                except Exception:
                    log.exception("could not publish %s event of run %s", event.type, self._run_id)
        finally:
            self._ordered.pop(loop, None)

    async def flush(self) -> None:
        """Wait until events queued by ``sync_*`` calls inside this loop are published."""
        while self._ordered.get(asyncio.get_running_loop()) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    def close(self) -> None:
        """Release the private loop used by ``sync_*`` calls made with no loop running."""
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
        kind = custom_type(event_type)
        if not self._allowed(kind):
            return None
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
        ``emit("fraud_check", score=0.1)``; its type is ``custom:fraud_check``."""
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
