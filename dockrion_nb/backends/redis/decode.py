"""Stream entries and Pub/Sub messages into events: the checked slow path (wire dict + model)
and the fast path (a model validated straight from the JSON bytes), which accept alike."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from ...events import (
    EVENT_CLASSES,
    BaseEvent,
    CustomEvent,
    EventRecord,
    EventValidationError,
    parse_event,
)
from ...redaction import masked_logger
from ..base import StoredEvent
from ..gapless import sequence_of

log = masked_logger("dockrion_nb.redis")

# An event as read from Redis, carrying its parsed model so the bus parses it once.
StreamRecord = EventRecord


def decode_record(run_id: str, data: Any, field_sequence: int) -> StreamRecord:
    """A stream entry's ``data`` (or a message) as a wire dict carrying its model; raises
    ``EventValidationError`` for anything that is not an event of ``run_id``."""
    if not isinstance(data, bytes | str):
        raise EventValidationError("no 'data' field")
    try:
        obj = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise EventValidationError(f"'data' is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise EventValidationError("'data' is not a JSON object")
    if field_sequence > 0 and not sequence_of(obj):
        obj["sequence"] = field_sequence
    model = parse_event(obj)
    if model.run_id != run_id:
        raise EventValidationError(f"event of run {model.run_id!r} in run {run_id!r}")
    return StreamRecord(obj, model)


def log_skip(count: int, message: str, *args: Any) -> None:
    """The first ten at WARNING, then every thousandth: a stream full of junk must not
    flood the log."""
    level = logging.WARNING if count <= 10 or count % 1000 == 0 else logging.DEBUG
    log.log(level, message, *args)


def as_sent(response: Any, **options: Any) -> Any:
    return response


TYPE_CLASSES: dict[bytes, type[BaseEvent]] = {k.encode(): v for k, v in EVENT_CLASSES.items()}
FIELD_LAYOUT = (b"data", b"sequence", b"type")


def entry_fields(fields: Any) -> tuple[Any, Any, Any]:
    """``(data, sequence, type)`` of a stream entry's fields (a flat list or a dict)."""
    if type(fields) is list:
        if (
            len(fields) == 6
            and fields[0] == b"data"
            and fields[2] == b"sequence"
            and fields[4] == b"type"
        ):
            return fields[1], fields[3], fields[5]
        fields = dict(zip(fields[::2], fields[1::2], strict=False))  # later ones win
    if not isinstance(fields, dict):
        raise EventValidationError("entry has no fields")
    return fields.get(b"data"), fields.get(b"sequence"), fields.get(b"type")


def type_hint(data: Any) -> bytes | None:
    """The first ``"type"`` value in a JSON text, a guess checked by ``fast_model``."""
    if type(data) is not bytes:
        return None
    start = data.find(b'"type":')
    if start < 0:
        return None
    start += 7
    while data[start : start + 1] == b" ":
        start += 1
    if data[start : start + 1] != b'"':
        return None
    end = data.find(b'"', start + 1)
    return data[start + 1 : end] if end > 0 else None


def type_of(item: StoredEvent) -> Any:
    return item.get("type") if isinstance(item, dict) else item.type


def entry_id_of(entry: Any) -> Any:
    return entry[0] if entry else None


def entry_sequence(entry: Any) -> int:
    """The ``sequence`` field of a raw entry (0 if it has none)."""
    try:
        return field_int(entry_fields(entry[1])[1])
    except (EventValidationError, TypeError, IndexError):
        return 0


def model_sequence(model: BaseEvent) -> int:
    return model.sequence


def fast_model(run_id: str, data: Any, field_sequence: int, kind: Any) -> BaseEvent | None:
    """The model ``decode_record`` would make, straight from the JSON bytes, or None when that
    cannot be vouched for (then the slow path decides, and reports what is wrong).

    The class comes from the entry's ``type`` field; the result counts only if the JSON's own
    ``type`` leads to that same class, was present, the run matches, and the sequence agrees
    with the entry's ``sequence`` field (``decode_record`` fills a missing one from it)."""
    if type(data) is not bytes:
        return None
    cls = TYPE_CLASSES.get(kind, CustomEvent) if type(kind) is bytes else CustomEvent
    try:
        model = cls.model_validate_json(data)
    except ValidationError:
        return None
    if (
        model.run_id != run_id
        or (field_sequence > 0 and model.sequence != field_sequence)
        or EVENT_CLASSES.get(model.type, CustomEvent) is not cls
        or "type" not in model.__pydantic_fields_set__
    ):
        return None
    return model


def as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def field_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
