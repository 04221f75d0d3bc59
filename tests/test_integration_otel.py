"""OpenTelemetry: spans in (live steps of a run) and runs out (GenAI spans, OTLP/HTTP).

Real SDK throughout (``TracerProvider``, ``InMemorySpanExporter``), OpenInference's real
LangChain instrumentation on a LangChain fake chat model, and a loopback OTLP/HTTP receiver of
the test's own that parses ``ExportTraceServiceRequest`` with ``opentelemetry-proto``.
"""

# Nested `with` blocks mirror the nesting of the spans they open: that is what is tested.
# ruff: noqa: SIM117

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import redis_cleanup
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import dockrion_nb
from dockrion_nb.cli import main as cli_main
from dockrion_nb.engine import Engine
from dockrion_nb.events import BaseEvent, CustomEvent, StepEvent
from dockrion_nb.integrations.otel import SpanEventProcessor, run_id_for_trace
from dockrion_nb.integrations.otel_export import (
    RunNotFinishedError,
    export_run,
    failure_reason,
    time_ns,
)
from dockrion_nb.integrations.steps import LLM_USAGE_TYPE, STEP_START_TYPE, StepTracker
from dockrion_nb.selection import NoEventsError

# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="otel-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


class Spans:
    """A real SDK provider with our processor and an in-memory copy of every finished span."""

    def __init__(self, processor: SpanEventProcessor) -> None:
        self.processor = processor
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("tests.otel")

    def finished(self, name: str) -> ReadableSpan:
        return next(s for s in self.memory.get_finished_spans() if s.name == name)


@pytest.fixture
def spans(engine: Engine) -> Iterator[Spans]:
    s = Spans(SpanEventProcessor(engine=engine))
    try:
        yield s
    finally:
        s.provider.shutdown()


def stored(engine: Engine, run_id: str) -> list[BaseEvent]:
    return engine.run(engine.bus.get_events(run_id))


def data(event: BaseEvent) -> dict[str, Any]:
    return event.model_dump()


def kinds(events: Sequence[BaseEvent]) -> list[str]:
    """``type`` or ``type name`` for steps, e.g. ``custom:step_start agent``."""
    out = []
    for e in events:
        name = data(e).get("node_name")
        out.append(f"{e.type} {name}" if name and e.type in ("step", STEP_START_TYPE) else e.type)
    return out


def hex_span(span: ReadableSpan | trace.Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def run_of(span: ReadableSpan | trace.Span) -> str:
    return run_id_for_trace(span.get_span_context().trace_id)


def assert_each_once_in_order(events: Sequence[BaseEvent]) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)


