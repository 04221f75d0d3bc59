"""The backend protocol (Dockrion's, method for method) and the richer one our backends add.

``EventBackend`` matches ``dockrion_events.backends.base.EventBackend`` so either side's EventBus
can drive either side's backend. ``RunLogBackend`` is what our own backends offer on top: one
atomic step that assigns sequences, stores and delivers (one round trip on Redis), and a
``follow`` that replays and continues live with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..events import BaseEvent, new_event_id, utc_now
from ..redaction import scrub

EventDict = dict[str, Any]
# What our backends take and hand back: the wire dict, or (memory) the event model itself,
# which spares a serialise/parse round trip inside one process (the memory backend keeps a
# compact record of it and builds the model again when it is read: backends/compact.py).
StoredEvent = EventDict | BaseEvent


def channel_for(run_id: str) -> str:
    """Dockrion's channel name for a run; the Redis backend prefixes ``events:``."""
    return f"run:{run_id}"


def run_id_of(channel: str) -> str:
    return channel[4:] if channel.startswith("run:") else channel


@runtime_checkable
class EventBackend(Protocol):
    """Dockrion's protocol: same names, same signatures."""

    async def publish(self, channel: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]: ...

    async def store_event(self, run_id: str, event: dict[str, Any]) -> None: ...

    async def get_events(self, run_id: str, from_sequence: int = 0) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...

    async def clear_run(self, run_id: str) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    """What a backend knows about one stored run, for ``%runs`` and ``list_runs``."""

    run_id: str
    event_count: int
    first_sequence: int | None
    last_sequence: int | None
    last_type: str | None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    ttl_seconds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What ``RunManager`` recorded (``accepted``, ``running``, ``completed``, ...), if anything.
    run_status: str | None = None

    @property
    def status(self) -> str:
        """``complete``/``error``/``cancelled`` from the last event, else ``running``."""
        if self.last_type in {"complete", "error", "cancelled"}:
            return self.last_type
        return "running" if self.event_count else "empty"


class EventStream(Protocol):
    """What ``follow`` returns: an async iterator of stored events that can be closed early
    (an async generator is one)."""

    def __aiter__(self) -> AsyncIterator[StoredEvent]: ...

    def __anext__(self) -> Awaitable[StoredEvent]: ...

    def aclose(self) -> Awaitable[None]: ...


@runtime_checkable
class RunLogBackend(EventBackend, Protocol):
    """Our backends: atomic append and gapless follow, on top of Dockrion's protocol."""

    name: str

    async def append(self, run_id: str, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Assign a sequence to each event whose ``sequence`` is missing or 0 (unique across
        every writer of the run), store and deliver them, in one step. Returns the events as
        stored."""
        ...

    async def read(self, run_id: str, from_sequence: int = 0) -> list[StoredEvent]:
        """``get_events`` in whatever form is cheapest for this backend."""
        ...

    def follow(self, run_id: str, from_sequence: int = 1, *, live: bool = True) -> EventStream:
        """Every stored event with ``sequence >= from_sequence`` then live ones, in order, each
        once. Where events are gone (trimmed, expired, overflow past the store) a ``gap``
        event says so."""
        ...

    async def list_runs(self, pattern: str | None = None) -> list[RunSummary]: ...

    async def summary(self, run_id: str) -> RunSummary | None:
        """What the backend holds of one run, cheaply (None: no events)."""
        ...

    async def ping(self) -> None:
        """Raise ``BackendConnectionError`` when the backend cannot be reached."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings fit to show a user (secrets masked)."""
        ...


class BackendError(Exception):
    """Base of backend errors; ``backend`` names which one (``memory``, ``redis``)."""

    def __init__(self, message: str, backend: str = "unknown") -> None:
        self.message = scrub(message)  # a password never travels in an error
        self.backend = backend
        super().__init__(self.message)


class BackendConnectionError(BackendError):
    """The backend cannot be reached or refused us (wrong password, not Redis, ...)."""


class BackendPublishError(BackendError):
    """An event could not be stored or delivered; it was not silently dropped."""


class BackendReadError(BackendError):
    """Stored events could not be read (the server refused the read, or the run's key holds
    something that is not a run)."""


class BackendSubscribeError(BackendError):
    """A subscription could not be set up or was lost for good."""


class BackendClosedError(BackendError):
    """The backend was closed; build a new one."""


def gap_event(run_id: str, from_sequence: int, to_sequence: int | None, reason: str) -> EventDict:
    """The marker a subscriber receives where events it asked for no longer exist."""
    return {
        "id": new_event_id(),
        "type": "gap",
        "run_id": run_id,
        "sequence": 0,
        "timestamp": utc_now().isoformat(),
        "from_sequence": from_sequence,
        "to_sequence": to_sequence,
        "reason": reason,
    }
