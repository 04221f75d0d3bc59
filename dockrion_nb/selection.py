"""Which stored events a caller asked for: ``--type`` checks and the from/last/type selection.

``%replay``, ``replay()`` and ``dockrion-nb replay`` select through here, so an unknown run,
an empty selection and a bad option read the same everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from .backends.base import BackendError
from .bus import EventBus
from .engine import Engine, get_engine
from .events import BUILTIN_TYPES, CUSTOM_PREFIX, BaseEvent, validate_run_id


class NoEventsError(LookupError):
    """The backend holds no (matching) events for a run."""


def check_types(types: str | Iterable[str] | None) -> list[str] | None:
    """Validate ``--type`` values (``token``, ``custom``, ``custom:name``; commas allowed)."""
    if types is None:
        return None
    items = [types] if isinstance(types, str) else list(types)
    out: list[str] = []
    for item in items:
        for name in (p.strip() for p in item.split(",")):
            if not name:
                continue
            known = name in BUILTIN_TYPES or name == "custom"
            if known or (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)):
                out.append(name)
            else:
                raise ValueError(
                    f"unknown event type {name!r}: use one of {', '.join(BUILTIN_TYPES)}, "
                    "custom or custom:<name>"
                )
    return out or None


def type_matches(event_type: str, types: Sequence[str] | None) -> bool:
    """Whether ``event_type`` is wanted: no ``types`` means all; ``custom`` means any custom."""
    if not types:
        return True
    if event_type in types:
        return True
    return event_type.startswith(CUSTOM_PREFIX) and "custom" in types


def no_events(run_id: str, location: str) -> NoEventsError:
    """``no events for run X on redis at redis://***@host:6379/0``."""
    return NoEventsError(f"no events for run {run_id} on {location}")


async def aselect_events(
    bus: EventBus,
    run_id: str,
    *,
    from_sequence: int = 1,
    last: int | None = None,
    types: str | Iterable[str] | None = None,
    location: str = "",
) -> list[BaseEvent]:
    """``select_events`` on a bus, for async callers (the CLI) and the engine."""
    validate_run_id(run_id)
    if from_sequence < 1:
        raise ValueError(f"from_sequence must be 1 or more, not {from_sequence}")
    if last is not None and last < 1:
        raise ValueError(f"last must be 1 or more, not {last}")
    wanted = check_types(types)
    start = from_sequence
    if last is not None and not wanted:
        # Read only the tail, not the whole stream.
        with contextlib.suppress(BackendError):
            found = [s for s in await bus.list_runs(run_id) if s.run_id == run_id]
            if found and found[0].last_sequence:
                start = max(from_sequence, found[0].last_sequence - last + 1)
    stored = await bus.get_events(run_id, start)
    if not stored:
        everything = stored if start <= 1 else await bus.get_events(run_id, 0)
        if not everything:
            raise no_events(run_id, location or bus.backend_name)
        raise NoEventsError(
            f"run {run_id} has no events from sequence {from_sequence} "
            f"(its last sequence is {everything[-1].sequence})"
        )
    selected = [e for e in stored if type_matches(e.type, wanted)]
    if last is not None:
        selected = selected[-last:]
    if not selected:
        raise NoEventsError(f"run {run_id} has no {', '.join(wanted or [])} events")
    return selected


def select_events(
    run_id: str,
    *,
    from_sequence: int = 1,
    last: int | None = None,
    types: str | Iterable[str] | None = None,
    engine: Engine | None = None,
) -> list[BaseEvent]:
    """The stored events of a run from ``from_sequence``, of ``types``, the ``last`` N of them.

    Raises ``NoEventsError`` naming the run and the backend when nothing matches.
    """
    eng = engine or get_engine()
    return eng.run(
        aselect_events(
            eng.bus,
            run_id,
            from_sequence=from_sequence,
            last=last,
            types=types,
            location=eng.location(),
        )
    )
