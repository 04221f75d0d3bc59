"""Event models in Dockrion's wire format.

Every event carries ``id``, ``type``, ``run_id``, ``sequence`` and ``timestamp`` (ISO 8601, UTC)
plus the fields of its type; unknown fields are kept, so events written by a newer Dockrion or by
someone else round-trip unchanged. Models are frozen because one parsed event is shared by every
local subscriber of a run.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, get_args, get_origin

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
MAX_SEQUENCE = 2**53 - 1
"""The highest sequence every reader counts exactly (JavaScript numbers and Lua numbers are
doubles: past this, two sequences can read as one)."""
MAX_DEPTH = 64
"""How deeply an event's values may nest."""


class InvalidRunIdError(ValueError):
    """A run id that Dockrion would reject (1-128 chars, ``[A-Za-z0-9][A-Za-z0-9_-]*``)."""


class EventValidationError(ValueError):
    """Event data that cannot become an event; the message says which field and why."""


class EventContentError(EventValidationError):
    """An event field holds a value that cannot be stored or sent as JSON; the message names
    the field's path and the value's type, e.g. ``checkpoint data.o: object is not JSON``."""


_known_run_ids: set[str] = set()
known_run_ids = _known_run_ids  # read-only outside: ids ``validate_run_id`` accepted lately


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


# A generator of our own (user code that calls random.seed() must not repeat our ids),
# seeded from os.urandom, and reseeded in a forked child so two processes never share ids.
_ids = random.Random()
_ID_BLOCK = 512  # ids made at once: formatting one costs ten times taking it from a block
_next_ids: Iterator[str] = iter(())


def _id_block() -> Iterator[str]:
    """``_ID_BLOCK`` ids from one draw of random bytes, split in C (no Python loop)."""
    digits = _ids.randbytes(6 * _ID_BLOCK).hex(" ", 6)  # 12 hex digits, a space, 12, ...
    return iter(("evt-" + digits.replace(" ", " evt-")).split(" "))


def _forked() -> None:
    """In a forked child: a new seed, and none of the parent's ids still waiting."""
    global _next_ids
    _ids.seed()
    _next_ids = iter(())


os.register_at_fork(after_in_child=_forked)


def new_event_id() -> str:
    """Dockrion's id shape: ``evt-`` and 12 hex digits (48 random bits, as Dockrion's
    ``uuid4().hex[:12]``), from a seeded generator: ``uuid4`` asks the kernel for entropy on
    every event, which was a third of the cost of emitting one from a thread. Ids are made
    ``_ID_BLOCK`` at a time; taking one is a ``next`` on a list iterator, which no other
    thread can interleave with, so no two callers get the same id."""
    global _next_ids
    try:
        return next(_next_ids)
    except StopIteration:
        _next_ids = _id_block()
        return next(_next_ids)


_NO_OFFSET = timedelta(0)
_new = object.__new__
_set = object.__setattr__


def _slot_setter(name: str) -> Any:
    """The setter of one of ``BaseModel``'s own slots, called directly: three times cheaper
    than ``object.__setattr__`` (which looks the name up first), and the hot paths fill four
    per model. Falls back to ``object.__setattr__`` if pydantic ever drops the slot."""
    setter = getattr(BaseModel.__dict__.get(name), "__set__", None)
    if setter is None:
        return lambda obj, value: _set(obj, name, value)
    return setter


set_dict = _slot_setter("__dict__")
set_fields_set = _slot_setter("__pydantic_fields_set__")
set_extra = _slot_setter("__pydantic_extra__")
set_private = _slot_setter("__pydantic_private__")


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

    @field_validator("sequence", mode="before")
    @classmethod
    def _check_sequence(cls, value: Any) -> Any:
        return check_sequence(value)

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

    def to_sse(self, *, with_id: bool = False) -> str:
        """One Server-Sent Events frame, byte for byte Dockrion's ``to_sse()`` (which its HTTP
        layer sends). ``with_id=True`` puts an ``id: <sequence>`` line first, so a browser's
        ``EventSource`` reports the last sequence it saw (``Last-Event-ID``) when it reconnects."""
        head = f"id: {self.sequence}\n" if with_id else ""
        return f"{head}event: {self.type}\ndata: {self.model_dump_json()}\n\n"


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