class Follower:
    """A live subscriber on the engine loop, as the widget is, recording what reaches it."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.events: list[BaseEvent] = []
        self._cond = threading.Condition()
        ready = threading.Event()

        async def follow() -> None:
            stream = engine.bus.subscribe(run_id)  # in place when this returns
            ready.set()
            async for event in stream:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
                if event.is_terminal:
                    return

        self.future = engine.submit(follow())
        assert ready.wait(10)

    def wait_for(self, predicate: Callable[[list[BaseEvent]], bool], timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.events), timeout)

    def seen(self, kind: str) -> Callable[[list[BaseEvent]], bool]:
        return lambda events: kind in kinds(events)

    def finish(self) -> list[BaseEvent]:
        self.future.result(10)
        return self.events


# -- spans in: runs, steps, parents ---------------------------------------------------------------


def test_a_root_span_is_a_run_of_its_own_and_each_span_a_step(engine: Engine, spans: Spans) -> None:
    with spans.tracer.start_as_current_span("agent", attributes={"app.user": "ana"}) as root:
        with spans.tracer.start_as_current_span("plan"):
            with spans.tracer.start_as_current_span("lookup", kind=trace.SpanKind.CLIENT):
                pass
    run_id = run_of(root)
    assert run_id == f"otel-{root.get_span_context().trace_id:032x}"
    events = stored(engine, run_id)
    assert kinds(events) == [
        "started",
        "custom:step_start agent",
        "custom:step_start plan",
        "custom:step_start lookup",
        "step lookup",
        "step plan",
        "step agent",
        "complete",
    ]
    assert_each_once_in_order(events)
    assert data(events[0])["agent_name"] == "agent"
    assert data(events[0])["framework"] == "opentelemetry"
    ends = {data(e)["node_name"]: data(e) for e in events if e.type == "step"}
    agent, plan, lookup = spans.finished("agent"), spans.finished("plan"), spans.finished("lookup")
    assert ends["agent"]["step_id"] == hex_span(agent) and ends["agent"]["parent_id"] is None
    assert ends["plan"]["parent_id"] == hex_span(agent)
    assert ends["lookup"]["parent_id"] == hex_span(plan)
    for span in (agent, plan, lookup):
        assert span.start_time is not None and span.end_time is not None
        expected = round((span.end_time - span.start_time) / 1e6)
        assert ends[span.name]["duration_ms"] == expected
        assert ends[span.name]["status"] == "ok"
    assert ends["agent"]["attributes"]["app.user"] == "ana"
    assert ends["lookup"]["attributes"]["otel.span_kind"] == "client"
    starts = [data(e) for e in events if e.type == STEP_START_TYPE]
    assert starts[0]["attributes"]["otel.trace_id"] == f"{agent.context.trace_id:032x}"
    assert data(events[-1])["metadata"]["trace_id"] == f"{agent.context.trace_id:032x}"


def test_two_traces_are_two_runs(engine: Engine, spans: Spans) -> None:
    with spans.tracer.start_as_current_span("first") as a:
        pass
    with spans.tracer.start_as_current_span("second") as b:
        pass
    assert run_of(a) != run_of(b)
    assert kinds(stored(engine, run_of(b))) == [
        "started",
        "custom:step_start second",
        "step second",
        "complete",
    ]


def test_span_attributes_are_kept_bounded_most_useful_first(engine: Engine, spans: Spans) -> None:
    attributes: dict[str, Any] = {f"app.field_{i:03}": "v" * 150 for i in range(60)}
    attributes["input.value"] = "x" * 50_000
    attributes["gen_ai.request.model"] = "gpt-test"
    attributes["tags"] = [f"t{i}" for i in range(100)]
    with spans.tracer.start_as_current_span("big " * 5_000, attributes=attributes) as span:
        pass
    step = next(data(e) for e in stored(engine, run_of(span)) if e.type == "step")
    assert step["node_name"].startswith("big big") and len(step["node_name"]) <= 203
    kept = step["attributes"]
    assert len(json.dumps(kept)) < 2000
    assert "truncated" not in kept  # packed by name, not cut into one preview
    assert kept["gen_ai.request.model"] == "gpt-test"  # GenAI names first
    assert kept["otel.attributes_dropped"] > 0
    assert kept["otel.attributes_dropped"] + sum(1 for k in kept if k in attributes) == len(
        attributes
    )
    for value in kept.values():
        if isinstance(value, str):
            assert len(value) <= 203


# -- spans in: failures ---------------------------------------------------------------------------


def test_an_exception_fails_its_steps_and_ends_the_run_naming_the_span(
    engine: Engine, spans: Spans
) -> None:
    with pytest.raises(ValueError, match="bad account"):
        with spans.tracer.start_as_current_span("agent") as root:
            with spans.tracer.start_as_current_span("charge_card"):
                raise ValueError("bad account")
    events = stored(engine, run_of(root))
    assert kinds(events)[-3:] == ["step charge_card", "step agent", "error"]
    child, parent = (data(e) for e in events if e.type == "step")
    assert (child["status"], child["error"]) == ("error", "bad account")
    assert child["attributes"]["otel.status"] == "error"
    assert parent["status"] == "error"
    error = data(events[-1])
    assert error["error"] == "charge_card: bad account"
    assert error["code"] == "ValueError"
    assert error["details"]["node"] == "charge_card"
    assert error["details"]["exception_type"] == "ValueError"
    assert "raise ValueError" in error["details"]["traceback"]
    assert_each_once_in_order(events)


def test_a_recorded_exception_fails_a_step_unless_the_span_says_ok(
    engine: Engine, spans: Spans
) -> None:
    with spans.tracer.start_as_current_span("agent") as root:
        with spans.tracer.start_as_current_span("retry") as handled:
            handled.record_exception(TimeoutError("first try timed out"))
            handled.set_status(Status(StatusCode.OK))
        with spans.tracer.start_as_current_span("flaky") as unhandled:
            unhandled.record_exception(TimeoutError("gave up"))
        with spans.tracer.start_as_current_span("status_only") as status_only:
            status_only.set_status(Status(StatusCode.ERROR, "quota exceeded"))
    steps = {
        data(e)["node_name"]: data(e) for e in stored(engine, run_of(root)) if e.type == "step"
    }
    assert steps["retry"]["status"] == "ok"
    assert (steps["flaky"]["status"], steps["flaky"]["error"]) == ("error", "gave up")
    assert steps["status_only"]["error"] == "quota exceeded"
    assert stored(engine, run_of(root))[-1].type == "complete"  # the root itself succeeded


# -- spans in: usage ------------------------------------------------------------------------------


def test_genai_usage_attributes_become_llm_usage_and_run_totals(
    engine: Engine, spans: Spans
) -> None:
    with spans.tracer.start_as_current_span("invoke_agent helper") as root:
        with spans.tracer.start_as_current_span(
            "chat gpt-4o",
            kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
        ) as llm:
            llm.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            llm.set_attribute("gen_ai.provider.name", "openai")
            llm.set_attribute("gen_ai.usage.input_tokens", 12)
            llm.set_attribute("gen_ai.usage.output_tokens", 30)
            llm.set_attribute("gen_ai.response.time_to_first_chunk", 0.25)
        with spans.tracer.start_as_current_span(
            "chat old", attributes={"gen_ai.system": "anthropic", "gen_ai.usage.input_tokens": 3}
        ):
            pass
    events = stored(engine, run_of(root))
    usage = [data(e) for e in events if e.type == LLM_USAGE_TYPE]
    assert usage[0]["step_id"] == hex_span(spans.finished("chat gpt-4o"))
    assert (usage[0]["model"], usage[0]["provider"]) == ("gpt-4o-2024-08-06", "openai")
    assert (usage[0]["input_tokens"], usage[0]["output_tokens"], usage[0]["total_tokens"]) == (
        12,
        30,
        42,
    )
    assert usage[0]["time_to_first_token_ms"] == 250
    assert (usage[1]["provider"], usage[1]["input_tokens"]) == ("anthropic", 3)
    llm_kinds = [data(e)["kind"] for e in events if e.type in ("step", STEP_START_TYPE)]
    assert llm_kinds.count("llm") == 2  # chat: known at the start, so the view shows it at once
    assert kinds(events).index("custom:llm_usage") < kinds(events).index("step chat gpt-4o")
    assert data(events[-1])["metadata"]["usage"] == {
        "calls": 2,
        "input_tokens": 15,
        "output_tokens": 30,
        "total_tokens": 42,
        "models": ["gpt-4o-2024-08-06"],
    }


def test_openinference_attributes_become_llm_usage_and_the_kind_set_at_the_end(
    engine: Engine, spans: Spans
) -> None:
    with spans.tracer.start_as_current_span("ChatModel") as span:
        span.set_attribute("openinference.span.kind", "LLM")
        span.set_attribute("llm.model_name", "claude-x")
        span.set_attribute("llm.provider", "anthropic")
        span.set_attribute("llm.token_count.prompt", 7)
        span.set_attribute("llm.token_count.completion", 5)
        span.set_attribute("llm.token_count.total", 12)
    events = stored(engine, run_of(span))
    start = next(data(e) for e in events if e.type == STEP_START_TYPE)
    end = next(data(e) for e in events if e.type == "step")
    usage = next(data(e) for e in events if e.type == LLM_USAGE_TYPE)
    assert (start["kind"], end["kind"]) == ("span", "llm")
    assert (usage["model"], usage["provider"], usage["total_tokens"]) == (
        "claude-x",
        "anthropic",
        12,
    )


# -- spans in: which run --------------------------------------------------------------------------


def test_spans_inside_trace_are_steps_of_that_run(
    engine: Engine, spans: Spans, run_id: str
) -> None:
    with dockrion_nb.trace(run_id, engine=engine):
        with spans.tracer.start_as_current_span("graph") as root:
            with spans.tracer.start_as_current_span("node"):
                pass
    events = stored(engine, run_id)
    assert kinds(events) == [
        "started",
        "custom:step_start graph",
        "custom:step_start node",
        "step node",
        "step graph",
        "complete",
    ]
    assert data(events[3])["parent_id"] == hex_span(root)
    assert stored(engine, run_of(root)) == []  # no run of its own


def test_a_failing_span_inside_trace_is_named_by_the_trace_error(
    engine: Engine, spans: Spans, run_id: str
) -> None:
    with pytest.raises(KeyError), dockrion_nb.trace(run_id, engine=engine):
        with spans.tracer.start_as_current_span("graph"):
            with spans.tracer.start_as_current_span("load_profile"):
                raise KeyError("user-7")
    events = stored(engine, run_id)
    assert [e.type for e in events].count("error") == 1
    error = data(events[-1])
    assert error["type"] == "error" and error["details"]["node"] == "load_profile"
    assert error["error"].startswith("load_profile: ")


def test_a_child_span_in_a_worker_thread_finds_its_run_by_trace_id(
    engine: Engine, spans: Spans, run_id: str
) -> None:
    with dockrion_nb.trace(run_id, engine=engine):
        with spans.tracer.start_as_current_span("fan_out") as root:
            parent = trace.set_span_in_context(root)

            def work() -> None:  # a plain thread: neither our contextvar nor OTel's is set
                assert dockrion_nb.get_current_context() is None
                with spans.tracer.start_as_current_span("worker", context=parent):
                    pass

            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
    worker = next(data(e) for e in stored(engine, run_id) if e.type == "step")
    assert (worker["node_name"], worker["parent_id"]) == ("worker", hex_span(root))


def test_ctx_pins_every_trace_to_one_run_its_owner_ends(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    s = Spans(SpanEventProcessor(ctx))
    try:
        for name in ("first", "second"):
            with s.tracer.start_as_current_span(name):
                pass
    finally:
        s.provider.shutdown()
    assert kinds(stored(engine, run_id)) == [
        "custom:step_start first",
        "step first",
        "custom:step_start second",
        "step second",
    ]


def test_run_id_names_the_run_the_processor_owns_and_late_spans_are_dropped(
    engine: Engine, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spans(SpanEventProcessor(run_id=run_id, engine=engine, agent_name="billing"))
    try:
        with s.tracer.start_as_current_span("root"):
            with s.tracer.start_as_current_span("child"):
                pass
        with caplog.at_level(logging.WARNING, "dockrion_nb.integrations.otel"):
            with s.tracer.start_as_current_span("after_the_end"):
                pass
    finally:
        s.provider.shutdown()
    events = stored(engine, run_id)
    assert kinds(events) == [
        "started",
        "custom:step_start root",
        "custom:step_start child",
        "step child",
        "step root",
        "complete",
    ]
    assert data(events[0])["agent_name"] == "billing"
    assert s.processor.dropped == 1
    assert "started after its run had ended" in caplog.text


def test_both_ctx_and_run_id_is_refused(engine: Engine, run_id: str) -> None:
    with pytest.raises(ValueError, match=r"give ctx= or run_id=, not both"):
        SpanEventProcessor(engine.context(run_id), run_id=run_id)
    with pytest.raises(ValueError, match=r"invalid run id 'no spaces'"):
        SpanEventProcessor(run_id="no spaces")


# -- spans in: live, in order, once ---------------------------------------------------------------


def test_a_started_span_shows_while_the_code_is_still_inside_it(
    engine: Engine, spans: Spans, run_id: str
) -> None:
    follower = Follower(engine, run_id)
    seen_inside: dict[str, bool] = {}
    with dockrion_nb.trace(run_id, engine=engine):
        with spans.tracer.start_as_current_span("agent"):
            seen_inside["agent"] = follower.wait_for(follower.seen("custom:step_start agent"))
            with spans.tracer.start_as_current_span("search"):
                seen_inside["search"] = follower.wait_for(follower.seen("custom:step_start search"))
            seen_inside["search ended"] = follower.wait_for(follower.seen("step search"))
            assert "step agent" not in kinds(follower.events)
    assert seen_inside == {"agent": True, "search": True, "search ended": True}
    live = follower.finish()
    assert kinds(live) == kinds(stored(engine, run_id))
    assert_each_once_in_order(live)


def test_the_processor_never_raises_into_the_instrumented_code(
    spans: Spans, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.shutdown()  # every publish now fails
    with caplog.at_level(logging.DEBUG, "dockrion_nb.integrations.otel"):
        for _ in range(3):
            with spans.tracer.start_as_current_span("work"):
                result = "the code ran"
    assert result == "the code ran"
    assert spans.processor.errors >= 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "could not write span 'work'" in warnings[0].getMessage()


def test_shutdown_cancels_owned_runs_whose_root_is_still_open(engine: Engine, spans: Spans) -> None:
    assert spans.processor.force_flush() is True
    root = spans.tracer.start_span("never_ends")
    spans.provider.shutdown()
    root.end()
    events = stored(engine, run_of(root))
    assert kinds(events) == ["started", "custom:step_start never_ends", "cancelled"]
    assert "shut down while span 'never_ends' was still open" in data(events[-1])["reason"]


# -- spans in: OpenInference's LangChain instrumentation ------------------------------------------


@pytest.fixture
def instrumented(spans: Spans) -> Iterator[Spans]:
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=spans.provider)
    try:
        yield spans
    finally:
        instrumentor.uninstrument()


def fake_chain(step: Callable[[Any], Any]) -> Any:
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="Paris is the capital of France.",
                    usage_metadata={"input_tokens": 9, "output_tokens": 7, "total_tokens": 16},
                )
            ]
        )
    )
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    return prompt | model | RunnableLambda(step, name="check_answer") | StrOutputParser()


def test_openinference_langchain_spans_appear_live_in_order_once(
    engine: Engine, instrumented: Spans, run_id: str
) -> None:
    follower = Follower(engine, run_id)
    seen_inside: list[bool] = []

    def check_answer(message: Any) -> Any:
        # The chain is still running: the chain's span is open, the model's has ended.
        seen_inside.append(
            follower.wait_for(
                lambda events: (
                    {
                        "custom:step_start RunnableSequence",
                        "step GenericFakeChatModel",
                        "custom:step_start check_answer",
                    }
                    <= set(kinds(events))
                )
            )
        )
        seen_inside.append("step RunnableSequence" not in kinds(follower.events))
        return message

    with dockrion_nb.trace(run_id, engine=engine):
        answer = fake_chain(check_answer).invoke({"question": "Capital of France?"})
    assert answer == "Paris is the capital of France."
    assert seen_inside == [True, True]
    live = follower.finish()
    events = stored(engine, run_id)
    assert kinds(live) == kinds(events)
    assert_each_once_in_order(live)
    assert kinds(events) == [
        "started",
        "custom:step_start RunnableSequence",
        "custom:step_start ChatPromptTemplate",
        "step ChatPromptTemplate",
        "custom:step_start GenericFakeChatModel",
        "custom:llm_usage",
        "step GenericFakeChatModel",
        "custom:step_start check_answer",
        "step check_answer",
        "custom:step_start StrOutputParser",
        "step StrOutputParser",
        "step RunnableSequence",
        "complete",
    ]
    steps = {data(e)["node_name"]: data(e) for e in events if e.type == "step"}
    chain_id = steps["RunnableSequence"]["step_id"]
    assert steps["RunnableSequence"]["parent_id"] is None
    for name in ("ChatPromptTemplate", "GenericFakeChatModel", "check_answer", "StrOutputParser"):
        assert steps[name]["parent_id"] == chain_id
    assert steps["GenericFakeChatModel"]["kind"] == "llm"  # OpenInference sets it at the end
    assert steps["ChatPromptTemplate"]["kind"] == "prompt"
    usage = next(data(e) for e in events if e.type == LLM_USAGE_TYPE)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (9, 7, 16)
    assert usage["step_id"] == steps["GenericFakeChatModel"]["step_id"]
    assert data(events[-1])["metadata"]["usage"]["total_tokens"] == 16


def test_openinference_chain_without_a_run_is_a_run_of_its_own_and_fails_naming_the_step(
    engine: Engine, instrumented: Spans
) -> None:
    def check_answer(message: Any) -> Any:
        raise RuntimeError("answer failed the check")

    with pytest.raises(RuntimeError, match="answer failed the check"):
        fake_chain(check_answer).invoke({"question": "Capital of France?"})
    chain_span = instrumented.finished("RunnableSequence")
    events = stored(engine, run_of(chain_span))
    assert events[0].type == "started"
    assert kinds(events)[-3:] == ["step check_answer", "step RunnableSequence", "error"]
    error = data(events[-1])
    assert error["error"] == "check_answer: answer failed the check"
    assert error["code"] == "RuntimeError" and error["details"]["node"] == "check_answer"
    assert_each_once_in_order(events)


# -- spans out ------------------------------------------------------------------------------------


def publish_agent_run(engine: Engine, run_id: str, *, fail: bool = False) -> list[BaseEvent]:
    """A run as the integrations write it: a plan step holding an LLM call and a tool."""
    ctx = engine.context(run_id, agent_name="travel", framework="langgraph")
    ctx.sync_emit_started()
    tracker = StepTracker(ctx, source="test")
    tracker.start("plan-1", "plan", kind="chain", inputs={"question": "q"})
    tracker.start("llm-1", "ChatOpenAI", kind="llm", parent_id="plan-1")
    tracker.token("Go ", step_id="llm-1")
    tracker.token("to Rome.", step_id="llm-1", finish_reason="stop")
    tracker.usage(
        step_id="llm-1",
        model="gpt-4o-mini",
        provider="openai",
        input_tokens=11,
        output_tokens=4,
        time_to_first_token_ms=120,
    )
    tracker.end("llm-1")
    ctx.sync_emit_progress("plan", 0.5, "half way")
    tracker.start("tool-1", "search_flights", kind="tool", parent_id="plan-1")
    tracker.end("tool-1", error=TimeoutError("airline API timed out") if fail else None)
    tracker.end("plan-1", outputs={"answer": "Rome"})
    ctx.sync_checkpoint("answer", {"text": "Go to Rome."})
    if fail:
        ctx.sync_emit_error(
            "search_flights: airline API timed out",
            code="TimeoutError",
            details={"node": "search_flights", "exception_type": "TimeoutError"},
        )
    else:
        ctx.sync_emit_complete(
            {"answer": "Rome"}, 0.5, {"usage": {"calls": 1, "input_tokens": 11, "output_tokens": 4}}
        )
    return stored(engine, run_id)


def exported(engine: Engine, run_id: str, **kwargs: Any) -> dict[str, ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    result = export_run(run_id, provider, engine=engine, **kwargs)
    out = {s.name: s for s in memory.get_finished_spans()}
    assert result.span_count == len(out)
    root = out[next(n for n in out if out[n].parent is None)]
    assert result.trace_id == f"{root.context.trace_id:032x}"
    provider.shutdown()
    return out


def at(events: Sequence[BaseEvent], kind: str, **match: Any) -> int:
    """The timestamp (ns) of the first event of ``kind`` whose fields match."""
    for e in events:
        if e.type == kind and all(data(e).get(k) == v for k, v in match.items()):
            return time_ns(e.timestamp)
    raise AssertionError(f"no {kind} {match}")


def test_a_run_exports_as_genai_spans_with_its_event_times(engine: Engine, run_id: str) -> None:
    events = publish_agent_run(engine, run_id)
    out = exported(engine, run_id)
    assert set(out) == {
        "invoke_agent travel",
        "plan",
        "chat gpt-4o-mini",
        "execute_tool search_flights",
    }
    root, plan = out["invoke_agent travel"], out["plan"]
    chat, tool = out["chat gpt-4o-mini"], out["execute_tool search_flights"]
    assert root.parent is None and root.kind is trace.SpanKind.INTERNAL
    assert plan.parent is not None and plan.parent.span_id == root.context.span_id
    assert chat.parent is not None and chat.parent.span_id == plan.context.span_id
    assert tool.parent is not None and tool.parent.span_id == plan.context.span_id
    assert {s.context.trace_id for s in out.values()} == {root.context.trace_id}
    assert root.attributes is not None and chat.attributes is not None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "travel"
    assert root.attributes["dockrion.run.id"] == run_id
    assert root.attributes["gen_ai.usage.input_tokens"] == 11
    assert root.status.status_code is StatusCode.OK
    assert chat.kind is trace.SpanKind.CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert (
        chat.attributes["gen_ai.usage.input_tokens"],
        chat.attributes["gen_ai.usage.output_tokens"],
    ) == (11, 4)
    assert chat.attributes["gen_ai.response.time_to_first_chunk"] == 0.12
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "search_flights"
    # times are the events' own
    assert root.start_time == at(events, "started")
    assert root.end_time == at(events, "complete")
    assert plan.start_time == at(events, STEP_START_TYPE, step_id="plan-1")
    assert plan.end_time == at(events, "step", step_id="plan-1")
    assert chat.start_time == at(events, STEP_START_TYPE, step_id="llm-1")
    assert chat.end_time == at(events, "step", step_id="llm-1")
    first_token = at(events, "token")
    assert root.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(
        (first_token - at(events, "started")) / 1e9
    )
    assert [e.name for e in root.events] == ["progress", "checkpoint"]
    assert (
        root.events[0].attributes is not None and root.events[0].attributes["message"] == "half way"
    )
    assert plan.attributes is not None and plan.attributes["dockrion.step.input_keys"] == (
        "question",
    )


def test_a_failed_run_exports_status_error_with_exception_events(
    engine: Engine, run_id: str
) -> None:
    publish_agent_run(engine, run_id, fail=True)
    out = exported(engine, run_id)
    root, tool = out["invoke_agent travel"], out["execute_tool search_flights"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "search_flights: airline API timed out"
    assert root.attributes is not None and root.attributes["error.type"] == "TimeoutError"
    assert [e.name for e in root.events] == ["progress", "checkpoint", "exception"]
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes is not None and tool.attributes["error.type"] == "TimeoutError"
    exc = next(e for e in tool.events if e.name == "exception")
    assert exc.attributes is not None
    assert exc.attributes["exception.message"] == "airline API timed out"
    assert out["plan"].status.status_code is StatusCode.UNSET


def test_a_step_with_no_start_event_starts_its_duration_before_its_end(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    ctx.sync_emit_step("retrieve", duration_ms=250, input_keys=["query"])  # plain Dockrion step
    ctx.sync_emit_complete()
    events = stored(engine, run_id)
    step = exported(engine, run_id)["retrieve"]
    end = at(events, "step")
    assert (step.start_time, step.end_time) == (end - 250_000_000, end)


def test_an_unfinished_run_is_refused_unless_partial(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id, agent_name="slow")
    ctx.sync_emit_started()
    tracker = StepTracker(ctx)
    tracker.start("s1", "still_running")
    with pytest.raises(RunNotFinishedError, match=rf"run {run_id} has not finished .*--partial"):
        exported(engine, run_id)
    out = exported(engine, run_id, partial=True)
    root, step = out["invoke_agent slow"], out["still_running"]
    assert root.attributes is not None and root.attributes["dockrion.run.open"] is True
    assert root.status.status_code is StatusCode.UNSET
    assert step.attributes is not None and step.attributes["dockrion.step.open"] is True


def test_export_errors_say_what_to_do(engine: Engine, run_id: str) -> None:
    with pytest.raises(NoEventsError, match=rf"no events for run {run_id}"):
        exported(engine, run_id)
    with pytest.raises(ValueError, match=r"no OpenTelemetry tracer provider to export to"):
        export_run(run_id, trace.NoOpTracerProvider(), engine=engine)


def test_hostile_parent_ids_neither_loop_nor_overflow_the_stack(
    engine: Engine, run_id: str
) -> None:
    engine.use({"backend": "memory", "max_events_per_run": 10_000})
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    events: list[BaseEvent] = [
        StepEvent(run_id=run_id, node_name="a", step_id="a", parent_id="b"),
        StepEvent(run_id=run_id, node_name="b", step_id="b", parent_id="a"),
        StepEvent(run_id=run_id, node_name="self", step_id="self", parent_id="self"),
    ]
    events += [
        StepEvent(run_id=run_id, node_name=f"d{i}", step_id=f"d{i}", parent_id=f"d{i + 1}")
        for i in range(3000)
    ]
    engine.run(engine.bus.publish_many(run_id, events))
    ctx.sync_emit_complete()
    out = exported(engine, run_id)
    assert len(out) == 1 + 3 + 3000
    assert out["self"].parent is not None  # hung on the root
    deepest = out["d0"]
    assert deepest.parent is not None and deepest.parent.span_id == out["d1"].context.span_id


def test_spans_in_then_out_keep_names_parents_and_times(engine: Engine, spans: Spans) -> None:
    with spans.tracer.start_as_current_span("agent") as root:
        with spans.tracer.start_as_current_span(
            "chat m", attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2}
        ):
            pass
    run_id = run_of(root)
    out = exported(engine, run_id)
    original = spans.finished("chat m")
    chat = out["chat m"] if "chat m" in out else out["chat"]
    assert chat.attributes is not None and chat.attributes["gen_ai.usage.input_tokens"] == 2
    agent = out["agent"]
    assert chat.parent is not None and chat.parent.span_id == agent.context.span_id
    assert out["invoke_agent agent"].context.span_id == agent.parent.span_id  # type: ignore[union-attr]
    assert original.start_time is not None and chat.start_time is not None
    assert (
        abs(chat.start_time - original.start_time)
        < timedelta(milliseconds=50) / timedelta(microseconds=1) * 1000
    )


def test_exporting_through_a_provider_that_reads_spans_makes_no_second_run(
    engine: Engine, spans: Spans, run_id: str
) -> None:
    publish_agent_run(engine, run_id)
    before = {r.run_id for r in engine.run(engine.bus.list_runs())}
    export_run(run_id, spans.provider, engine=engine)
    after = {r.run_id for r in engine.run(engine.bus.list_runs())}
    assert after == before
    assert len(spans.memory.get_finished_spans()) == 4


def test_custom_events_in_a_run_do_not_break_the_export(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    engine.run(
        engine.bus.publish(
            run_id,
            CustomEvent(run_id=run_id, type="custom:tool_call", tool="x", args={"a": [1, {}]}),
        )
    )
    ctx.sync_emit_cancelled("user stopped it")
    root = exported(engine, run_id)["invoke_agent"]
    assert root.status.status_code is StatusCode.UNSET
    assert [e.name for e in root.events] == ["custom:tool_call", "cancelled"]
    assert root.attributes is not None and root.attributes["dockrion.run.status"] == "cancelled"


# -- spans out over OTLP/HTTP, and the CLI --------------------------------------------------------


class Receiver:
    """A loopback OTLP/HTTP traces receiver: parses each request, answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.headers.append(dict(self.headers))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> dict[str, Any]:
        out = {}
        for request in self.requests:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out[span.name] = span
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), environ=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def redis_run(redis_url: str, run_id: str) -> Iterator[tuple[Engine, str]]:
    """An engine on Redis, so the CLI (another backend connection) sees the runs it writes."""
    eng = Engine(name="otel-redis-engine")
    eng.use({"backend": "redis", "redis": {"url": redis_url}})
    try:
        yield eng, redis_url
    finally:
        eng.shutdown()
        redis_cleanup(redis_url, run_id)


