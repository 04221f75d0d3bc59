"""OpenTelemetry spans out: a finished run, from its stored events, as GenAI spans.

``export_run(run_id, tracer_provider)`` writes one trace per run, with the GenAI semantic
conventions, so runs land in any OTel backend (Jaeger, Phoenix, Langfuse, a collector):

- the root ``invoke_agent {agent}`` span (``gen_ai.operation.name=invoke_agent``,
  ``gen_ai.agent.name``, ``dockrion.run.id``, the run's summed ``gen_ai.usage.*``), from
  ``started`` to the terminal event; ``error`` sets status ERROR with an ``exception`` event,
  ``cancelled`` leaves the status unset with a ``cancelled`` event;
- a child span per step (``step`` events, and steps that started and never ended), from its
  ``custom:step_start`` (else the step's time minus ``duration_ms``) to its ``step``, under the
  span of its ``parent_id``; LLM steps are ``chat {model}`` spans with ``gen_ai.usage.*``,
  tools ``execute_tool {name}``; a failed step has status ERROR and an ``exception`` event;
- time to first token as ``gen_ai.response.time_to_first_chunk`` (seconds, the GenAI
  conventions' span attribute): on a chat span from its ``custom:llm_usage``, on the root from
  ``started`` to the run's first ``token`` event;
- progress, checkpoints and custom events as events of the root span.

Span times are the events' timestamps. A run that has not finished is refused
(``RunNotFinishedError``) unless ``partial=True``: then what exists is exported and the root
ends at the last event, marked ``dockrion.run.open=true``, status unset.

``otel_plan`` reads the events into a plan of spans (no OpenTelemetry needed); this module
writes the plan with a tracer provider, or sends it over OTLP/HTTP (protobuf) to a URL with
``send_otlp`` (``dockrion-nb export RUN --otlp URL``). Nothing here is imported by
``import dockrion_nb``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..engine import Engine, get_engine
from .otel import EXPORT_SCOPE
from .otel_plan import ROOT, RunNotFinishedError, RunSpans, SpanPlan, plan_run, time_ns

EXPORT_VERSION = "0.1.0"
SPAN_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}


class OtlpExportError(RuntimeError):
    """The OTLP receiver did not take the spans; the message (URL masked) says why."""


@dataclass(frozen=True)
class ExportedRun:
    """What an export wrote: the run's trace id (32 hex digits) and how many spans."""

    run_id: str
    trace_id: str
    span_count: int
    status: str


# -- plan -> spans --------------------------------------------------------------------------------


def write_spans(plan: RunSpans, tracer_provider: trace.TracerProvider) -> ExportedRun:
    """Create and end the planned spans with ``tracer_provider``'s tracer, at their own times."""
    tracer = tracer_provider.get_tracer(EXPORT_SCOPE, EXPORT_VERSION)
    made: dict[str, trace.Span] = {}
    for p in plan.spans:
        parent_ctx = (
            Context() if p.parent is None else trace.set_span_in_context(made[p.parent], Context())
        )
        made[p.key] = tracer.start_span(
            p.name,
            context=parent_ctx,
            kind=SPAN_KINDS[p.kind],
            attributes=p.attributes,
            start_time=p.start_ns,
        )
    for p in [*sorted(plan.spans[1:], key=lambda p: p.end_ns), plan.root]:
        span = made[p.key]
        for name, at, attrs in sorted(p.events, key=lambda e: e[1]):
            span.add_event(name, attrs, timestamp=at)
        if p.error is not None:
            span.set_status(Status(StatusCode.ERROR, p.error))
        elif p.key == ROOT and plan.status == "complete":
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=p.end_ns)
    trace_id = made[ROOT].get_span_context().trace_id
    return ExportedRun(
        run_id=plan.run_id,
        trace_id=f"{trace_id:032x}",
        span_count=len(plan.spans),
        status=plan.status,
    )


def _provider(tracer_provider: trace.TracerProvider | None) -> trace.TracerProvider:
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        raise ValueError(
            "no OpenTelemetry tracer provider to export to: pass tracer_provider=..., or set "
            "one first with opentelemetry.trace.set_tracer_provider(TracerProvider(...))"
        )
    return provider