_UNSET: Any = object()  # an argument not given (None is a value)


class TokenEvent(BaseEvent):
    type: Literal["token"] = "token"
    content: str
    finish_reason: str | None = None

    if not TYPE_CHECKING:  # type checkers see pydantic's own signature

        def __init__(
            self, /, *, run_id=_UNSET, content=_UNSET, finish_reason=_UNSET, **others
        ) -> None:
            """Tokens are most of a run: when the arguments are already what validation
            would make of them (a checked run id, ``str`` content, ``str`` or no finish
            reason, nothing else) the model is filled in directly, exactly as pydantic fills
            it (same ``__dict__``, fields set and extras) at half the cost; anything else is
            validated as usual."""
            if (
                type(content) is str
                and type(run_id) is str
                and run_id in _known_run_ids
                and not others
            ):
                if finish_reason is _UNSET:
                    finish, given = None, {"run_id", "content"}
                elif finish_reason is None or type(finish_reason) is str:
                    finish, given = finish_reason, {"run_id", "content", "finish_reason"}
                else:
                    finish = _UNSET
                if finish is not _UNSET:
                    set_dict(
                        self,
                        {
                            "id": new_event_id(),
                            "type": "token",
                            "run_id": run_id,
                            "sequence": 0,
                            "timestamp": datetime.now(UTC),
                            "content": content,
                            "finish_reason": finish,
                        },
                    )
                    set_fields_set(self, given)
                    set_extra(self, {})
                    set_private(self, None)
                    return
            data = {
                k: v
                for k, v in (
                    ("run_id", run_id),
                    ("content", content),
                    ("finish_reason", finish_reason),
                )
                if v is not _UNSET
            }
            super().__init__(**data, **others)

        # pydantic calls a model's own __init__ from model_validate unless it is marked as
        # its base __init__; parsing (parse_event) must stay on pydantic's path.
        __init__.__pydantic_base_init__ = True


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


# -- what may be stored: JSON values, countable sequences ----------------------------------------


def check_sequence(value: Any) -> Any:
    """``value`` if it is a sequence every reader can count (0: not assigned yet)."""
    if type(value) is int and 0 <= value <= MAX_SEQUENCE:
        return value
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and int(value) <= MAX_SEQUENCE
    ):
        return value  # JSON text read back from a stream field; pydantic makes it an int
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise ValueError(
        f"sequence must be an integer from 1 to 2**53-1 (0 or none: the bus assigns one), "
        f"not {shown}"
    )


_HINTS: dict[type, str] = {
    bytes: "decode it to str, or base64 it",
    bytearray: "decode it to str, or base64 it",
    set: "use a list",
    frozenset: "use a list",
    complex: "use two floats",
}
_ISO_HINT = "use .isoformat()"
_SCALARS = (type(None), bool, int)
_FIXED = frozenset({"run_id", "sequence", "timestamp"})  # validated by the model itself


