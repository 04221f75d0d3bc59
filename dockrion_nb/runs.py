"""Runs and their lifecycle: Dockrion's ``RunManager``, ``Run`` and ``RunStatus``.

``RunManager(bus)`` creates runs (Dockrion's run-id rule, or a UUID), moves them through
``accepted -> running -> completed | failed | cancelled`` and emits each step's lifecycle event
through the run's ``StreamContext``. Where a run's state lives depends on the bus's backend:

- our ``RedisBackend``: a hash per run (``runstate:run:{run_id}``, see
  ``backends.redis.runstate``) with the stream's TTL, so any process sees any run's status,
  and a process that did not create a run can start, finish or cancel it (it gets a context
  for it on demand). Transitions that Dockrion checks (start only from ``accepted``, cancel
  only unfinished runs, create only new ids) are checked on the server, atomically.
- any other backend (memory, Dockrion's): in this process, shared by every ``RunManager`` on
  that backend object, so ``%runs`` shows them.

The sync methods of Dockrion's API (``list_runs``, ``get_stats``, ``is_terminal``,
``cleanup_run``) answer from what this manager holds: every run on the memory backend; on
Redis, the runs it created or read (``get_run`` refreshes them). ``all_runs()`` reads every
run the store holds; ``remove_run()`` deletes at once where ``cleanup_run`` can only schedule.

Where a run's state lives is ``runstore``'s job; the models are in ``runmodels``.

Errors keep Dockrion's messages as their first words (its runtime matches ``"not found"``)
and are ``RunValidationError`` (a ``ValueError``); when ``dockrion_common`` has been imported
they are also its ``ValidationError``, so Dockrion code's ``except ValidationError`` still
catches them (we never import it ourselves: it costs 0.4 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from .bus import EventBus
from .context import StreamContext
from .events import RUN_ID_PATTERN
from .filters import EventsFilter
from .runmodels import FINISHED, Run, RunCreateResponse, RunStatus
from .runstore import LocalRunStore, Outcome, store_for

log = logging.getLogger("dockrion_nb.runs")


# -- errors ---------------------------------------------------------------------------------------


class RunValidationError(ValueError):
    """A run operation refused: bad id, unknown run, a transition its status forbids."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """Dockrion's error shape (``error``, ``code``, ``message``)."""
        return {"error": type(self).__name__, "code": self.code, "message": self.message}


class RunNotFoundError(RunValidationError, LookupError):
    """No run with that id (never created, expired with its stream, or removed)."""


_flavoured: dict[type[RunValidationError], type[RunValidationError]] = {}


def _fail(cls: type[RunValidationError], message: str) -> NoReturn:
    """Raise ``cls(message)``; also a ``dockrion_common.ValidationError`` if that is loaded."""
    common = sys.modules.get("dockrion_common")
    theirs = getattr(common, "ValidationError", None) if common is not None else None
    if isinstance(theirs, type) and issubclass(theirs, Exception):
        kind = _flavoured.get(cls)
        if kind is None:
            kind = _flavoured[cls] = type(cls.__name__, (cls, theirs), {"__module__": __name__})
        raise kind(message)
    raise cls(message)


def check_run_id(run_id: str) -> None:
    """Dockrion's rule for client run ids, with its messages (then ours, naming the value)."""
    shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:57] + "...'"
    if not run_id:
        _fail(RunValidationError, "Run ID cannot be empty")
    if len(run_id) > 128:
        _fail(RunValidationError, f"Run ID must be 128 characters or less (got {len(run_id)})")
    if run_id.startswith("_"):
        _fail(RunValidationError, f"Run ID cannot start with underscore (reserved): {shown}")
    if not RUN_ID_PATTERN.fullmatch(run_id):
        _fail(
            RunValidationError,
            "Run ID must contain only alphanumeric characters, hyphens, and underscores, "
            f"and must start with an alphanumeric character: {shown}",
        )


def generate_run_id() -> str:
    """A new run id: a UUID4 string, as Dockrion's."""
    return str(uuid.uuid4())


# -- the manager ----------------------------------------------------------------------------------


