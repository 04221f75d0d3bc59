"""Stored events in a fraction of a model's memory: one tuple of what differs per event.

Why: a stored pydantic model costs about 800 bytes (the instance, its ``__dict__``, its
fields-set ``set``, an empty extras ``dict``, besides its id and timestamp), more than the
wire ``dict`` Dockrion keeps. The memory backend keeps each stored model as a record instead:
a tuple of the event's own values (``id``, ``timestamp``, the fields of its type, its extras),
with the class and a constant ``type`` kept once per layout and the run id and sequence kept
by the run's log: about 210 bytes a token event (Dockrion's wire dict: about 460). A read
builds the model again, directly (no validation: the values were validated when the event
was made), in about half a microsecond: the price of the memory is paid by whole-run reads
(bench row 4b: 100,000 events in about 0.09 s, where handing out kept models took about
0.02 s).

What a reader can tell: nothing but the fields set. A model read back has every field in
``model_fields_set``, like one parsed from the wire (which is what the Redis backend returns);
its values, ``__dict__`` order, extras, equality and wire form are the stored model's. Models
read back without extras share one fields-set ``set`` (pydantic never changes it on a frozen
model; copies get their own). Models this module cannot describe (private attributes,
another run's id, a ``__dict__`` that is not the class's fields in order) are kept as they
are.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable
from typing import Any, Literal

from ..events import BaseEvent, set_dict, set_extra, set_fields_set, set_private

BASE_FIELDS = ("id", "type", "run_id", "sequence", "timestamp")

_new = object.__new__


class Layout:
    """How the records of one event class (with or without extras) are laid out:
    ``(id, timestamp, *fields after the base five[, type][, extras], layout index)``."""

    __slots__ = ("cls", "extra", "fields", "index", "model", "pick", "rest", "size", "tail", "type")

    def __init__(self, cls: type[BaseEvent], type_: str | None, rest: tuple[str, ...], extra: bool):
        # A record ends with its layout's index in LAYOUTS, not the layout itself: a tuple of
        # plain values only is one the garbage collector stops tracking (it skips it in
        # every full collection), and a run holds one tuple per event.
        self.index = len(LAYOUTS)
        self.tail = (self.index,)
        LAYOUTS.append(self)
        self.cls = cls
        self.type = type_  # the class's one type, or None: each record holds its own
        self.rest = rest
        self.extra = extra
        self.size = len(BASE_FIELDS) + len(rest)  # keys of a model's __dict__
        self.fields = frozenset(BASE_FIELDS + rest)
        names = ("id", "timestamp", *rest) + (("type",) if type_ is None else ())
        self.pick: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*names)
        self.model: Callable[[tuple[Any, ...], str, int], BaseEvent] = self._builder(len(names))
        BUILDERS.append(self.model)

    def _builder(self, type_at: int) -> Callable[[tuple[Any, ...], str, int], BaseEvent]:
        """``model(record, run_id, sequence)``: the stored model, built again. Generated for
        this layout (as dataclasses generate ``__init__``), so that the ``__dict__`` is one
        dict display in the model's field order: half the cost of filling it in a loop, and
        a whole replay builds one model per event."""
        kind = repr(self.type) if self.type is not None else f"r[{type_at - 1}]"
        entries = [
            '"id": r[0]',
            f'"type": {kind}',
            '"run_id": run_id',
            '"sequence": seq',
            '"timestamp": r[1]',
            *(f"{name!r}: r[{i}]" for i, name in enumerate(self.rest, 2)),
        ]
        if self.extra:  # the fields set of a parsed event names its extras too
            fields_set, extra = "set(fields) | r[-2].keys()", "r[-2]"
        else:
            fields_set, extra = "fields", "{}"
        source = (
            "def model(r, run_id, seq):\n"
            "    m = new(cls)\n"
            f"    set_dict(m, {{{', '.join(entries)}}})\n"
            f"    set_fields_set(m, {fields_set})\n"
            f"    set_extra(m, {extra})\n"
            "    set_private(m, None)\n"
            "    return m\n"
        )
        scope: dict[str, Any] = {
            "new": _new,
            "cls": self.cls,
            # one set for every model read without extras: pydantic never changes the fields
            # set of a frozen model (copies copy it), and a set each is an allocation and a
            # tracked object per event for the garbage collector
            "fields": set(self.fields),
            "set_dict": set_dict,
            "set_fields_set": set_fields_set,
            "set_extra": set_extra,
            "set_private": set_private,
        }
        exec(compile(source, f"<record layout of {self.cls.__name__}>", "exec"), scope)
        built: Callable[[tuple[Any, ...], str, int], BaseEvent] = scope["model"]
        return built


LAYOUTS: list[Layout] = []  # every layout made, by index (records name theirs by index)
# each layout's ``model``, by the same index: a whole-run read looks one up per record
BUILDERS: list[Callable[[tuple[Any, ...], str, int], BaseEvent]] = []
PLAIN: dict[type, Layout | None] = {}  # each class's layout without extras (None: keep models)
_WITH_EXTRA: dict[type, Layout | None] = {}


def _constant_type(cls: type[BaseEvent]) -> str | None:
    """The one ``type`` a class allows (a ``Literal`` of one value), else None."""
    field = cls.model_fields["type"]
    args = typing.get_args(field.annotation)
    literal = typing.get_origin(field.annotation) is Literal
    return str(args[0]) if literal and len(args) == 1 and field.default == args[0] else None


def _layouts_of(cls: type[BaseEvent]) -> None:
    names = tuple(cls.model_fields)
    if names[: len(BASE_FIELDS)] == BASE_FIELDS:
        kind, rest = _constant_type(cls), names[len(BASE_FIELDS) :]
        PLAIN[cls], _WITH_EXTRA[cls] = Layout(cls, kind, rest, False), Layout(cls, kind, rest, True)
    else:
        PLAIN[cls] = _WITH_EXTRA[cls] = None


def compact(event: BaseEvent, run_id: str) -> tuple[Any, ...] | BaseEvent:
    """The record of ``event`` (stored in run ``run_id``), or ``event`` itself when it has
    something a record does not describe."""
    record = record_of(
        type(event), event.__dict__, event.__pydantic_extra__, event.__pydantic_private__, run_id
    )
    return event if record is None else record


def record_of(
    cls: type[BaseEvent],
    fields: dict[str, Any],
    extra: dict[str, Any] | None,
    private: dict[str, Any] | None,
    run_id: str,
) -> tuple[Any, ...] | None:
    """``compact`` given the parts its caller has already read; None: keep the model."""
    if cls not in PLAIN:
        _layouts_of(cls)
    layout = _WITH_EXTRA[cls] if extra else PLAIN[cls]
    if layout is None or len(fields) != layout.size or private is not None:
        return None
    try:
        if fields["run_id"] != run_id:
            return None
        if layout.type is not None and fields["type"] != layout.type:
            return None
        values = layout.pick(fields)
    except KeyError:  # not the class's fields (a hand-built __dict__)
        return None
    return values + ((extra, layout.index) if extra else layout.tail)


__all__ = ["BASE_FIELDS", "BUILDERS", "LAYOUTS", "PLAIN", "Layout", "compact", "record_of"]
