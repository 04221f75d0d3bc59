"""A run's stored events as the spans they make: the plan ``otel_export`` writes.

Pure data, no OpenTelemetry import: the root ``invoke_agent`` span, a span per step (start
from its ``custom:step_start``, else its time minus ``duration_ms``; parent from
``parent_id``), ``chat {model}`` spans with usage, and the root's events. Every time is an
event's own timestamp, in nanoseconds. See ``otel_export`` for the conventions followed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..events import BaseEvent
from ..selection import NoEventsError
from .steps import LLM_USAGE_TYPE, STEP_START_TYPE

ROOT = "\x00root"
MAX_ROOT_EVENTS = 100
MAX_JSON_CHARS = 2000
STEP_START = STEP_START_TYPE
LLM_USAGE = LLM_USAGE_TYPE
TTFC = "gen_ai.response.time_to_first_chunk"

SpanKindName = Literal["internal", "client"]
AttributeValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]


class RunNotFinishedError(ValueError):
    """The run has no terminal event yet; the message says how to export it anyway."""


@dataclass
class SpanPlan:
    """One span to write: everything read from the events, nothing from OpenTelemetry yet."""

    key: str
    name: str
    start_ns: int
    end_ns: int
    parent: str | None
    kind: SpanKindName = "internal"
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None
    events: list[tuple[str, int, dict[str, AttributeValue]]] = field(default_factory=list)


@dataclass
class RunSpans:
    """A run as spans: the root first, then its descendants."""

    run_id: str
    status: str
    """``complete``, ``error``, ``cancelled``, or ``open`` (not finished, exported partially)."""
    spans: list[SpanPlan]

    @property
    def root(self) -> SpanPlan:
        return self.spans[0]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_ns(ts: datetime) -> int:
    """An event timestamp as OpenTelemetry's nanoseconds since the epoch (no float rounding)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ((ts - _EPOCH) // timedelta(microseconds=1)) * 1000