class RunManager:
    """Dockrion's run lifecycle API over a bus (see the module doc for where state lives)."""

    def __init__(
        self,
        event_bus: EventBus,
        allow_client_ids: bool = True,
        agent_name: str | None = None,
        framework: str | None = None,
    ) -> None:
        self._bus = event_bus
        self._allow_client_ids = allow_client_ids
        self._agent_name = agent_name
        self._framework = framework
        self._store = store_for(event_bus)
        # The runs this manager answers its sync methods from: on a local store, the store's
        # own dict (every manager of the backend shares it); on Redis, the runs it has seen.
        self._runs: dict[str, Run] = (
            self._store.runs if isinstance(self._store, LocalRunStore) else {}
        )
        self._contexts: dict[str, StreamContext] = {}
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        """Whether run states are seen by other processes (the Redis backend)."""
        return self._store.shared

    def _context(self, run_id: str, agent_name: str | None, framework: str | None) -> StreamContext:
        ctx = StreamContext(
            run_id,
            self._bus,
            agent_name=agent_name or self._agent_name,
            framework=framework or self._framework,
        )
        self._contexts[run_id] = ctx
        return ctx

    async def _context_for(self, run_id: str) -> StreamContext:
        """This manager's context for the run, made on demand for a run created elsewhere."""
        ctx = self._contexts.get(run_id)
        if ctx is None:
            agent_name, framework = await self._store.identity(run_id)
            ctx = self._context(run_id, agent_name, framework)
        return ctx

    def _apply(
        self, run_id: str, changes: Mapping[str, Any], metadata: Mapping[str, Any] | None
    ) -> None:
        """Bring this manager's copy of a shared run up to date after a change it made."""
        if isinstance(self._store, LocalRunStore):
            return  # the store changed the very object
        run = self._runs.get(run_id)
        if run is not None:
            for name, value in changes.items():
                setattr(run, name, value)
            if metadata:
                run.metadata.update(metadata)

    async def _change(
        self,
        run_id: str,
        changes: Mapping[str, Any],
        allowed_from: frozenset[RunStatus] = frozenset(),
        refused: str = "",
        merge_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        outcome, before = await self._store.change(run_id, changes, allowed_from, merge_metadata)
        if outcome is Outcome.MISSING:
            self._forget(run_id)
            _fail(RunNotFoundError, f"Run '{run_id}' not found (never created, expired or removed)")
        if outcome is Outcome.REFUSED:
            # Dockrion's message shows the status enum as f"{status}" does: RunStatus.RUNNING
            _fail(RunValidationError, refused.format(run_id=run_id, status=before))
        self._apply(run_id, changes, merge_metadata)

    def _forget(self, run_id: str) -> None:
        if not isinstance(self._store, LocalRunStore):
            self._runs.pop(run_id, None)
        self._contexts.pop(run_id, None)

    # -- Dockrion's API ----------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        agent_name: str | None = None,
        framework: str | None = None,
    ) -> Run:
        """A new run in status ``accepted`` (``run_id`` given by a client, else a UUID)."""
        if run_id:
            if not self._allow_client_ids:
                _fail(
                    RunValidationError,
                    f"Client-provided run IDs are not allowed: {run_id!r} (leave run_id out to "
                    "get a generated one, or create the RunManager with allow_client_ids=True)",
                )
            check_run_id(run_id)
        else:
            run_id = generate_run_id()
        run = Run(run_id=run_id, status=RunStatus.ACCEPTED, metadata=metadata or {})
        agent_name, framework = agent_name or self._agent_name, framework or self._framework
        if not await self._store.create(run, agent_name, framework):
            _fail(RunValidationError, f"Run ID '{run_id}' already exists: choose another id")
        self._runs[run_id] = run
        self._context(run_id, agent_name, framework)
        log.info("run %s created", run_id)
        return run

    async def get_run(self, run_id: str) -> Run | None:
        """The run as stored now (from any process on Redis), or None."""
        stored = await self._store.load(run_id)
        if stored is None:
            self._forget(run_id)
            return None
        mine = self._runs.get(run_id)
        if mine is None or mine is stored:
            self._runs[run_id] = stored
            return stored
        for name in Run.model_fields:
            setattr(mine, name, getattr(stored, name))
        return mine

    async def get_context(
        self, run_id: str, events_filter: EventsFilter | None = None
    ) -> StreamContext | None:
        """The run's context (``events_filter``, if given, replaces its filter); None for a
        run that does not exist."""
        ctx = self._contexts.get(run_id)
        if ctx is None:
            if await self._store.load(run_id) is None:
                return None
            ctx = await self._context_for(run_id)
        if events_filter is not None:
            ctx._events_filter = events_filter
        return ctx

    async def start_run(self, run_id: str) -> None:
        """``accepted`` -> ``running``, then the ``started`` event."""
        await self._change(
            run_id,
            {"status": RunStatus.RUNNING},
            frozenset({RunStatus.ACCEPTED}),
            "Run '{run_id}' already started (status: {status}); only an accepted run can start",
        )
        await (await self._context_for(run_id)).emit_started()

    async def update_status(self, run_id: str, status: RunStatus) -> None:
        """Set the status, no event and no check (as Dockrion)."""
        await self._change(run_id, {"status": RunStatus(status)})

    async def set_result(
        self,
        run_id: str,
        output: dict[str, Any],
        latency_seconds: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """``completed`` with ``output`` (``metadata`` merged in), then the ``complete`` event."""
        await self._change(
            run_id,
            {"status": RunStatus.COMPLETED, "completed_at": datetime.now(UTC), "output": output},
            merge_metadata=metadata or None,
        )
        await (await self._context_for(run_id)).emit_complete(
            output=output, latency_seconds=latency_seconds, metadata=metadata
        )

    async def set_error(
        self,
        run_id: str,
        error: str,
        code: str = "INTERNAL_ERROR",
        details: dict[str, Any] | None = None,
    ) -> None:
        """``failed`` with ``{"message", "code", "details"}``, then the ``error`` event."""
        await self._change(
            run_id,
            {
                "status": RunStatus.FAILED,
                "completed_at": datetime.now(UTC),
                "error": {"message": error, "code": code, "details": details},
            },
        )
        await (await self._context_for(run_id)).emit_error(error=error, code=code, details=details)

    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """``cancelled`` (only an unfinished run), then the ``cancelled`` event."""
        await self._change(
            run_id,
            {"status": RunStatus.CANCELLED, "completed_at": datetime.now(UTC)},
            frozenset({RunStatus.ACCEPTED, RunStatus.RUNNING}),
            "Run '{run_id}' is already finished (status: {status}); it cannot be cancelled",
        )
        await (await self._context_for(run_id)).emit_cancelled(reason=reason)

    async def emit_heartbeat(self, run_id: str) -> None:
        """A ``heartbeat`` event, if the run exists."""
        if run_id in self._contexts or await self._store.load(run_id) is not None:
            await (await self._context_for(run_id)).emit_heartbeat()

    def is_terminal(self, run_id: str) -> bool:
        """Whether the run is finished; an unknown run counts as finished (as in Dockrion)."""
        run = self._runs.get(run_id)
        return run is None or run.status in FINISHED

    def list_runs(self, status: RunStatus | None = None, limit: int = 100) -> list[Run]:
        """This manager's runs, newest first (``all_runs`` for every process's)."""
        return _newest(self._runs.values(), status, limit)

    def cleanup_run(self, run_id: str) -> None:
        """Forget the run; its state is deleted (on Redis by a task on the running loop; use
        ``remove_run`` to wait for it)."""
        self._runs.pop(run_id, None)
        self._contexts.pop(run_id, None)
        if isinstance(self._store, LocalRunStore):
            self._store.identities.pop(run_id, None)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning(
                "cleanup_run(%r) outside an event loop: its Redis state expires with "
                "its TTL; await remove_run() to delete it at once",
                run_id,
            )
            return
        task = loop.create_task(self._store.delete(run_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def get_stats(self) -> dict[str, int]:
        """Counts by status and ``total``, over this manager's runs."""
        return _stats(self._runs.values())

    # -- ours ------------------------------------------------------------------------------------

    async def remove_run(self, run_id: str) -> None:
        """Forget the run and delete its state now."""
        self.cleanup_run(run_id)
        await self._store.delete(run_id)

    async def all_runs(self, status: RunStatus | None = None, limit: int = 100) -> list[Run]:
        """Every run the store holds (on Redis: every process's), newest first."""
        return _newest(await self._store.all(), status, limit)

    async def all_stats(self) -> dict[str, int]:
        """``get_stats`` over every run the store holds."""
        return _stats(await self._store.all())

    async def aclose(self) -> None:
        """Wait for deletions that ``cleanup_run`` scheduled."""
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task


def _newest(runs: Iterable[Run], status: RunStatus | None, limit: int) -> list[Run]:
    picked = [r for r in runs if status is None or r.status == status]
    picked.sort(key=lambda r: r.created_at, reverse=True)
    return picked[:limit]


def _stats(runs: Iterable[Run]) -> dict[str, int]:
    stats = {status.value: 0 for status in RunStatus}
    total = 0
    for run in runs:
        stats[run.status.value] += 1
        total += 1
    stats["total"] = total
    return stats


__all__ = [
    "Run",
    "RunCreateResponse",
    "RunManager",
    "RunNotFoundError",
    "RunStatus",
    "RunValidationError",
    "check_run_id",
    "generate_run_id",
]
