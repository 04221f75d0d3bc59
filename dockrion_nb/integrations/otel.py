"""OpenTelemetry spans in: each span becomes a step of a run, live, as it starts and ends.

``SpanEventProcessor`` is an SDK ``SpanProcessor``. Added to a ``TracerProvider``, it turns the
spans of any instrumentation (OpenInference, the GenAI instrumentations, your own
``start_as_current_span``) into the shared step vocabulary (``integrations.steps``): a span
that starts is a ``custom:step_start`` at once (the view shows it running), a span that ends
is a ``step`` with its duration, kind and attributes (bounded), GenAI / OpenInference token
counts are ``custom:llm_usage``, and a span with status ERROR (or a recorded ``exception`` with
no status set) is a step with ``status: error``.

Which run a span is written to:

- ``ctx=`` or ``run_id=`` given: every span goes to that run;
- else the run traced where the span starts (inside ``%%publish`` or ``trace()``);
- else its trace's own run, ``otel-<32 hex digits of the trace id>``.

Spans that start elsewhere (a worker thread without the notebook's context) find the run by
their trace id. A run the processor owns (a trace's own run, or ``run_id=``) gets ``started``
when the span that opened it starts and ``complete`` or ``error`` (naming the failing span) when
that span ends; events for it after that are not written, since a run ends once. A ``ctx=``
run, or a traced one, is ended by its owner.

A failing root span of an untraced ``ctx=`` run ends it with ``error``, as every
integration's ``StepTracker`` does.

``on_start``/``on_end`` run in the instrumented code's thread: each publishes its one or two
events and returns, and never raises into that code; a failure is logged once (then at debug
level) and counted in ``errors``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from ..context import StreamContext, get_current_context
from ..engine import Engine, get_engine
from ..events import ErrorEvent, validate_run_id
from ..redaction import masked_logger
from ..tracing import MAX_TRACEBACK_CHARS
from .steps import MAX_ATTRIBUTE_CHARS, StepTracker

log = masked_logger("dockrion_nb.integrations.otel")

SOURCE = "otel"
EXPORT_SCOPE = "dockrion_nb.integrations.otel_export"
"""The instrumentation scope of runs exported as spans (``otel_export``): such spans are a
copy of a run, so the processor does not write them back as another run."""
RUN_ID_PREFIX = "otel-"
MAX_TRACES = 1024
"""Traces remembered at once (open ones, and recently ended ones whose late spans are dropped)."""
MAX_OPEN_SPANS = 65_536
MAX_CONTEXTS = 256
"""Runs of ``StreamContext``s remembered (a span still open keeps its own run regardless)."""
MAX_ATTRIBUTE_VALUE_CHARS = 200
MAX_SEQUENCE_ITEMS = 20
ATTRIBUTE_BUDGET = MAX_ATTRIBUTE_CHARS - 200
"""Span attributes are packed into about this many characters of JSON, most useful first."""

# Attribute names read for usage, model and kind, most specific first.
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKENS = ("llm.token_count.total",)
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # seconds
OPENINFERENCE_KIND = "openinference.span.kind"
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_OPERATION_KINDS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "invoke_workflow": "chain",
}
PRIORITY_PREFIXES = (
    "openinference.",
    "gen_ai.",
    "llm.model_name",
    "llm.provider",
    "llm.token_count",
)


def run_id_for_trace(trace_id: int) -> str:
    """The run a trace writes to when nothing else is chosen: ``otel-`` and its 32 hex digits."""
    return f"{RUN_ID_PREFIX}{trace_id:032x}"


def step_id_for_span(span_id: int) -> str:
    return f"{span_id:016x}"


@dataclass
class _Run:
    """A run spans are written to, with the tracker that remembers its open steps."""

    tracker: StepTracker
    owned: bool
    """The processor writes this run's ``started`` and its terminal event."""
    opened_by: tuple[int, int] | None = None
    """(trace id, span id) of the span whose start opened an owned run; its end ends the run."""
    ended: bool = False


@dataclass
class _Trace:
    run: _Run
    root_span_id: int


@dataclass
class _OpenSpan:
    run: _Run
    step_id: str


@dataclass
class SpanError:
    """Why a span failed, read from its status and its last recorded ``exception`` event."""

    message: str
    exception_type: str | None = None
    stacktrace: str | None = None


