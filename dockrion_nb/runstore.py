"""Where run states live: one store per backend, behind the ``RunStore`` protocol.

- our ``RedisBackend``: ``RedisRunStore``, hashes ``runstate:run:{run_id}`` (the layout and the
  atomic write are in ``backends.redis.runstate``), seen by every process. Transitions are
  checked on the server in the same step as the write.
- any other backend (memory, Dockrion's): ``LocalRunStore``, the ``Run`` objects themselves in
  this process, one store per backend object, so every ``RunManager`` on it shares them.

``with_run_status`` adds what the store recorded to ``list_runs``' summaries (``%runs``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from .backends.base import RunSummary
from .bus import EventBus
from .runmodels import Run, RunStatus

if TYPE_CHECKING:
    from .backends.redis.runstate import RedisRunStates

log = logging.getLogger("dockrion_nb.runs")


class Outcome(StrEnum):
    OK = "ok"
    EXISTS = "exists"
    MISSING = "missing"
    REFUSED = "refused"


class RunStore(Protocol):
    """Run states for one backend. ``shared``: other processes see them."""

    shared: bool

    async def create(self, run: Run, agent_name: str | None, framework: str | None) -> bool: ...

    async def load(self, run_id: str) -> Run | None: ...

    async def identity(self, run_id: str) -> tuple[str | None, str | None]: ...

    async def change(
        self,
        run_id: str,
        changes: Mapping[str, Any],
        allowed_from: frozenset[RunStatus] = frozenset(),
        merge_metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Outcome, RunStatus | None]: ...

    async def delete(self, run_id: str) -> None: ...

    async def all(self, pattern: str | None = None) -> list[Run]: ...

    async def statuses(self, run_ids: list[str]) -> list[str | None]: ...


class LocalRunStore:
    """Runs of one backend object, in this process: the ``Run`` objects themselves."""

    shared = False

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.identities: dict[str, tuple[str | None, str | None]] = {}

    async def create(self, run: Run, agent_name: str | None, framework: str | None) -> bool:
        if run.run_id in self.runs:
            return False
        self.runs[run.run_id] = run
        self.identities[run.run_id] = (agent_name, framework)
        return True

    async def load(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    async def identity(self, run_id: str) -> tuple[str | None, str | None]:
        return self.identities.get(run_id, (None, None))

    async def change(
        self,
        run_id: str,
        changes: Mapping[str, Any],
        allowed_from: frozenset[RunStatus] = frozenset(),
        merge_metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Outcome, RunStatus | None]:
        run = self.runs.get(run_id)
        if run is None:
            return Outcome.MISSING, None
        before = run.status
        if allowed_from and before not in allowed_from:
            return Outcome.REFUSED, before
        for name, value in changes.items():
            setattr(run, name, value)
        if merge_metadata:
            run.metadata.update(merge_metadata)
        return Outcome.OK, before

    async def delete(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self.identities.pop(run_id, None)

    async def all(self, pattern: str | None = None) -> list[Run]:
        return [
            r for r in self.runs.values() if not pattern or fnmatch.fnmatchcase(r.run_id, pattern)
        ]

    async def statuses(self, run_ids: list[str]) -> list[str | None]:
        return [r.status.value if (r := self.runs.get(i)) else None for i in run_ids]


def _dumps(value: Any, what: str, run_id: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"the {what} of run {run_id!r} cannot be stored in Redis: it is not JSON ({exc}); "
            "convert it to plain dicts, lists, strings and numbers first"
        ) from None


def _encode(run_id: str, changes: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in changes.items():
        if value is None:
            continue  # absent in the hash means unset
        if isinstance(value, RunStatus):
            out[name] = value.value
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        elif name in ("output", "error", "metadata"):
            out[name] = _dumps(value, name, run_id)
        else:
            out[name] = str(value)
    return out


def _decode(fields: Mapping[str, str]) -> Run:
    """A ``Run`` from a hash another process wrote: bad fields raise one clear ValueError."""
    data: dict[str, Any] = {"run_id": fields.get("run_id", "")}
    for name in ("status", "created_at", "completed_at"):
        if fields.get(name):
            data[name] = fields[name]
    for name in ("output", "error", "metadata"):
        if fields.get(name):
            try:
                data[name] = json.loads(fields[name])
            except ValueError:
                raise ValueError(
                    f"run state of {data['run_id']!r}: field {name!r} is not JSON"
                ) from None
    try:
        return Run.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'run'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"run state of {data['run_id']!r} is not a run: {problems}") from None


class RedisRunStore:
    """Run states in Redis hashes (``runstate:run:{run_id}``), seen by every process."""

    shared = True

    def __init__(self, states: RedisRunStates) -> None:
        self._states = states

    async def create(self, run: Run, agent_name: str | None, framework: str | None) -> bool:
        fields = _encode(
            run.run_id,
            {**dict(run), "agent_name": agent_name, "framework": framework},
        )
        outcome, _ = await self._states.write(run.run_id, fields, create=True)
        return outcome == Outcome.OK

    async def load(self, run_id: str) -> Run | None:
        fields = await self._states.read(run_id)
        return _decode(fields) if fields is not None else None

    async def identity(self, run_id: str) -> tuple[str | None, str | None]:
        fields = await self._states.read(run_id) or {}
        return fields.get("agent_name") or None, fields.get("framework") or None

    async def change(
        self,
        run_id: str,
        changes: Mapping[str, Any],
        allowed_from: frozenset[RunStatus] = frozenset(),
        merge_metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Outcome, RunStatus | None]:
        fields = _encode(run_id, changes)
        if merge_metadata:
            current = await self.load(run_id)
            if current is None:
                return Outcome.MISSING, None
            fields["metadata"] = _dumps({**current.metadata, **merge_metadata}, "metadata", run_id)
        outcome, before = await self._states.write(
            run_id, fields, allowed_from=[s.value for s in allowed_from]
        )
        status = RunStatus(before) if before in RunStatus._value2member_map_ else None
        return Outcome(outcome), status

    async def delete(self, run_id: str) -> None:
        await self._states.delete(run_id)

    async def all(self, pattern: str | None = None) -> list[Run]:
        out = []
        for fields in await self._states.scan(pattern):
            try:
                out.append(_decode(fields))
            except ValueError as exc:
                log.warning("skipping a run state that is not a run: %s", exc)
        return out

    async def statuses(self, run_ids: list[str]) -> list[str | None]:
        return await self._states.statuses(run_ids)


_local_stores: weakref.WeakKeyDictionary[Any, LocalRunStore] = weakref.WeakKeyDictionary()


def store_for(bus: EventBus) -> RunStore:
    """The run states of ``bus``'s backend: Redis hashes on our Redis backend, else this
    process's (one store per backend object)."""
    backend = bus.backend
    states = getattr(backend, "run_states", None)
    if states is not None:
        return RedisRunStore(states)
    store = _local_stores.get(backend)
    if store is None:
        store = _local_stores[backend] = LocalRunStore()
    return store


