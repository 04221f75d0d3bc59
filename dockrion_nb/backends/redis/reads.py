"""Reading a run's stream: all of it in chunks, or only its tail, and the raw entries into
events in sequence order. Entries stay Redis's flat field lists until decoded (redis-py's dict
per entry would cost more than the rest of reading)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from ...events import BaseEvent, CustomEvent
from .decode import TYPE_CLASSES, as_bytes, entry_id_of, entry_sequence

T = TypeVar("T")

READ_CHUNK = 1000  # stream entries per XRANGE/XREVRANGE call
FIRST_TAIL_CHUNK = 16

# The JSON validators of the classes whose ``type`` is fixed (a Literal), by the type's bytes.
_FIXED_TYPES: dict[bytes, Callable[[bytes], Any]] = {
    name: cls.__pydantic_validator__.validate_json
    for name, cls in TYPE_CLASSES.items()
    if cls is not CustomEvent
}


async def read_all(client: Any, key: str) -> list[Any]:
    """Every entry of the stream, ``READ_CHUNK`` per call."""
    entries: list[Any] = []
    start: bytes | str = "-"
    while True:
        chunk: list[Any] = await client.xrange(key, min=start, max="+", count=READ_CHUNK) or []
        entries.extend(chunk)
        if len(chunk) < READ_CHUNK:
            return entries
        start = b"(" + as_bytes(entry_id_of(chunk[-1]))


async def read_tail(client: Any, key: str, from_sequence: int) -> list[Any]:
    """The entries holding ``sequence >= from_sequence`` (and perhaps a few before), walking
    back from the end: the cost follows what is returned, not the stream's length."""
    entries: list[Any] = []
    end: bytes | str = "+"
    count = FIRST_TAIL_CHUNK
    while True:
        chunk: list[Any] = await client.xrevrange(key, max=end, min="-", count=count) or []
        entries.extend(chunk)
        if len(chunk) < count:
            break
        low = entry_sequence(chunk[-1])
        if 0 < low < from_sequence:
            break
        end = b"(" + as_bytes(entry_id_of(chunk[-1]))
        # Sequences are dense for our writers: ask for about what is left, in one go.
        wanted = low - from_sequence + 2 if low > 0 else READ_CHUNK
        count = max(FIRST_TAIL_CHUNK, min(READ_CHUNK, wanted))
    entries.reverse()
    return entries


def decoded_in_order(
    run_id: str,
    entries: list[Any],
    from_sequence: int,
    decode: Callable[[str, Any, Any], T | None],
    sequence: Callable[[T], int],
) -> list[T]:
    """Decode raw entries (skipping invalid ones), keep ``sequence >= from_sequence`` and
    return them ordered by sequence; the sort is skipped when the stream was already in order,
    as it is for every writer that numbers events on the server."""
    out: list[T] = []
    in_order = True
    last = -1
    for entry_id, fields in entries:
        item = decode(run_id, entry_id, fields)
        if item is None:
            continue
        seq = sequence(item)
        if seq >= from_sequence:
            out.append(item)
            in_order = in_order and seq >= last
            last = seq
    if not in_order:
        out.sort(key=sequence)
    return out


def models_in_order(
    run_id: str,
    entries: list[Any],
    from_sequence: int,
    decode: Callable[[str, Any, Any], BaseEvent | None],
) -> list[BaseEvent]:
    """``decoded_in_order`` for models, with ``decode_model``'s fast path written out in the
    loop (a replay spends most of its time here, and each call level costs about as much as
    the JSON parse): an entry laid out as our script and Dockrion write it, whose ``type``
    field names a class with a fixed type, is validated from its JSON bytes and kept if the
    run, the JSON's own ``type`` and the sequence agree with the entry. Anything else goes to
    ``decode``, which accepts and rejects exactly as the slow path does."""
    out: list[BaseEvent] = []
    in_order = True
    last = -1
    fixed = _FIXED_TYPES
    for entry_id, fields in entries:
        model: BaseEvent | None = None
        if (
            type(fields) is list
            and len(fields) == 6
            and fields[0] == b"data"
            and fields[2] == b"sequence"
            and fields[4] == b"type"
        ):
            validate = fixed.get(fields[5])
            data = fields[1]
            if validate is not None and type(data) is bytes:
                try:
                    checked: Any = validate(data)
                    field_sequence = int(fields[3])
                except (ValidationError, ValueError):
                    pass
                else:
                    if (
                        checked.run_id == run_id
                        and (field_sequence <= 0 or checked.sequence == field_sequence)
                        and "type" in checked.__pydantic_fields_set__
                    ):
                        model = checked
        if model is None:
            model = decode(run_id, entry_id, fields)
            if model is None:
                continue
        seq = model.sequence
        if seq >= from_sequence:
            out.append(model)
            in_order = in_order and seq >= last
            last = seq
    if not in_order:
        out.sort(key=_model_sequence)
    return out


def _model_sequence(model: BaseEvent) -> int:
    return model.sequence