class SpanEventProcessor(SpanProcessor):
    """Writes spans to runs as they start and end (see the module docstring for which run).

    ``ctx``: a run to write every span to (its owner ends it). ``run_id``: a run the processor
    owns, opened by the first span and ended with it. ``engine``: the engine the processor's
    own runs are published through (default: the notebook's, ``get_engine()``).
    ``agent_name``: the ``started`` event's agent of owned runs (default: the root span's name).
    """

    def __init__(
        self,
        ctx: StreamContext | None = None,
        *,
        run_id: str | None = None,
        engine: Engine | None = None,
        agent_name: str | None = None,
    ) -> None:
        if ctx is not None and run_id is not None:
            raise ValueError("give ctx= or run_id=, not both: ctx already names its run")
        if ctx is not None and not isinstance(ctx, StreamContext):
            raise TypeError(f"ctx must be a StreamContext, not {type(ctx).__name__}")
        self._ctx = ctx
        self._run_id = validate_run_id(run_id) if run_id is not None else None
        self._engine = engine
        self._agent_name = agent_name
        self._lock = threading.Lock()
        self._pinned: _Run | None = None
        # id(ctx) -> its run; the entry holds the ctx, so an id is not reused while listed.
        self._contexts: OrderedDict[int, _Run] = OrderedDict()
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._ended_traces: OrderedDict[int, None] = OrderedDict()
        self._spans: OrderedDict[tuple[int, int], _OpenSpan] = OrderedDict()
        self._owned: list[tuple[_Run, str]] = []
        self._closed = False
        self._warned: set[str] = set()
        self.errors = 0
        """How many span starts/ends could not be written (each logged, the first as a warning)."""
        self.dropped = 0
        """Spans not written because their run had already ended (or the processor shut down)."""

    # -- the SDK's hooks ------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._closed:
            return
        try:
            self._start(span)
        except Exception as exc:
            self._failed("on_start", span, exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._end(span)
        except Exception as exc:
            self._failed("on_end", span, exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: every event is published before ``on_start``/``on_end``
        return."""
        return True

    def shutdown(self) -> None:
        """Stop writing spans. Runs the processor owns whose root span is still open end with
        ``cancelled`` (nothing will end them now), so no view waits for them forever."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            still_open = [(run, name) for run, name in self._owned if not run.ended]
            for run, _ in still_open:
                run.ended = True
            self._owned.clear()
            self._traces.clear()
            self._spans.clear()
            self._contexts.clear()
        for run, name in still_open:
            try:
                run.tracker.ctx.sync_emit_cancelled(
                    f"the tracer provider shut down while span {name!r} was still open"
                )
            except Exception as exc:
                self._failed("shutdown", None, exc)

    # -- which run -------------------------------------------------------------------------------

    def _engine_for_runs(self) -> Engine:
        return self._engine if self._engine is not None else get_engine()

    def _run_of_context(self, ctx: StreamContext) -> _Run:
        run = self._contexts.get(id(ctx))
        if run is None:
            run = self._contexts[id(ctx)] = _Run(StepTracker(ctx, source=SOURCE), owned=False)
            _bound(self._contexts, MAX_CONTEXTS)
        else:
            self._contexts.move_to_end(id(ctx))
        return run

    def _owned_run(self, run_id: str, name: str, key: tuple[int, int]) -> _Run:
        name = _bounded_value(name)
        ctx = self._engine_for_runs().context(
            run_id, agent_name=self._agent_name or name, framework="opentelemetry"
        )
        ctx.traced = True  # this processor writes the terminal event, naming the failing span
        run = _Run(StepTracker(ctx, source=SOURCE), owned=True, opened_by=key)
        self._owned.append((run, name))
        return run

    def _route(self, span: Span, trace_id: int, span_id: int) -> tuple[_Run, bool, bool] | None:
        """(the span's run, whether it is the first span of its trace in that run, whether
        the run is new and needs its ``started``); None when it must not be written."""
        key = (trace_id, span_id)
        entry = self._traces.get(trace_id)
        new_run = False
        if self._ctx is not None:
            run = self._run_of_context(self._ctx)
        elif self._run_id is not None:
            if self._pinned is None:
                self._pinned = self._owned_run(self._run_id, span.name, key)
                new_run = True
            run = self._pinned
        elif (current := get_current_context()) is not None:
            run = self._run_of_context(current)
        elif entry is not None:
            run = entry.run
        elif trace_id in self._ended_traces:
            return None  # a late span of a trace whose run has ended
        else:
            run = self._owned_run(run_id_for_trace(trace_id), span.name, key)
            new_run = True
        if run.ended:
            return None
        first_in_run = entry is None or entry.run.tracker.ctx is not run.tracker.ctx
        if entry is None:
            self._traces[trace_id] = _Trace(run, span_id)
            _bound(self._traces, MAX_TRACES)
        return run, first_in_run, new_run

    # -- start and end ----------------------------------------------------------------------------

    def _start(self, span: Span) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == EXPORT_SCOPE:
            return  # our own export of a run: writing it back would make a copy of the run
        sc = span.get_span_context()
        trace_id, span_id = sc.trace_id, sc.span_id
        with self._lock:
            routed = self._route(span, trace_id, span_id)
            if routed is None:
                self.dropped += 1
                self._warn_late(trace_id)
                return
            run, first_in_run, new_run = routed
            step_id = step_id_for_span(span_id)
            self._spans[(trace_id, span_id)] = _OpenSpan(run, step_id)
            _bound(self._spans, MAX_OPEN_SPANS)
        parent = span.parent
        parent_id = (
            step_id_for_span(parent.span_id)
            if parent is not None and not first_in_run and not parent.is_remote
            else None
        )
        if new_run:
            run.tracker.ctx.sync_emit_started()
        attributes = pack_attributes(span.attributes or {})
        attributes["otel.trace_id"] = f"{trace_id:032x}"
        attributes["otel.span_kind"] = span.kind.name.lower()
        if parent is not None and parent_id is None:
            attributes["otel.parent_span_id"] = step_id_for_span(parent.span_id)
        run.tracker.start(
            step_id,
            _bounded_value(span.name),
            kind=kind_of(span.attributes or {}),
            parent_id=parent_id,
            attributes=attributes,
        )

    def _end(self, span: ReadableSpan) -> None:
        sc = span.get_span_context()
        if sc is None:
            return
        key = (sc.trace_id, sc.span_id)
        with self._lock:
            open_span = self._spans.pop(key, None)
            if open_span is None:
                return
            run = open_span.run
            entry = self._traces.get(sc.trace_id)
            if entry is not None and entry.root_span_id == sc.span_id:
                del self._traces[sc.trace_id]
                self._ended_traces[sc.trace_id] = None
                _bound(self._ended_traces, MAX_TRACES)
            ends_run = run.owned and run.opened_by == key and not run.ended
            if run.ended:
                self.dropped += 1
                return
            if ends_run:
                run.ended = True
                self._owned = [(r, n) for r, n in self._owned if r is not run]
        attrs = span.attributes or {}
        duration = duration_ms(span)
        error = error_of(span)
        tracker = run.tracker
        usage = usage_of(attrs)
        if usage is not None:
            tracker.usage(step_id=open_span.step_id, duration_ms=duration, **usage)
        attributes = pack_attributes(attrs)
        attributes["otel.span_kind"] = span.kind.name.lower()
        if span.status.status_code is not StatusCode.UNSET:
            attributes["otel.status"] = span.status.status_code.name.lower()
        tracker.end(
            open_span.step_id,
            attributes=attributes,
            error=error.message if error is not None else None,
            kind=kind_of(attrs),
            duration_ms=duration,
        )
        if ends_run:
            self._finish_run(run, span, error, duration)

    def _finish_run(
        self, run: _Run, span: ReadableSpan, error: SpanError | None, duration: int | None
    ) -> None:
        ctx = run.tracker.ctx
        trace_hex = f"{span.context.trace_id:032x}" if span.context is not None else None
        if error is None:
            metadata: dict[str, Any] = {"trace_id": trace_hex}
            if ctx.usage:
                metadata["usage"] = dict(ctx.usage)
            latency = None if duration is None else duration / 1000
            ctx.sync_emit_complete(latency_seconds=latency, metadata=metadata)
            return
        node = ctx.failed_step or _bounded_value(span.name)
        details: dict[str, Any] = {"node": node, "source": SOURCE, "trace_id": trace_hex}
        if error.exception_type:
            details["exception_type"] = error.exception_type
        if error.stacktrace:
            details["traceback"] = error.stacktrace[-MAX_TRACEBACK_CHARS:]
        code = (error.exception_type or "SpanError").rsplit(".", 1)[-1]
        ctx.sync_emit_event(
            ErrorEvent(
                run_id=ctx.run_id, error=f"{node}: {error.message}", code=code, details=details
            )
        )

    # -- failures ---------------------------------------------------------------------------------

    def _failed(self, where: str, span: ReadableSpan | None, exc: Exception) -> None:
        self.errors += 1
        name = getattr(span, "name", None)
        if "failed" not in self._warned:
            self._warned.add("failed")
            log.warning(
                "SpanEventProcessor.%s could not write span %r (%s: %s); the instrumented code "
                "goes on, and further failures are logged at debug level",
                where,
                name,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        else:
            log.debug("SpanEventProcessor.%s could not write span %r", where, name, exc_info=exc)

    def _warn_late(self, trace_id: int) -> None:
        if "late" not in self._warned:
            self._warned.add("late")
            log.warning(
                "a span of trace %032x started after its run had ended; it is not written "
                "(pass ctx=... to write several traces into one run)",
                trace_id,
            )


# -- reading a span --------------------------------------------------------------------------------


def duration_ms(span: ReadableSpan) -> int | None:
    if span.start_time is None or span.end_time is None:
        return None
    return max(0, round((span.end_time - span.start_time) / 1_000_000))


def kind_of(attributes: Mapping[str, Any]) -> str:
    """Our step kind from OpenInference's span kind or the GenAI operation name."""
    oi = attributes.get(OPENINFERENCE_KIND)
    if isinstance(oi, str) and oi:
        return oi.lower()
    op = attributes.get(GENAI_OPERATION)
    if isinstance(op, str) and op:
        return GENAI_OPERATION_KINDS.get(op, op)
    return "span"


def _first(attributes: Mapping[str, Any], names: Iterable[str], kind: type) -> Any:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def usage_of(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """``StepTracker.usage`` arguments from GenAI or OpenInference attributes, or None when
    the span reports no tokens."""
    input_tokens = _first(attributes, INPUT_TOKENS, int)
    output_tokens = _first(attributes, OUTPUT_TOKENS, int)
    total_tokens = _first(attributes, TOTAL_TOKENS, int)
    ttfc = attributes.get(TIME_TO_FIRST_CHUNK)
    ttft = round(ttfc * 1000) if isinstance(ttfc, int | float) and ttfc >= 0 else None
    if input_tokens is None and output_tokens is None and total_tokens is None and ttft is None:
        return None
    return {
        "model": _first(attributes, MODEL, str),
        "provider": _first(attributes, PROVIDER, str),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "time_to_first_token_ms": ttft,
    }


def error_of(span: ReadableSpan) -> SpanError | None:
    """The span's failure: status ERROR, or a recorded ``exception`` with no status set (an
    explicit OK means the exception was handled). The message is the exception's own, the
    status description when there is none."""
    status = span.status.status_code
    if status is StatusCode.OK:
        return None
    recorded = [e for e in span.events if e.name == "exception"]
    if status is not StatusCode.ERROR and not recorded:
        return None
    attrs: Mapping[str, Any] = (recorded[-1].attributes or {}) if recorded else {}
    exc_type = attrs.get("exception.type")
    exc_message = attrs.get("exception.message")
    stack = attrs.get("exception.stacktrace")
    message = (
        (str(exc_message) if exc_message else None)
        or span.status.description
        or (str(exc_type) if exc_type else None)
        or "span ended with status ERROR"
    )
    return SpanError(
        message=message[:MAX_ATTRIBUTE_CHARS],
        exception_type=str(exc_type) if exc_type else None,
        stacktrace=str(stack) if stack else None,
    )


def _bounded_value(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            return value[:MAX_ATTRIBUTE_VALUE_CHARS] + "..."
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        items = [_bounded_value(v) for v in list(value)[:MAX_SEQUENCE_ITEMS]]
        if len(value) > MAX_SEQUENCE_ITEMS:
            items.append(f"... {len(value) - MAX_SEQUENCE_ITEMS} more")
        return items
    return value


def pack_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Span attributes kept for the view: each value cut to a preview, the most useful names
    (kinds, GenAI, model, token counts) first, within about ``ATTRIBUTE_BUDGET`` characters;
    ``otel.attributes_dropped`` counts the names that did not fit."""
    names = sorted(attributes, key=lambda n: (not n.startswith(PRIORITY_PREFIXES),))
    packed: dict[str, Any] = {}
    used = 2
    dropped = 0
    for name in names:
        value = _bounded_value(attributes[name])
        cost = len(json.dumps({name: value}, ensure_ascii=False, default=str))
        if used + cost > ATTRIBUTE_BUDGET:
            dropped += 1
            continue
        packed[name] = value
        used += cost
    if dropped:
        packed["otel.attributes_dropped"] = dropped
    return packed


def _bound(mapping: OrderedDict[Any, Any], limit: int) -> None:
    while len(mapping) > limit:
        mapping.popitem(last=False)


__all__ = [
    "SpanError",
    "SpanEventProcessor",
    "error_of",
    "kind_of",
    "pack_attributes",
    "run_id_for_trace",
    "usage_of",
]