def attribute_value(value: Any) -> AttributeValue | None:
    """``value`` as an OTel attribute: primitives and same-typed lists as they are, anything
    else as (bounded) JSON; None for no value."""
    if value is None:
        return None
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and value:
        first = type(value[0])
        if first in (str, bool, int, float) and all(type(v) is first for v in value):
            return list(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_JSON_CHARS else text[:MAX_JSON_CHARS] + "..."


def _put(attributes: dict[str, AttributeValue], name: str, value: Any) -> None:
    converted = attribute_value(value)
    if converted is not None:
        attributes[name] = converted


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plan_run(run_id: str, events: Sequence[BaseEvent], *, partial: bool = False) -> RunSpans:
    """The spans a run's stored events make. Raises ``NoEventsError`` for no events and
    ``RunNotFinishedError`` for a run with no terminal event (unless ``partial``)."""
    if not events:
        raise NoEventsError(f"no events for run {run_id}: nothing to export")
    ordered = sorted(events, key=lambda e: e.sequence)
    data = [{**e.model_dump(), "timestamp": e.timestamp} for e in ordered]
    terminal = next((d for d in data if d["type"] in ("complete", "error", "cancelled")), None)
    if terminal is None and not partial:
        last = data[-1]
        raise RunNotFinishedError(
            f"run {run_id} has not finished (its last event is #{last['sequence']} "
            f"{last['type']}): export it once it ends, or pass partial=True (--partial) to "
            "export what exists with the run's span marked open"
        )
    started = next((d for d in data if d["type"] == "started"), None)
    status = terminal["type"] if terminal is not None else "open"
    starts = {d.get("step_id"): d for d in data if d["type"] == STEP_START and d.get("step_id")}
    usage_by_step: dict[str, dict[str, Any]] = {}
    loose_usage: list[dict[str, Any]] = []
    for d in data:
        if d["type"] == LLM_USAGE:
            if d.get("step_id") and d["step_id"] not in usage_by_step:
                usage_by_step[d["step_id"]] = d
            else:
                loose_usage.append(d)
    run_error = terminal if terminal is not None and terminal["type"] == "error" else None

    steps: list[SpanPlan] = []
    ended: set[str] = set()
    for d in data:
        if d["type"] != "step":
            continue
        step_id = d.get("step_id") or f"seq-{d['sequence']}"
        key = step_id if step_id not in ended else f"{step_id}#{d['sequence']}"
        ended.add(step_id)
        end = time_ns(d["timestamp"])
        start_event = starts.get(step_id)
        duration = _int(d.get("duration_ms"))
        if start_event is not None:
            start = time_ns(start_event["timestamp"])
        elif duration is not None:
            start = end - duration * 1_000_000
        else:
            start = end
        steps.append(
            _step_span(key, d, min(start, end), end, usage_by_step.pop(step_id, None), run_error)
        )
    last_ns = time_ns(data[-1]["timestamp"])
    for step_id, d in starts.items():
        if step_id in ended:
            continue
        usage = usage_by_step.pop(str(step_id), None)
        plan = _step_span(str(step_id), d, time_ns(d["timestamp"]), last_ns, usage, None)
        plan.attributes["dockrion.step.open"] = True
        steps.append(plan)
    loose_usage.extend(usage_by_step.values())
    for i, d in enumerate(loose_usage):
        steps.append(_usage_span(f"usage-{i}", d))

    keys = {p.key for p in steps}
    for plan in steps:
        if plan.parent not in keys or plan.parent == plan.key:
            plan.parent = ROOT
    root = _root_span(run_id, data, started, terminal, status)
    if steps:
        root.start_ns = min(root.start_ns, *(p.start_ns for p in steps))
        root.end_ns = max(root.end_ns, *(p.end_ns for p in steps))
    return RunSpans(run_id=run_id, status=status, spans=[root, *_parents_first(steps)])


def _root_span(
    run_id: str,
    data: list[dict[str, Any]],
    started: dict[str, Any] | None,
    terminal: dict[str, Any] | None,
    status: str,
) -> SpanPlan:
    agent = started.get("agent_name") if started else None
    start = time_ns((started or data[0])["timestamp"])
    end = time_ns((terminal or data[-1])["timestamp"])
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "dockrion.run.id": run_id,
        "dockrion.run.status": status,
    }
    _put(attrs, "gen_ai.agent.name", agent)
    _put(attrs, "dockrion.framework", started.get("framework") if started else None)
    if data[0]["sequence"] > 1:
        attrs["dockrion.run.first_sequence"] = data[0]["sequence"]  # earlier ones were trimmed
    usage = _run_usage(data, terminal)
    _put(attrs, "gen_ai.usage.input_tokens", usage.get("input_tokens"))
    _put(attrs, "gen_ai.usage.output_tokens", usage.get("output_tokens"))
    _put(attrs, "dockrion.usage.total_tokens", usage.get("total_tokens"))
    _put(attrs, "dockrion.usage.llm_calls", usage.get("calls"))
    first_token = next((d for d in data if d["type"] == "token"), None)
    if first_token is not None:
        attrs[TTFC] = max(0, time_ns(first_token["timestamp"]) - start) / 1e9
    attrs["dockrion.run.token_events"] = sum(1 for d in data if d["type"] == "token")
    plan = SpanPlan(
        key=ROOT,
        name=f"invoke_agent {agent}" if agent else "invoke_agent",
        start_ns=start,
        end_ns=end,
        parent=None,
        attributes=attrs,
    )
    if terminal is None:
        attrs["dockrion.run.open"] = True
    elif terminal["type"] == "complete":
        _put(attrs, "dockrion.run.latency_seconds", terminal.get("latency_seconds"))
        if terminal.get("output"):
            _put(attrs, "dockrion.run.output", terminal["output"])
    elif terminal["type"] == "error":
        details = terminal.get("details") or {}
        code = str(terminal.get("code") or "INTERNAL_ERROR")
        plan.error = str(terminal.get("error") or code)
        attrs["error.type"] = code
        _put(attrs, "dockrion.error.node", details.get("node"))
        exc: dict[str, AttributeValue] = {
            "exception.type": str(details.get("exception_type") or code),
            "exception.message": plan.error,
        }
        _put(exc, "exception.stacktrace", details.get("traceback"))
        plan.events.append(("exception", end, exc))
    else:
        cancelled: dict[str, AttributeValue] = {}
        _put(cancelled, "reason", terminal.get("reason"))
        plan.events.append(("cancelled", end, cancelled))
    plan.events.extend(_root_events(data))
    return plan