def attr(span: Any, name: str) -> Any:
    for kv in span.attributes:
        if kv.key == name:
            which = kv.value.WhichOneof("value")
            return getattr(kv.value, which)
    raise KeyError(name)


def test_export_run_sends_the_run_over_otlp_http_from_python(
    engine: Engine, receiver: Receiver, run_id: str
) -> None:
    """The README's Python form: a provider with the SDK's own OTLP/HTTP exporter behind a
    batch processor; ``export_run`` flushes it, so the spans have arrived when it returns."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    events = publish_agent_run(engine, run_id, fail=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "travel-agent"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url(), timeout=10))
    )
    try:
        result = export_run(run_id, provider, engine=engine)
        assert receiver.requests, "export_run returned before its spans were sent"
        got = receiver.spans()
    finally:
        provider.shutdown()
    assert set(got) == {
        "invoke_agent travel",
        "plan",
        "chat gpt-4o-mini",
        "execute_tool search_flights",
    }
    assert result.span_count == 4
    root, plan = got["invoke_agent travel"], got["plan"]
    chat, tool = got["chat gpt-4o-mini"], got["execute_tool search_flights"]
    assert root.trace_id.hex() == result.trace_id
    assert {s.trace_id for s in got.values()} == {root.trace_id}
    assert root.parent_span_id == b""
    assert plan.parent_span_id == root.span_id
    assert chat.parent_span_id == tool.parent_span_id == plan.span_id
    assert attr(root, "dockrion.run.id") == run_id
    assert (attr(chat, "gen_ai.usage.input_tokens"), attr(chat, "gen_ai.usage.output_tokens")) == (
        11,
        4,
    )
    assert attr(chat, "gen_ai.response.time_to_first_chunk") == 0.12
    assert attr(tool, "gen_ai.tool.name") == "search_flights"
    # the failed run and its failed tool arrive as errors (status code 2: ERROR)
    assert root.status.code == tool.status.code == 2 and chat.status.code != 2
    assert chat.start_time_unix_nano == at(events, STEP_START_TYPE, step_id="llm-1")
    assert root.end_time_unix_nano == at(events, "error")
    resource = receiver.requests[0].resource_spans[0].resource
    assert attr(resource, "service.name") == "travel-agent"


@pytest.mark.redis
def test_cli_export_sends_the_run_over_otlp_http(
    redis_run: tuple[Engine, str], receiver: Receiver, run_id: str
) -> None:
    engine, redis_url = redis_run
    events = publish_agent_run(engine, run_id)
    code, out, err = cli("export", run_id, "--otlp", receiver.url(), "--url", redis_url)
    assert code == 0, err
    assert len(receiver.requests) == 1  # one request for the whole run
    got = receiver.spans()
    assert set(got) == {
        "invoke_agent travel",
        "plan",
        "chat gpt-4o-mini",
        "execute_tool search_flights",
    }
    root, plan, chat = got["invoke_agent travel"], got["plan"], got["chat gpt-4o-mini"]
    assert root.parent_span_id == b""
    assert plan.parent_span_id == root.span_id and chat.parent_span_id == plan.span_id
    assert attr(root, "dockrion.run.id") == run_id
    assert attr(root, "gen_ai.operation.name") == "invoke_agent"
    assert attr(chat, "gen_ai.usage.output_tokens") == 4
    assert chat.start_time_unix_nano == at(events, STEP_START_TYPE, step_id="llm-1")
    assert root.end_time_unix_nano == at(events, "complete")
    resource = receiver.requests[0].resource_spans[0].resource
    assert attr(resource, "service.name") == "travel"
    trace_hex = root.trace_id.hex()
    assert out.strip() == (
        f"exported run {run_id} (complete) as 4 spans, trace {trace_hex}, to {receiver.url()}"
    )


@pytest.mark.redis
def test_cli_export_masks_the_otlp_url_in_every_message(
    redis_run: tuple[Engine, str],
    receiver: Receiver,
    run_id: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    engine, redis_url = redis_run
    publish_agent_run(engine, run_id)
    secret_url = receiver.url("exporter:s3cr3t-pw@")
    code, out, err = cli("export", run_id, "--otlp", secret_url, "--url", redis_url)
    assert code == 0, err
    assert "s3cr3t-pw" not in out + err and "exporter:***@127.0.0.1" in out
    sent = receiver.headers[0]["Authorization"]
    assert base64.b64decode(sent.split()[1]) == b"exporter:s3cr3t-pw"  # used, never shown
    receiver.status = 400  # the receiver refuses
    code, out, err = cli(
        "export",
        run_id,
        "--otlp",
        secret_url + "?token=t0ps3cret",
        "--url",
        redis_url,
        "--timeout",
        "2",
    )
    assert code == 2
    assert err.startswith("dockrion-nb: error: could not export run ") and err.count("\n") == 1
    assert "the receiver answered HTTP 400 (Bad Request)" in err
    printed = out + err + "".join(capfd.readouterr())
    assert "s3cr3t-pw" not in printed and "t0ps3cret" not in printed


@pytest.mark.redis
def test_cli_export_exit_codes(
    redis_run: tuple[Engine, str], receiver: Receiver, run_id: str
) -> None:
    engine, redis_url = redis_run
    url = receiver.url()
    code, _, err = cli("export", run_id, "--otlp", url, "--url", redis_url)
    assert code == 2 and f"no events for run {run_id}" in err
    ctx = engine.context(run_id, agent_name="slow")
    ctx.sync_emit_started()
    ctx.sync_flush()  # a sync emit returns once handed off; the CLI reads what is stored
    code, _, err = cli("export", run_id, "--otlp", url, "--url", redis_url)
    assert code == 2 and "has not finished" in err and "--partial" in err
    code, out, err = cli("export", run_id, "--otlp", url, "--url", redis_url, "--partial")
    assert code == 0, err
    assert "(open)" in out
    code, _, err = cli("export", run_id, "--otlp", "ftp://127.0.0.1/v1/traces", "--url", redis_url)
    assert code == 2 and "--otlp must be an http:// or https:// URL" in err
    closed = f"http://127.0.0.1:{free_closed_port()}/v1/traces"
    code, _, err = cli(
        "export", run_id, "--otlp", closed, "--url", redis_url, "--partial", "--timeout", "1"
    )
    assert code == 2 and f"could not export run {run_id} to {closed}: " in err
    assert "check that an OTLP/HTTP receiver listens there" in err or "refused" in err


def free_closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_url_with_no_path_gets_the_traces_path(receiver: Receiver) -> None:
    from dockrion_nb.cli import otlp_endpoint

    assert otlp_endpoint(f"http://127.0.0.1:{receiver.port}") == receiver.url()
    assert otlp_endpoint(f"http://127.0.0.1:{receiver.port}/") == receiver.url()
    assert otlp_endpoint("https://otel.example/api/public/otel/v1/traces") == (
        "https://otel.example/api/public/otel/v1/traces"
    )


# -- imports --------------------------------------------------------------------------------------


def test_neither_the_package_nor_the_cli_imports_opentelemetry() -> None:
    code = (
        "import sys, dockrion_nb, dockrion_nb.cli, dockrion_nb.integrations;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'openinference', 'langchain_core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_exporter_that_ran_out_of_time_is_not_an_http_answer() -> None:
    """The exporter logs "code: None" when its retries leave a connect timeout of 0; that is
    no answer from the receiver (CI once printed "the receiver answered HTTP None")."""
    refused = (
        "Transient error HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
        "(Caused by NewConnectionError('...: Failed to establish a new connection: [Errno 111] "
        "Connection refused')) encountered while exporting span batch, retrying in 0.97s."
    )
    out_of_time = (
        "Failed to export span batch code: None, reason: Attempted to set connect timeout to "
        "0.0, but the timeout cannot be set to a value less than or equal to 0."
    )
    reason = failure_reason([refused, out_of_time], 1.0)
    assert reason == "Connection refused (gave up after 1 s of retries)"
    assert "answered" not in failure_reason([out_of_time], 1.0)
    answered = "Failed to export span batch code: 503, reason: Service Unavailable"
    assert failure_reason([refused, answered], 1.0) == (
        "the receiver answered HTTP 503 (Service Unavailable)"
    )
