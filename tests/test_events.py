"""Event models keep Dockrion's wire format; parsing never crashes on unknown types."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from dockrion_nb.events import (
    BaseEvent,
    CompleteEvent,
    CustomEvent,
    ErrorEvent,
    EventValidationError,
    InvalidRunIdError,
    ProgressEvent,
    StartedEvent,
    TokenEvent,
    make_event,
    parse_event,
    summarize,
    validate_run_id,
)

SAMPLES = [
    {"type": "started", "agent_name": "invoice", "framework": "langgraph"},
    {"type": "progress", "step": "parse", "progress": 0.5, "message": "half"},
    {"type": "token", "content": "Hel", "finish_reason": None},
    {
        "type": "step",
        "node_name": "extract",
        "duration_ms": 12,
        "input_keys": ["a"],
        "output_keys": ["b"],
    },
    {"type": "checkpoint", "name": "parsed", "data": {"fields": 3, "nested": {"x": [1, 2]}}},
    {"type": "heartbeat"},
    {"type": "complete", "output": {"answer": 42}, "latency_seconds": 1.5, "metadata": {"m": 1}},
    {"type": "error", "error": "boom", "code": "ValueError", "details": {"tb": "..."}},
    {"type": "cancelled", "reason": "user"},
    {"type": "custom:fraud_check", "score": 0.02, "passed": True},
]


@pytest.mark.parametrize("fields", SAMPLES, ids=[s["type"] for s in SAMPLES])
def test_every_type_round_trips_through_json(fields: dict[str, object]) -> None:
    event = parse_event({"run_id": "run-1", "sequence": 7, **fields})
    wire = json.loads(event.to_json())
    assert wire["type"] == fields["type"]
    assert wire["run_id"] == "run-1" and wire["sequence"] == 7
    assert wire["id"].startswith("evt-")
    for key, value in fields.items():
        assert wire[key] == value
    again = parse_event(event.to_json())
    assert again == event
    assert type(again) is type(event)


def test_timestamp_is_iso8601_utc() -> None:
    event = TokenEvent(run_id="r", content="x")
    stamp = event.to_dict()["timestamp"]
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)


def test_timestamps_in_other_zones_are_converted_to_utc() -> None:
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = parse_event({"type": "heartbeat", "run_id": "r", "timestamp": local.isoformat()})
    assert event.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert event.to_dict()["timestamp"].endswith("+00:00")


def test_unknown_type_parses_as_custom_and_keeps_fields() -> None:
    event = parse_event({"type": "fraud_check", "run_id": "r", "score": 1, "sequence": 3})
    assert isinstance(event, CustomEvent)
    assert event.custom_name == "fraud_check"
    assert event.to_dict()["score"] == 1


def test_extra_fields_on_known_types_are_kept() -> None:
    event = parse_event({"type": "token", "run_id": "r", "content": "x", "model": "gpt"})
    assert event.to_dict()["model"] == "gpt"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"run_id": "r"}, "^Event data missing 'type' field"),
        ({"type": "token", "run_id": "r"}, "invalid token event: content: Field required"),
        ({"type": "progress", "run_id": "r", "step": "s", "progress": "lots"}, "progress"),
        ({"type": "token", "content": "x"}, "run_id: Field required"),
        ({"type": "token", "run_id": "bad id!", "content": "x"}, "invalid run id"),
        ({"type": "token", "run_id": "r", "content": "x", "sequence": -1}, "sequence"),
    ],
)
def test_invalid_data_raises_one_clear_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(EventValidationError, match=message):
        parse_event(data)


def test_non_object_and_bad_json_are_clear_errors() -> None:
    with pytest.raises(EventValidationError, match="not valid JSON"):
        parse_event("{nope")
    with pytest.raises(EventValidationError, match="must be a JSON object, not list"):
        parse_event("[1, 2]")


def test_progress_is_clamped_like_dockrion() -> None:
    assert ProgressEvent(run_id="r", step="s", progress=3).progress == 1.0
    assert ProgressEvent(run_id="r", step="s", progress=-1).progress == 0.0


@pytest.mark.parametrize("good", ["a", "run-1", "A_b-9", "x" * 128, "0abc"])
def test_run_ids_dockrion_accepts(good: str) -> None:
    assert validate_run_id(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "_a", "x" * 129, "a b", "a/b", "a:b", "ü", 5, None])
def test_run_ids_dockrion_rejects(bad: object) -> None:
    with pytest.raises(InvalidRunIdError, match="invalid run id"):
        validate_run_id(bad)


def test_sse_frame() -> None:
    event = TokenEvent(run_id="r", content="hi", sequence=4)
    frame = event.to_sse()
    assert frame.startswith("event: token\ndata: {")
    assert frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1])["content"] == "hi"
    assert event.to_sse(with_id=True) == "id: 4\n" + frame


def test_make_event_prefixes_custom_names() -> None:
    assert make_event("fraud_check", "r", score=1).type == "custom:fraud_check"
    assert make_event("token", "r", content="x").type == "token"


def test_summaries_are_one_line() -> None:
    assert summarize(TokenEvent(run_id="r", content="a\nb")) == "'a\\nb'"
    assert "ValueError: boom" in summarize(ErrorEvent(run_id="r", error="boom", code="ValueError"))
    assert summarize(CompleteEvent(run_id="r", latency_seconds=2)).startswith("complete in 2.00 s")
    assert summarize(StartedEvent(run_id="r", agent_name="a")) == "a"


def test_events_are_frozen_so_subscribers_can_share_them() -> None:
    event = TokenEvent(run_id="r", content="x")
    with pytest.raises(ValueError, match="frozen"):
        event.content = "y"  # type: ignore[misc]


def test_dockrion_produced_events_parse_to_the_same_data() -> None:
    """Events built by the real dockrion package parse here with no field lost or changed."""
    from dockrion_events import models as theirs

    produced = [
        theirs.StartedEvent(run_id="r1", sequence=1, agent_name="a", framework="custom"),
        theirs.ProgressEvent(run_id="r1", sequence=2, step="s", progress=0.25, message="m"),
        theirs.TokenEvent(run_id="r1", sequence=3, content="tok", finish_reason="stop"),
        theirs.StepEvent(
            run_id="r1",
            sequence=4,
            node_name="n",
            duration_ms=5,
            input_keys=["i"],
            output_keys=["o"],
        ),
        theirs.CheckpointEvent(run_id="r1", sequence=5, name="c", data={"k": [1]}),
        theirs.HeartbeatEvent(run_id="r1", sequence=6),
        theirs.CompleteEvent(run_id="r1", sequence=7, output={"x": 1}, latency_seconds=0.5),
        theirs.ErrorEvent(run_id="r1", sequence=8, error="e", code="C", details={"d": 1}),
        theirs.CancelledEvent(run_id="r1", sequence=9, reason="why"),
        theirs.BaseEvent(run_id="r1", sequence=10, type="fraud_check", score=0.5),
    ]
    for their_event in produced:
        wire = their_event.to_dict()
        ours = parse_event(wire)
        assert ours.to_dict() == wire
        # and back: Dockrion parses what we write
        assert theirs.parse_event(ours.to_dict()).to_dict() == wire


@pytest.mark.parametrize("sample", [*SAMPLES, {"type": "fraud_check", "score": 0.25, "ok": "ü"}])
def test_sse_frames_are_byte_for_byte_dockrions(sample: dict[str, object]) -> None:
    from dockrion_events import parse_event as their_parse

    wire = {
        "id": "evt-0123456789ab",
        "run_id": "run-7",
        "sequence": 7,
        "timestamp": "2025-01-02T03:04:05.123456+00:00",
        **sample,
    }
    assert parse_event(wire).to_sse() == their_parse(dict(wire)).to_sse()


def test_create_event_and_is_terminal_event_as_dockrion() -> None:
    from dockrion_events.models import create_event as their_create

    from dockrion_nb.models import create_event, is_terminal_event

    ours = create_event("progress", "run-123", 5, step="parsing", progress=0.5)
    theirs = their_create("progress", "run-123", 5, step="parsing", progress=0.5)
    assert isinstance(ours, ProgressEvent) and ours.sequence == 5
    strip = {"id", "timestamp"}
    assert ours.model_dump(exclude=strip) == theirs.model_dump(exclude=strip)
    custom = create_event("fraud_check", "run-123", 6, score=0.1)
    assert custom.type == their_create("fraud_check", "run-123", 6, score=0.1).type == "fraud_check"
    assert [
        is_terminal_event(make_event(k, "r", **f))
        for k, f in [
            ("complete", {}),
            ("error", {"error": "x"}),
            ("cancelled", {}),
            ("token", {"content": "x"}),
        ]
    ] == [True, True, True, False]
    assert is_terminal_event({"type": "complete"}) and not is_terminal_event({"type": "step"})


def _observable(event: BaseEvent) -> tuple[Any, ...]:
    return (
        type(event),
        list(event.__dict__),
        {k: v for k, v in event.__dict__.items() if k not in ("id", "timestamp")},
        event.model_fields_set,
        event.__pydantic_extra__,
        event.__pydantic_private__,
        type(event.timestamp.tzinfo),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": "r-1", "content": "hi"},
        {"run_id": "r-1", "content": "hi", "finish_reason": "stop"},
        {"run_id": "r-1", "content": "hi", "finish_reason": None},
        {"content": "", "run_id": "r-1"},
    ],
)
def test_a_token_built_from_plain_arguments_is_the_model_validation_makes(
    kwargs: dict[str, Any],
) -> None:
    # TokenEvent(...) fills plain arguments in directly (half the cost): nothing may differ
    # from what pydantic's validation makes of the same arguments.
    validate_run_id("r-1")
    fast = TokenEvent(**kwargs)
    slow = TokenEvent.model_validate(kwargs)
    assert _observable(fast) == _observable(slow)
    assert fast.to_dict() | {"id": slow.id, "timestamp": slow.to_dict()["timestamp"]} == (
        slow.to_dict()
    )
    assert re.fullmatch(r"evt-[0-9a-f]{12}", fast.id)


class _Text(str):
    pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": "r-2", "content": _Text("sub")},  # a str subclass: validation makes a str
        {"run_id": "r-2", "content": "x", "sequence": "7"},  # more than the plain arguments
        {"run_id": "r-2", "content": "x", "extra_field": 1},
        {"run_id": "r-2", "content": "x", "finish_reason": _Text("stop")},
        {"run_id": "never-seen-before-run", "content": "x"},  # run id not checked yet
    ],
)
def test_a_token_built_from_other_arguments_is_validated(kwargs: dict[str, Any]) -> None:
    fast = TokenEvent(**kwargs)
    slow = TokenEvent.model_validate(kwargs)
    assert _observable(fast) == _observable(slow)
    assert type(fast.content) is str


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": "r-3", "content": 5},
        {"run_id": "r-3", "content": None},
        {"run_id": "bad id", "content": "x"},
        {"run_id": "r-3"},
        {"run_id": "r-3", "content": "x", "finish_reason": 1},
    ],
)
def test_a_token_built_from_bad_arguments_is_refused_as_before(kwargs: dict[str, Any]) -> None:
    validate_run_id("r-3")
    with pytest.raises(ValidationError) as fast:
        TokenEvent(**kwargs)
    with pytest.raises(ValidationError) as slow:
        TokenEvent.model_validate(kwargs)
    assert fast.value.errors(include_context=False) == slow.value.errors(include_context=False)