class _Walk:
    """One event's values, checked in place (no copy, no serialising): JSON types only, str
    keys, finite floats, UTF-8-encodable text, no cycles, at most ``MAX_DEPTH`` levels."""

    __slots__ = ("ancestors", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ancestors: list[int] = []

    def fail(self, path: list[str], what: str) -> EventContentError:
        shown = path if len(path) <= 8 else [*path[:6], "...", path[-1]]
        where = "".join(p if p.startswith("[") else "." + p for p in shown).lstrip(".")
        return EventContentError(f"{self.kind} {where}: {what}")

    def text(self, value: str, path: list[str]) -> None:
        if value.isascii():
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start : exc.start + 1]
            raise self.fail(
                path,
                f"str with a lone surrogate ({bad!r} at {exc.start}) is not valid text "
                "(it cannot be stored as UTF-8)",
            ) from None

    def value(self, value: Any, path: list[str]) -> None:
        kind = type(value)
        if kind is str:
            self.text(value, path)
        elif kind in _SCALARS:
            return
        elif kind is float:
            if not math.isfinite(value):
                raise self.fail(path, f"float {value!r} is not JSON (use None or a str)")
        elif kind is dict or kind is list or kind is tuple:
            self.container(value, path)
        elif isinstance(value, str):  # str subclasses (enums of str) are text
            self.text(str(value), path)
        elif isinstance(value, int):  # IntEnum and other int subclasses are numbers
            return
        elif isinstance(value, float):
            self.value(float(value), path)
        elif isinstance(value, Mapping | list | tuple):
            self.container(value, path)
        else:
            name = kind.__name__
            hint = _HINTS.get(kind)
            if hint is None and isinstance(value, datetime | date | time_of_day):
                hint = _ISO_HINT
            raise self.fail(path, f"{name} is not JSON ({hint or 'use str(), a dict or a list'})")

    def container(self, value: Any, path: list[str]) -> None:
        ident = id(value)
        if ident in self.ancestors:
            what = "dict" if isinstance(value, Mapping) else type(value).__name__
            raise self.fail(path, f"a {what} that contains itself is not JSON")
        if len(self.ancestors) >= MAX_DEPTH:
            raise self.fail(path, f"nested deeper than {MAX_DEPTH} levels")
        self.ancestors.append(ident)
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.fail(
                        path,
                        f"key {key!r} ({type(key).__name__}) is not a JSON object key "
                        "(use str keys)",
                    )
                self.text(key, path)
                kind = type(item)
                if kind is not str and kind not in _SCALARS:
                    self.value(item, [*path, str(key)])
                elif kind is str and not item.isascii():
                    self.text(item, [*path, str(key)])
        else:
            for i, item in enumerate(value):
                kind = type(item)
                if kind is not str and kind not in _SCALARS:
                    self.value(item, [*path, f"[{i}]"])
                elif kind is str and not item.isascii():
                    self.text(item, [*path, f"[{i}]"])
        self.ancestors.pop()


def _checked_fields(cls: type[BaseEvent]) -> tuple[str, ...]:
    """The fields ``check_fields`` looks at: all but those the model validates itself, and
    ``type`` where the class allows one literal value."""
    kind = cls.model_fields["type"].annotation
    literal = get_origin(kind) is Literal and len(get_args(kind)) == 1
    names = tuple(n for n in cls.model_fields if n not in _FIXED and not (literal and n == "type"))
    _FIELDS_TO_CHECK[cls] = names
    return names


_FIELDS_TO_CHECK: dict[type[BaseEvent], tuple[str, ...]] = {}


def check_content(event: BaseEvent) -> None:
    """Raise ``EventContentError`` unless every value of ``event`` can be stored and sent as
    JSON by every backend (and read back the same way): checked at publish, so a bad value is
    one clear error there instead of a stuck view or a failed write later."""
    check_fields(type(event), event.__dict__, event.__pydantic_extra__)


def check_fields(
    cls: type[BaseEvent], fields: dict[str, Any], extra: dict[str, Any] | None
) -> None:
    """``check_content`` of an event's ``__dict__`` and extras, already read (attribute reads
    on a pydantic model are slow, and the bus's publish reads them once for every step)."""
    names = _FIELDS_TO_CHECK.get(cls) or _checked_fields(cls)
    walk: _Walk | None = None
    for name in names:
        value = fields[name]
        kind = type(value)
        if kind is str:
            if value.isascii():
                continue
        elif value is None or kind in _SCALARS:
            continue
        if walk is None:
            walk = _Walk(str(fields.get("type")))
        walk.value(value, [name])
    if extra:
        walk = walk or _Walk(str(fields.get("type")))
        for name, value in extra.items():
            walk.value(value, [name])


def check_wire(data: Mapping[str, Any]) -> None:
    """``check_content`` for an event as a wire dict (Dockrion's protocol), sequence included.

    A wire dict is stored as given, so its sequence must be an ``int`` already: a stored
    ``"7"`` makes every later read of the run fail in Dockrion's readers, which compare it
    with numbers (a model, or a dict given to the bus, is parsed instead: ``"7"`` is 7)."""
    if "sequence" in data:
        value = data["sequence"]
        try:
            check_sequence(value)
            if type(value) is not int:
                raise ValueError(
                    f"sequence must be an int in a stored wire dict, not {type(value).__name__} "
                    f"{value!r} (convert it with int(), or publish through EventBus)"
                )
        except ValueError as exc:
            raise EventValidationError(f"invalid {data.get('type', '?')!s} event: {exc}") from None
    walk = _Walk(str(data.get("type", "event")))
    for name, value in data.items():
        if name not in _FIXED:
            walk.value(value, [str(name)])


