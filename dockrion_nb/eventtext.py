"""Events from what users type: ``key=value`` fields and JSON Lines / YAML event bodies.

The parser behind ``%%publish --events-body``, ``dockrion-nb publish --file`` and the
``publish`` fields. A body is validated whole before anything is published, and each error
names its line, so a typo never leaves half a run in the backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from .events import (
    CUSTOM_PREFIX,
    EVENT_CLASSES,
    GAP_TYPE,
    BaseEvent,
    EventValidationError,
    make_event,
    parse_event,
    validate_run_id,
)


class EventsTextError(ValueError):
    """An events body (JSON Lines or YAML) that cannot be published; names the bad lines."""


def parse_value(text: str) -> Any:
    """JSON when it parses (``0.5``, ``true``, ``{"a": 1}``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fields(tokens: Iterable[str]) -> dict[str, Any]:
    """``key=value`` tokens to a dict, values parsed as JSON when possible."""
    out: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"expected key=value, got {token!r}")
        out[key] = parse_value(value)
    return out


def user_event(event_type: str, run_id: str, fields: Mapping[str, Any]) -> BaseEvent:
    """An event a user asked to publish: a built-in type, ``custom:<name>``, or a bare name
    (made ``custom:<name>``). ``gap`` is refused: subscribers make those."""
    if event_type == GAP_TYPE:
        raise EventValidationError("'gap' events are made by subscribers, not published")
    given_run = fields.get("run_id", run_id)
    if given_run != run_id:
        raise EventValidationError(f"event is for run {given_run!r}, not {run_id!r}")
    data = {k: v for k, v in fields.items() if k not in ("type", "run_id")}
    if event_type in EVENT_CLASSES or event_type.startswith(CUSTOM_PREFIX):
        return parse_event({"type": event_type, "run_id": run_id, **data})
    return make_event(event_type, run_id, **data)


def _event_from_item(item: Any, run_id: str) -> BaseEvent:
    if not isinstance(item, Mapping):
        raise EventValidationError(
            f"expected an event object with a 'type', got {type(item).__name__}"
        )
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventValidationError("event has no 'type' field")
    return user_event(kind, run_id, item)


def _yaml_items(text: str) -> list[tuple[int, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EventsTextError(f"{where}not valid YAML: {problem}") from None
    if not isinstance(root, yaml.SequenceNode) or not isinstance(data, list):
        raise EventsTextError(
            "the body must be JSON Lines (one event object per line) or a YAML list "
            "(- type: started ...)"
        )
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, data, strict=True)]


def parse_events_text(text: str, run_id: str, *, max_errors: int = 5) -> list[BaseEvent]:
    """Events from JSON Lines or a YAML list, all validated before any is published.

    Each error names its line; ``#`` lines and blank lines in JSON Lines are skipped.
    """
    validate_run_id(run_id)
    lines = text.splitlines()
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not meaningful:
        raise EventsTextError(
            "no events in the body: write one JSON object per line, or a YAML list"
        )
    errors: list[tuple[int, str]] = []
    items: list[tuple[int, Any]] = []
    if meaningful[0].startswith("{"):
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                items.append((number, json.loads(stripped)))
            except json.JSONDecodeError as exc:
                errors.append((number, f"line {number}: not valid JSON: {exc.msg}"))
    else:
        items = _yaml_items(text)
    events: list[BaseEvent] = []
    for number, item in items:
        try:
            events.append(_event_from_item(item, run_id))
        except (EventValidationError, ValueError) as exc:
            errors.append((number, f"line {number}: {exc}"))
    if errors:
        errors.sort()
        more = len(errors) - max_errors
        shown = "; ".join(msg for _, msg in errors[:max_errors])
        if more > 0:
            shown += f" (and {more} more)"
        raise EventsTextError(f"nothing published: {shown}")
    if not events:
        raise EventsTextError("no events in the body")
    return events
