"""A block of code traced as a run: ``started`` on entry, one terminal event on exit.

``Trace`` backs ``trace()``, ``%%publish`` without ``--events-body`` and the CLI; the helpers
make any Python value or exception fit a ``complete`` or ``error`` event (JSON-safe, bounded
in size) so recording a run never fails because of what the run returned or raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
import traceback
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel

from .backends.base import RunSummary
from .context import StreamContext, context_scope
from .engine import Engine, get_engine
from .filters import EventsFilter

MAX_OUTPUT_BYTES = 256_000
MAX_TRACEBACK_CHARS = 20_000


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 text: a lone surrogate (which no backend can store) becomes its
    escape, ``\\ud800``."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` made JSON-safe: containers recursed, models dumped, anything else as repr.

    Lenient on purpose (a run's output or error must always be recordable), where publishing
    an event is strict (``events.check_content``)."""
    if isinstance(value, str):
        return utf8_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth > 32:
        return repr(value)[:200]
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json"), _depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), _depth + 1)
    if isinstance(value, Mapping):
        return {utf8_text(str(k)): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bytearray):
        return bytes(value).decode("utf-8", "replace")
    for method in ("tolist", "item", "to_dict"):  # numpy arrays/scalars, pandas objects
        fn = getattr(value, method, None)
        if callable(fn):
            try:
                return jsonable(fn(), _depth + 1)
            except Exception:
                break
    text = utf8_text(repr(value))
    return text if len(text) <= 2000 else text[:2000] + "..."


def output_of(value: Any) -> dict[str, Any]:
    """A ``complete`` event's ``output``: a dict as itself, anything else under ``result``."""
    if value is None:
        return {}
    safe = jsonable(value)
    out = safe if isinstance(safe, dict) else {"result": safe}
    text = json.dumps(out, ensure_ascii=False)
    if len(text.encode()) > MAX_OUTPUT_BYTES:
        return {"result": repr(value)[:2000], "truncated": True, "size_bytes": len(text)}
    return out


def error_details(exc: BaseException, tb_text: str | None = None) -> dict[str, Any]:
    """An ``error`` event's details: the qualified exception type and a bounded traceback."""
    kind = type(exc)
    if tb_text is None:
        tb_text = "".join(traceback.format_exception(exc))
    if len(tb_text) > MAX_TRACEBACK_CHARS:
        tb_text = "...\n" + tb_text[-MAX_TRACEBACK_CHARS:]
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else (f"{kind.__module__}.{kind.__qualname__}")
    )
    return {"exception_type": name, "traceback": utf8_text(tb_text)}


CANCELLING = (KeyboardInterrupt, asyncio.CancelledError)
TRACE_MODES = ("new", "replace", "append")
TraceMode = Literal["new", "replace", "append"]


class RunExistsError(ValueError):
    """A traced run was started on a run id that already holds events (a re-run cell), with
    ``mode="new"``. The caller chooses: ``replace`` clears the old run first, ``append`` adds
    to it (a second ``started`` then begins a new attempt)."""

    def __init__(self, run_id: str, summary: RunSummary, how: str | None = None) -> None:
        self.run_id = run_id
        self.summary = summary
        events = f"{summary.event_count} event{'s' if summary.event_count != 1 else ''}"
        choice = how or "pass mode='replace' to clear it first, or mode='append' to add to it"
        super().__init__(f"run {run_id} already holds {events} ({summary.status}): {choice}")