def _run_usage(data: list[dict[str, Any]], terminal: dict[str, Any] | None) -> dict[str, Any]:
    """The run's token usage: the ``complete`` event's summed usage, else the sum of its
    ``custom:llm_usage`` events."""
    if terminal is not None:
        usage = (terminal.get("metadata") or {}).get("usage")
        if isinstance(usage, Mapping) and usage:
            return dict(usage)
    totals: dict[str, int] = {}
    for d in data:
        if d["type"] != LLM_USAGE:
            continue
        totals["calls"] = totals.get("calls", 0) + 1
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            value = _int(d.get(key))
            if value is not None:
                totals[key] = totals.get(key, 0) + value
    return totals


_SKIPPED_ON_ROOT = {"started", "step", "token", "heartbeat", STEP_START, LLM_USAGE}
_SKIPPED_ON_ROOT |= {"complete", "error", "cancelled"}
_ENVELOPE = ("id", "type", "run_id", "sequence", "timestamp")


def _root_events(data: list[dict[str, Any]]) -> list[tuple[str, int, dict[str, AttributeValue]]]:
    """Progress, checkpoints and custom events, as events of the root span (bounded)."""
    out: list[tuple[str, int, dict[str, AttributeValue]]] = []
    for d in data:
        if d["type"] in _SKIPPED_ON_ROOT:
            continue
        if len(out) == MAX_ROOT_EVENTS:
            break
        attrs: dict[str, AttributeValue] = {"dockrion.event.sequence": d["sequence"]}
        for name, value in d.items():
            if name not in _ENVELOPE:
                _put(attrs, name, value)
        out.append((d["type"], time_ns(d["timestamp"]), attrs))
    return out


def _model_of(step: Mapping[str, Any], usage: Mapping[str, Any] | None) -> str | None:
    if usage is not None and usage.get("model"):
        return str(usage["model"])
    attrs = step.get("attributes")
    if isinstance(attrs, Mapping):
        for name in ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "model"):
            if isinstance(attrs.get(name), str) and attrs[name]:
                return str(attrs[name])
    return None


