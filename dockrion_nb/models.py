"""``dockrion_events.models`` under our name: the event models and Dockrion's helpers for them.

Dockrion's own examples import from ``dockrion_events.models``, so this path exists for them;
the models themselves live in ``events``. ``create_event`` keeps Dockrion's rule that a custom
type is written as given (``create_event("fraud_check", ...)`` has type ``fraud_check``), where
our ``make_event`` writes ``custom:fraud_check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .events import (
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
    parse_event,
)

TERMINAL_EVENT_TYPES = TERMINAL_TYPES

StreamEvent = (
    StartedEvent
    | ProgressEvent
    | CheckpointEvent
    | TokenEvent
    | StepEvent
    | CompleteEvent
    | ErrorEvent
    | HeartbeatEvent
    | CancelledEvent
)


def is_terminal_event(event: BaseEvent | Mapping[str, Any]) -> bool:
    """Whether ``event`` ends its run (``complete``, ``error`` or ``cancelled``); a wire dict
    is judged by its ``type`` too."""
    kind = event.get("type") if isinstance(event, Mapping) else event.type
    return kind in TERMINAL_TYPES


def create_event(event_type: str, run_id: str, sequence: int, **kwargs: Any) -> BaseEvent:
    """An event of ``event_type`` numbered ``sequence``: the built-in type's model, or a
    ``CustomEvent`` whose type is ``event_type`` as given."""
    cls = EVENT_CLASSES.get(event_type, CustomEvent)
    return cls(run_id=run_id, sequence=sequence, type=event_type, **kwargs)


__all__ = [
    "TERMINAL_EVENT_TYPES",
    "BaseEvent",
    "CancelledEvent",
    "CheckpointEvent",
    "CompleteEvent",
    "ErrorEvent",
    "HeartbeatEvent",
    "ProgressEvent",
    "StartedEvent",
    "StepEvent",
    "StreamEvent",
    "TokenEvent",
    "create_event",
    "is_terminal_event",
    "parse_event",
]