class Trace:
    """A traced run: ``started`` on entry, then ``complete``, ``error`` or ``cancelled``.

    ``with trace("run-1") as ctx:`` (or ``async with``) gives the run's ``StreamContext``; an
    exception is recorded as an ``error`` event and still raised, ``KeyboardInterrupt`` and
    task cancellation as ``cancelled``. If the body emits its own terminal event (for example
    ``ctx.emit_complete(output=...)``), no second one is sent.
    """

    def __init__(
        self,
        run_id: str,
        *,
        agent: str | None = None,
        framework: str | None = None,
        events: EventsFilter | str | list[str] | None = None,
        integrations: Iterable[str] = (),
        mode: TraceMode = "new",
        engine: Engine | None = None,
    ) -> None:
        if mode not in TRACE_MODES:
            raise ValueError(f"mode must be one of {', '.join(TRACE_MODES)}, not {mode!r}")
        self.mode = mode
        if isinstance(events, str):
            events = EventsFilter.parse(events)
        self.engine = engine or get_engine()
        self.ctx: StreamContext = self.engine.context(
            run_id, agent_name=agent, framework=framework, events_filter=events
        )
        self.ctx.traced = True
        self.integrations = tuple(integrations)
        self.output: Any = None
        self._t0: float | None = None
        self._scope: contextlib.ExitStack | None = None

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def finished(self) -> bool:
        last = self.ctx.last_event
        return last is not None and last.is_terminal

    def _latency(self) -> float | None:
        return None if self._t0 is None else round(time.perf_counter() - self._t0, 6)

    # sync steps, shared by the context manager and %%publish

    async def prepare(self) -> None:
        """Before ``started``: what ``mode`` asks of a run id that already holds events (on
        the engine loop)."""
        if self.mode == "append":
            return
        bus = self.ctx.bus
        if self.mode == "replace":
            await bus.clear_run(self.run_id)
            return
        summary = await bus.run_summary(self.run_id)
        if summary is not None and summary.event_count:
            raise RunExistsError(self.run_id, summary)

    def start(self) -> None:
        self.engine.run(self.prepare())
        self._t0 = time.perf_counter()
        self.ctx.sync_emit_started()

    def _metadata(self) -> dict[str, Any]:
        """What integrations learnt about the run: token usage summed over its LLM calls."""
        return {"usage": dict(self.ctx.usage)} if self.ctx.usage else {}

    def _error_fields(
        self, exc: BaseException, tb_text: str | None = None
    ) -> tuple[str, str, dict[str, Any]]:
        """An error event's message, code and details; the failing step named when an
        integration saw which one it was."""
        message = utf8_text(str(exc) or type(exc).__name__)
        details = error_details(exc, tb_text)
        node = self.ctx.failed_step
        if node:
            details["node"] = node
            message = f"{node}: {message}"
        return message, type(exc).__name__, details

    def complete(self, output: Any = None) -> None:
        if not self.finished:
            self.ctx.sync_emit_complete(output_of(output), self._latency(), self._metadata())
        self._settle()

    def fail(self, exc: BaseException, tb_text: str | None = None) -> None:
        if not self.finished:
            self.ctx.sync_emit_error(*self._error_fields(exc, tb_text))
        self._settle()

    def cancel(self, reason: str) -> None:
        if not self.finished:
            self.ctx.sync_emit_cancelled(reason)
        self._settle()

    def _settle(self) -> None:
        """Once the run has ended, let this process's live views of it show the end before
        the caller (a cell) goes on."""
        if self.finished:
            self.engine.settle_followers(self.run_id)

    def end(self, exc: BaseException | None, tb_text: str | None = None) -> None:
        """Emit the terminal event for how the body ended."""
        if exc is None:
            self.complete(self.output)
        elif isinstance(exc, CANCELLING):
            self.cancel(f"interrupted ({type(exc).__name__})")
        else:
            self.fail(exc, tb_text)

    def scope(self) -> contextlib.ExitStack:
        """The context the traced code runs in: this run current, integrations installed."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(context_scope(self.ctx))
            if self.integrations:
                from .integrations import cell_scope

                stack.enter_context(cell_scope(self.ctx, self.integrations))
        except BaseException:
            stack.close()
            raise
        return stack

    def __enter__(self) -> StreamContext:
        self.start()
        try:
            self._scope = self.scope()
        except BaseException as exc:
            self.end(exc)
            raise
        return self.ctx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.close()
        self.end(exc)

    async def __aenter__(self) -> StreamContext:
        await self.engine.arun(self.prepare())
        self._t0 = time.perf_counter()
        await self.ctx.emit_started()
        try:
            self._scope = self.scope()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self.ctx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scope is not None:
            self._scope.close()
        if not self.finished:
            if exc is None:
                await self.ctx.emit_complete(
                    output_of(self.output), self._latency(), self._metadata()
                )
            elif isinstance(exc, CANCELLING):
                await self.ctx.emit_cancelled(f"interrupted ({type(exc).__name__})")
            else:
                await self.ctx.emit_error(*self._error_fields(exc))
        if self.finished and not self.engine.in_engine_thread:
            await asyncio.to_thread(self.engine.settle_followers, self.run_id)