def check_publishable(event: BaseEvent) -> BaseEvent:
    """``event`` if it may be published: JSON content, and not a ``gap`` (subscribers make
    those where events are missing; a stored one would read as a real loss)."""
    if event.type == GAP_TYPE:
        raise EventValidationError("'gap' events are made by subscribers, not published")
    check_content(event)
    return event


Event = BaseEvent


_event_types: set[type] = set()
event_types = _event_types  # read-only outside: classes ``is_event`` has seen (a fast test)


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
    return numbered(
        event, event.__dict__, event.__pydantic_extra__, event.__pydantic_private__, sequence
    )


def numbered(
    event: BaseEvent,
    fields: dict[str, Any],
    extra: dict[str, Any] | None,
    private: dict[str, Any] | None,
    sequence: int,
) -> BaseEvent:
    """``with_sequence`` given the parts of ``event`` its caller has already read."""
    copy = _new(type(event))
    fields = fields.copy()
    fields["sequence"] = sequence
    set_dict(copy, fields)
    set_extra(copy, extra)
    set_fields_set(copy, {*event.__pydantic_fields_set__, "sequence"})
    set_private(copy, private)
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
    if type(event) in _event_types:  # a model: spares whole-run reads an ABC lookup each
        return event  # type: ignore[return-value]
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
        raise EventValidationError(
            "Event data missing 'type' field: every event needs a non-empty string 'type', "
            "e.g. 'progress' or 'custom:fraud_check'"
        )
    cls = EVENT_CLASSES.get(kind, CustomEvent)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(_describe(exc, data)) from None


def make_event(event_type: str, run_id: str, **fields: Any) -> BaseEvent:
    """Build an event of ``event_type`` (a built-in type or a custom name) with ``fields``."""
    kind = event_type if event_type in EVENT_CLASSES else custom_type(event_type)
    return parse_event({"type": kind, "run_id": run_id, **fields})


_SUMMARY_SKIP = frozenset({"id", "type", "run_id", "sequence", "timestamp"})


def _preview(value: Any, limit: int) -> str:
    """``value`` as short JSON; a value JSON cannot hold (from a backend others wrote) as its
    repr, so a summary never raises."""
    try:
        text = json.dumps(value, default=str)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    return clip(text, limit)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with "…" where it was cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def summarize(event: BaseEvent) -> str:
    """One line for logs, tables and terminals (cut text ends with "…")."""
    d = {k: v for k, v in event if k not in _SUMMARY_SKIP}  # extra fields included
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
            return f"{event.name} {_preview(event.data, 80)}"
        case CompleteEvent():
            took = f" in {event.latency_seconds:.2f} s" if event.latency_seconds is not None else ""
            return f"complete{took} {_preview(event.output, 60)}"
        case ErrorEvent():
            return f"{event.code}: {event.error}"
        case StartedEvent():
            return " ".join(x for x in (event.agent_name, event.framework) if x)
        case GapEvent():
            return f"missed {event.from_sequence}..{event.to_sequence}: {event.reason}"
        case _ if event.type == "custom:step_start":
            kind = f" ({d['kind']})" if d.get("kind") else ""
            return f"{d.get('node_name', '')} started{kind}"
        case _ if event.type == "custom:llm_usage":
            if d.get("input_tokens") is None and d.get("output_tokens") is None:
                used = "usage not reported"  # e.g. a streamed fake model
            else:
                used = f"{d.get('input_tokens')} in, {d.get('output_tokens')} out"
            return f"{d.get('model') or 'LLM'}: {used}"
        case _:
            return _preview(d, 100) if d else ""


__all__ = [
    "BUILTIN_TYPES",
    "MANDATORY_TYPES",
    "MAX_DEPTH",
    "MAX_SEQUENCE",
    "TERMINAL_TYPES",
    "BaseEvent",
    "CancelledEvent",
    "CheckpointEvent",
    "CompleteEvent",
    "CustomEvent",
    "ErrorEvent",
    "Event",
    "EventContentError",
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
    "check_content",
    "check_publishable",
    "check_sequence",
    "check_wire",
    "custom_type",
    "is_event",
    "make_event",
    "parse_event",
    "summarize",
    "validate_run_id",
    "with_sequence",
]