async def run_status(bus: EventBus, run_id: str) -> str | None:
    """The recorded status of ``run_id`` (``accepted``, ``running``, ...), None if it has none."""
    return (await store_for(bus).statuses([run_id]))[0]


async def with_run_status(
    bus: EventBus, summaries: Iterable[RunSummary], pattern: str | None = None
) -> list[RunSummary]:
    """``summaries`` (from ``list_runs``) with each run's recorded status, plus runs that have
    a status but no events yet (created, not started)."""
    store = store_for(bus)
    rows = list(summaries)
    statuses = await store.statuses([r.run_id for r in rows])
    out = [replace(r, run_status=s) for r, s in zip(rows, statuses, strict=True)]
    known = {r.run_id for r in rows}
    for run in await store.all(pattern):
        if run.run_id not in known:
            out.append(
                RunSummary(
                    run_id=run.run_id,
                    event_count=0,
                    first_sequence=None,
                    last_sequence=None,
                    last_type=None,
                    first_timestamp=run.created_at.isoformat(),
                    last_timestamp=run.created_at.isoformat(),
                    run_status=run.status.value,
                )
            )
    return out


async def list_runs_with_status(bus: EventBus, pattern: str | None = None) -> list[RunSummary]:
    """``bus.list_runs(pattern)`` with each run's recorded status (what ``%runs`` shows)."""
    return await with_run_status(bus, await bus.list_runs(pattern), pattern)


__all__ = [
    "LocalRunStore",
    "Outcome",
    "RedisRunStore",
    "RunStore",
    "list_runs_with_status",
    "run_status",
    "store_for",
    "with_run_status",
]