def _step_span(
    key: str,
    d: dict[str, Any],
    start: int,
    end: int,
    usage: dict[str, Any] | None,
    run_error: dict[str, Any] | None,
) -> SpanPlan:
    name = str(d.get("node_name") or "step")
    kind = str(d.get("kind") or "chain")
    attrs: dict[str, AttributeValue] = {}
    step_attrs = d.get("attributes")
    if isinstance(step_attrs, Mapping):
        for attr_name, value in step_attrs.items():
            _put(attrs, str(attr_name), value)
    attrs.update(
        {"dockrion.step.name": name, "dockrion.step.kind": kind, "dockrion.step.id": str(key)}
    )
    _put(attrs, "dockrion.step.status", d.get("status"))
    _put(attrs, "dockrion.step.duration_ms", d.get("duration_ms"))
    _put(attrs, "dockrion.step.input_keys", d.get("input_keys") or None)
    _put(attrs, "dockrion.step.output_keys", d.get("output_keys") or None)
    span_kind: SpanKindName = "internal"
    if kind == "llm":
        model = _model_of(d, usage)
        span_name = f"chat {model}" if model else "chat"
        attrs["gen_ai.operation.name"] = "chat"
        _put(attrs, "gen_ai.request.model", model)
        span_kind = "client"
    elif kind == "embedding":
        model = _model_of(d, usage)
        span_name = f"embeddings {model}" if model else "embeddings"
        attrs["gen_ai.operation.name"] = "embeddings"
        _put(attrs, "gen_ai.request.model", model)
        span_kind = "client"
    elif kind == "tool":
        span_name = f"execute_tool {name}"
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = name
    elif kind == "agent":
        span_name = f"invoke_agent {name}"
        attrs["gen_ai.operation.name"] = "invoke_agent"
        attrs["gen_ai.agent.name"] = name
    else:
        span_name = name
    if usage is not None:
        _usage_attributes(attrs, usage)
    plan = SpanPlan(
        key=key,
        name=span_name,
        start_ns=start,
        end_ns=end,
        parent=d.get("parent_id") or ROOT,
        kind=span_kind,
        attributes=attrs,
    )
    if d.get("status") == "error" or (d["type"] == "step" and d.get("error")):
        plan.error = str(d.get("error") or "step failed")
        details = (run_error or {}).get("details") or {}
        error_type = "_OTHER"
        if run_error is not None and details.get("node") == name:
            error_type = str(run_error.get("code") or "_OTHER")
        attrs["error.type"] = error_type
        plan.events.append(
            ("exception", end, {"exception.type": error_type, "exception.message": plan.error})
        )
    return plan


def _usage_attributes(attrs: dict[str, AttributeValue], usage: Mapping[str, Any]) -> None:
    _put(attrs, "gen_ai.usage.input_tokens", _int(usage.get("input_tokens")))
    _put(attrs, "gen_ai.usage.output_tokens", _int(usage.get("output_tokens")))
    _put(attrs, "dockrion.usage.total_tokens", _int(usage.get("total_tokens")))
    _put(attrs, "gen_ai.response.model", usage.get("model"))
    _put(attrs, "gen_ai.provider.name", usage.get("provider"))
    ttft = _int(usage.get("time_to_first_token_ms"))
    if ttft is not None:
        attrs[TTFC] = ttft / 1000


def _usage_span(key: str, d: dict[str, Any]) -> SpanPlan:
    """An LLM call known only from its ``custom:llm_usage`` event (no step around it)."""
    end = time_ns(d["timestamp"])
    duration = _int(d.get("duration_ms")) or 0
    model = d.get("model")
    attrs: dict[str, AttributeValue] = {"gen_ai.operation.name": "chat"}
    _put(attrs, "gen_ai.request.model", model)
    _usage_attributes(attrs, d)
    return SpanPlan(
        key=key,
        name=f"chat {model}" if model else "chat",
        start_ns=end - duration * 1_000_000,
        end_ns=end,
        parent=ROOT,
        kind="client",
        attributes=attrs,
    )


def _parents_first(steps: list[SpanPlan]) -> list[SpanPlan]:
    """Steps ordered so that each comes after its parent (by depth, then start time); a
    ``parent_id`` cycle is broken by hanging its last step on the root. No recursion, so a
    deep or hostile chain of parents cannot exhaust the stack."""
    by_key = {p.key: p for p in steps}
    depth: dict[str, int] = {ROOT: 0}
    for plan in steps:
        path: list[SpanPlan] = []
        on_path: set[str] = set()
        node = plan
        while node.key not in depth:
            path.append(node)
            on_path.add(node.key)
            parent = node.parent or ROOT
            if parent in depth:
                break
            if parent in on_path:
                node.parent = ROOT
                break
            node = by_key[parent]
        for n in reversed(path):
            depth[n.key] = depth[n.parent or ROOT] + 1
    return sorted(steps, key=lambda p: (depth[p.key], p.start_ns))


__all__ = [
    "ROOT",
    "AttributeValue",
    "RunNotFinishedError",
    "RunSpans",
    "SpanPlan",
    "attribute_value",
    "plan_run",
    "time_ns",
]