def export_run(
    run_id: str,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    engine: Engine | None = None,
    partial: bool = False,
) -> ExportedRun:
    """Write a finished run (read through ``engine``, default the notebook's) as spans with
    ``tracer_provider`` (default: the global one), then flush it so they reach its exporters.

    Raises ``NoEventsError`` for an unknown run, ``RunNotFinishedError`` for a run still
    going (``partial=True`` exports it with the root marked open) and ``ValueError`` when no
    tracer provider is set."""
    provider = _provider(tracer_provider)
    eng = engine if engine is not None else get_engine()
    plan = plan_run(run_id, eng.run(eng.bus.get_events(run_id)), partial=partial)
    exported = write_spans(plan, provider)
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        flush()
    return exported


# -- over OTLP/HTTP -------------------------------------------------------------------------------


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


@contextmanager
def _exporter_logs() -> Iterator[_Collected]:
    """The OTLP exporter's own log lines, kept from the terminal (they may show the URL) and
    collected for one error message."""
    logger = logging.getLogger("opentelemetry.exporter")
    handler = _Collected()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


# an HTTP status only: when the exporter's retries run out of time, requests refuses a
# connect timeout of 0 and the exporter logs that as "code: None" (no answer at all)
_REFUSED = re.compile(r"code: (?P<code>\d+), reason: (?P<reason>.*)")
_ERRNO = re.compile(r"\[Errno -?\d+\] (?P<text>[^\"')]+)")


def failure_reason(messages: Sequence[str], timeout: float) -> str:
    """One phrase for why the OTLP exporter failed, from the lines it logged."""
    for message in reversed(messages):
        refused = _REFUSED.search(message)
        if refused:
            return f"the receiver answered HTTP {refused['code']} ({refused['reason'].strip()})"
    for message in reversed(messages):
        if message.startswith("Transient error"):
            errno = _ERRNO.search(message)
            detail = errno["text"].strip() if errno else message[:300]
            return f"{detail} (gave up after {timeout:g} s of retries)"
    return (
        f"no successful answer within {timeout:g} s (unreachable, or it kept failing): check "
        "that an OTLP/HTTP receiver listens there (a collector's default is port 4318)"
    )


def run_spans(plan: RunSpans, *, service_name: str = "dockrion-nb") -> list[ReadableSpan]:
    """The planned spans, finished and in memory (to hand to any exporter)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    write_spans(plan, provider)
    provider.shutdown()
    return list(memory.get_finished_spans())


def send_otlp(
    plan: RunSpans,
    endpoint: str,
    *,
    shown_as: str,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> ExportedRun:
    """Send the run's spans to an OTLP/HTTP (protobuf) traces endpoint in one request.

    ``shown_as`` is how errors name the endpoint (credentials masked). Raises
    ``OtlpExportError`` when the receiver cannot be reached or refuses the spans."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    agent = plan.root.attributes.get("gen_ai.agent.name")
    spans = run_spans(plan, service_name=str(agent) if agent else "dockrion-nb")
    exporter = OTLPSpanExporter(
        endpoint=endpoint, timeout=timeout, headers=dict(headers) if headers else None
    )
    try:
        with _exporter_logs() as logs:
            result = exporter.export(spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        why = failure_reason(logs.messages, timeout).replace(endpoint, shown_as)
        raise OtlpExportError(f"could not export run {plan.run_id} to {shown_as}: {why}")
    root = next(s for s in spans if s.parent is None)
    assert root.context is not None
    return ExportedRun(
        run_id=plan.run_id,
        trace_id=f"{root.context.trace_id:032x}",
        span_count=len(spans),
        status=plan.status,
    )


__all__ = [
    "EXPORT_SCOPE",
    "ExportedRun",
    "OtlpExportError",
    "RunNotFinishedError",
    "RunSpans",
    "SpanPlan",
    "export_run",
    "failure_reason",
    "plan_run",
    "run_spans",
    "send_otlp",
    "time_ns",
    "write_spans",
]
