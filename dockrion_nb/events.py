"""Event models in Dockrion's wire format.

Every event carries ``id``, ``type``, ``run_id``, ``sequence`` and ``timestamp`` (ISO 8601, UTC)
plus the fields of its type; unknown fields are kept, so events written by a newer Dockrion or by
someone else round-trip unchanged. Models are frozen because one parsed event is shared by every
local subscriber of a run.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
TERMINAL_TYPES = frozenset({"complete", "error", "cancelled"})
MANDATORY_TYPES = frozenset({"started", "complete", "error", "cancelled"})
BUILTIN_TYPES = (
    "started",
    "progress",
    "token",
    "step",
    "checkpoint",
    "heartbeat",
    "complete",
    "error",
    "cancelled",
)
CUSTOM_PREFIX = "custom:"
GAP_TYPE = "gap"


class InvalidRunIdError(ValueError):
    """A run id that Dockrion would reject (1-128 chars, ``[A-Za-z0-9][A-Za-z0-9_-]*``)."""


class EventValidationError(ValueError):
    """Event data that cannot become an event; the message says which field and why."""


_known_run_ids: set[str] = set()


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it follows Dockrion's rule, else raise ``InvalidRunIdError``.

    Checked once per id (every event of a run carries it): valid ids are remembered.
    """
    if isinstance(run_id, str) and run_id in _known_run_ids:
        return run_id
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:57] + "...'"
        raise InvalidRunIdError(
            f"invalid run id {shown}: use 1-128 characters, letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    if len(_known_run_ids) >= 4096:
        _known_run_ids.clear()
    _known_run_ids.add(run_id)
    return run_id


def new_event_id() -> str:
    """Dockrion's id shape: ``evt-`` and 12 hex digits."""
    return f"evt-{uuid.uuid4().hex[:12]}"


_NO_OFFSET = timedelta(0)


def utc_now() -> datetime:
    return datetime.now(UTC)


class BaseEvent(BaseModel):
    """Fields shared by every event; ``sequence`` 0 means "not assigned yet"."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(default_factory=new_event_id)
    type: str
    run_id: str
    sequence: int = Field(default=0, ge=0)
    timestamp: datetime = Field(default_factory=utc_now)

    @field_validator("run_id")
    @classmethod
    def _check_run_id(cls, value: str) -> str:
        return validate_run_id(value)

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        offset = value.utcoffset()
        if offset == _NO_OFFSET:  # already UTC (as every stored event is): no new object
            return value
        if offset is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_serializer("timestamp")
    def _iso(self, value: datetime) -> str:
        return value.isoformat()

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_dict(self) -> dict[str, Any]:
        """The wire form: JSON-safe values, extra fields included."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def to_sse(self) -> str:
        """One Server-Sent Events frame, as Dockrion's HTTP layer sends it."""
        return f"id: {self.sequence}\nevent: {self.type}\ndata: {self.to_json()}\n\n"


class StartedEvent(BaseEvent):
    type: Literal["started"] = "started"
    agent_name: str | None = None
    framework: str | None = None


class ProgressEvent(BaseEvent):
    type: Literal["progress"] = "progress"
    step: str
    progress: float = 0.0
    message: str | None = None

    @field_validator("progress")
    @classmethod
    def _clamp(cls, value: float) -> float:
        return min(1.0, max(0.0, value))


class CheckpointEvent(BaseEvent):
    type: Literal["checkpoint"] = "checkpoint"
    name: str
    data: dict[str, Any] = Field(default_factory=dict)


class TokenEvent(BaseEvent):
    type: Literal["token"] = "token"
    content: str
    finish_reason: str | None = None


class StepEvent(BaseEvent):
    type: Literal["step"] = "step"
    node_name: str
    duration_ms: int | None = None
    input_keys: list[str] = Field(default_factory=list)
    output_keys: list[str] = Field(default_factory=list)


class CompleteEvent(BaseEvent):
    type: Literal["complete"] = "complete"
    output: dict[str, Any] = Field(default_factory=dict)
    latency_seconds: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorEvent(BaseEvent):
    type: Literal["error"] = "error"
    error: str
    code: str = "INTERNAL_ERROR"
    details: dict[str, Any] | None = None


class HeartbeatEvent(BaseEvent):
    type: Literal["heartbeat"] = "heartbeat"


class CancelledEvent(BaseEvent):
    type: Literal["cancelled"] = "cancelled"
    reason: str | None = None


class CustomEvent(BaseEvent):
    """``custom:<name>`` events, and any type this package does not know (kept, never dropped)."""

    @property
    def custom_name(self) -> str:
        return self.type[len(CUSTOM_PREFIX) :] if self.type.startswith(CUSTOM_PREFIX) else self.type

    @field_validator("type")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value or value == CUSTOM_PREFIX:
            raise ValueError("a custom event needs a name, e.g. 'custom:fraud_check'")
        return value


class GapEvent(BaseEvent):
    """Not stored, never published: a subscriber sees it where events it asked for are gone
    (trimmed by ``max_events_per_run`` or expired) so that loss is never silent."""

    type: Literal["gap"] = "gap"
    from_sequence: int
    to_sequence: int | None = None
    reason: str = ""


EVENT_CLASSES: dict[str, type[BaseEvent]] = {
    "started": StartedEvent,
    "progress": ProgressEvent,
    "token": TokenEvent,
    "step": StepEvent,
    "checkpoint": CheckpointEvent,
    "heartbeat": HeartbeatEvent,
    "complete": CompleteEvent,
    "error": ErrorEvent,
    "cancelled": CancelledEvent,
    GAP_TYPE: GapEvent,
}

Event = BaseEvent


_new = object.__new__
_set = object.__setattr__
_event_types: set[type] = set()


def is_event(obj: object) -> TypeGuard[BaseEvent]:
    """``isinstance(obj, BaseEvent)``, fast: pydantic's metaclass makes the plain check an
    ABC lookup, and the hot paths ask it several times per event."""
    kind = type(obj)
    if kind in _event_types:
        return True
    if isinstance(obj, BaseEvent):
        _event_types.add(kind)
        return True
    return False


def with_sequence(event: BaseEvent, sequence: int) -> BaseEvent:
    """A copy of ``event`` with ``sequence`` set: ``model_copy(update=...)`` without its
    generic machinery (a third of the cost), because the bus does this once per event."""
    copy = _new(type(event))
    fields = event.__dict__.copy()
    fields["sequence"] = sequence
    _set(copy, "__dict__", fields)
    _set(copy, "__pydantic_extra__", event.__pydantic_extra__)
    _set(copy, "__pydantic_fields_set__", event.__pydantic_fields_set__ | {"sequence"})
    _set(copy, "__pydantic_private__", event.__pydantic_private__)
    return copy


class EventRecord(dict[str, Any]):
    """A wire dict that carries its parsed model, so local readers share one parse."""

    __slots__ = ("model",)

    def __init__(self, data: Mapping[str, Any], model: BaseEvent | None = None) -> None:
        super().__init__(data)
        self.model = model


def as_wire(event: BaseEvent | Mapping[str, Any]) -> dict[str, Any]:
    """The wire dict of a stored event (a model becomes an ``EventRecord`` keeping it)."""
    if isinstance(event, dict):
        return event
    if is_event(event):
        return EventRecord(event.to_dict(), event)
    return dict(event)


def as_model(event: BaseEvent | Mapping[str, Any]) -> BaseEvent:
    """The model of a stored event, parsing a dict only when it carries none."""
    if not isinstance(event, Mapping):
        return event
    model: BaseEvent | None = getattr(event, "model", None)
    seq = event.get("sequence")
    if model is not None:
        return model if model.sequence == seq else with_sequence(model, seq or 0)
    model = parse_event(event)
    if isinstance(event, EventRecord):
        event.model = model
    return model


def custom_type(name: str) -> str:
    """``fraud_check`` -> ``custom:fraud_check``; an already prefixed name is kept."""
    return name if name.startswith(CUSTOM_PREFIX) else CUSTOM_PREFIX + name


def _describe(error: ValidationError, data: Mapping[str, Any]) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{loc}: {item['msg']}")
    kind = data.get("type", "?")
    return f"invalid {kind!s} event: " + "; ".join(parts)


def parse_event(data: Mapping[str, Any] | str | bytes) -> BaseEvent:
    """Turn wire data (a dict or JSON text) into the right model.

    Unknown types become ``CustomEvent`` (never an error); data that is not an event raises
    ``EventValidationError`` with one message naming every bad field.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EventValidationError(f"event is not valid JSON: {exc.msg}") from None
    if not isinstance(data, Mapping):
        raise EventValidationError(f"an event must be a JSON object, not {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventValidationError("event has no 'type' field")
    cls = EVENT_CLASSES.get(kind, CustomEvent)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(_describe(exc, data)) from None


def make_event(event_type: str, run_id: str, **fields: Any) -> BaseEvent:
    """Build an event of ``event_type`` (a built-in type or a custom name) with ``fields``."""
    kind = event_type if event_type in EVENT_CLASSES else custom_type(event_type)
    return parse_event({"type": kind, "run_id": run_id, **fields})


def summarize(event: BaseEvent) -> str:
    """One line for logs, tables and terminals."""
    d = event.model_dump(exclude={"id", "type", "run_id", "sequence", "timestamp"})
    match event:
        case TokenEvent():
            return repr(event.content) + (
                f" ({event.finish_reason})" if event.finish_reason else ""
            )
        case ProgressEvent():
            msg = f" {event.message}" if event.message else ""
            return f"{event.step} {event.progress:.0%}{msg}"
        case StepEvent():
            took = f" {event.duration_ms} ms" if event.duration_ms is not None else ""
            return f"{event.node_name}{took}"
        case CheckpointEvent():
            return f"{event.name} {json.dumps(event.data, default=str)[:80]}"
        case CompleteEvent():
            took = f" in {event.latency_seconds:.2f} s" if event.latency_seconds is not None else ""
            return f"complete{took} {json.dumps(event.output, default=str)[:60]}"
        case ErrorEvent():
            return f"{event.code}: {event.error}"
        case StartedEvent():
            return " ".join(x for x in (event.agent_name, event.framework) if x)
        case GapEvent():
            return f"missed {event.from_sequence}..{event.to_sequence}: {event.reason}"
        case _:
            return json.dumps(d, default=str)[:100] if d else ""


__all__ = [
    "BUILTIN_TYPES",
    "MANDATORY_TYPES",
    "TERMINAL_TYPES",
    "BaseEvent",
    "CancelledEvent",
    "CheckpointEvent",
    "CompleteEvent",
    "CustomEvent",
    "ErrorEvent",
    "Event",
    "EventRecord",
    "EventValidationError",
    "GapEvent",
    "HeartbeatEvent",
    "InvalidRunIdError",
    "ProgressEvent",
    "StartedEvent",
    "StepEvent",
    "TokenEvent",
    "as_model",
    "as_wire",
    "custom_type",
    "is_event",
    "make_event",
    "parse_event",
    "summarize",
    "validate_run_id",
    "with_sequence",
]
