"""The vocabulary every integration writes: step start/end, tokens, usage, failures."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

import dockrion_nb
from dockrion_nb import integrations
from dockrion_nb.engine import Engine
from dockrion_nb.events import BaseEvent
from dockrion_nb.integrations.steps import (
    LLM_USAGE_TYPE,
    STEP_START_TYPE,
    StepTracker,
    bounded,
    resolve_context,
)


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="steps-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def stored(engine: Engine, run_id: str) -> list[BaseEvent]:
    return engine.run(engine.bus.get_events(run_id))


def test_a_step_writes_start_then_end_with_duration_and_keys(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    tracker = StepTracker(ctx, source="test")
    tracker.start("s1", "retrieve", kind="tool", inputs={"query": "q", "k": 3})
    assert tracker.is_open("s1")
    tracker.annotate("s1", model="m-1")
    assert tracker.end("s1", outputs={"docs": []}) is not None
    start, end = stored(engine, run_id)
    assert start.type == STEP_START_TYPE
    assert start.model_dump()["node_name"] == "retrieve"
    assert start.model_dump()["input_keys"] == ["query", "k"]
    assert end.type == "step"
    data = end.model_dump()
    assert (data["node_name"], data["step_id"], data["kind"], data["status"]) == (
        "retrieve",
        "s1",
        "tool",
        "ok",
    )
    assert data["input_keys"] == ["query", "k"] and data["output_keys"] == ["docs"]
    assert isinstance(data["duration_ms"], int) and data["attributes"] == {"model": "m-1"}


def test_a_source_that_learns_kind_and_duration_at_the_end_can_give_them(
    engine: Engine, run_id: str
) -> None:
    tracker = StepTracker(engine.context(run_id))
    tracker.start("s1", "GenericFakeChatModel", kind="span")
    assert tracker.end("s1", kind="llm", duration_ms=1234) == 1234
    tracker.end("s2", name="late", kind="tool", duration_ms=5)  # never started here
    first, second = (e.model_dump() for e in stored(engine, run_id) if e.type == "step")
    assert (first["kind"], first["duration_ms"]) == ("llm", 1234)
    assert (second["node_name"], second["kind"], second["duration_ms"]) == ("late", "tool", 5)


def test_step_start_passes_the_filter_as_step_does(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id, events_filter=["token"])
    tracker = StepTracker(ctx)
    tracker.start("s", "node")
    tracker.end("s")
    tracker.token("hi")
    assert [e.type for e in stored(engine, run_id)] == ["token"]
    ctx2 = engine.context(run_id + "b", events_filter=["step"])
    t2 = StepTracker(ctx2)
    t2.start("s", "node")
    t2.end("s")
    assert [e.type for e in stored(engine, run_id + "b")] == [STEP_START_TYPE, "step"]


def test_root_failure_ends_an_untraced_run_naming_the_innermost_step(
    engine: Engine, run_id: str
) -> None:
    tracker = StepTracker(engine.context(run_id))
    tracker.start("root", "graph")
    tracker.start("child", "call_tool", parent_id="root", kind="tool")
    boom = RuntimeError("tool broke")
    tracker.end("child", error=boom)
    tracker.end("root", error=boom)
    events = stored(engine, run_id)
    assert [e.type for e in events] == [STEP_START_TYPE, STEP_START_TYPE, "step", "step", "error"]
    assert events[2].model_dump()["status"] == "error"
    assert events[2].model_dump()["error"] == "tool broke"
    error = events[-1].model_dump()
    assert error["error"] == "call_tool: tool broke"
    assert error["code"] == "RuntimeError"
    assert error["details"]["node"] == "call_tool"


def test_a_traced_run_leaves_the_error_to_the_trace_which_names_the_step(
    engine: Engine, run_id: str
) -> None:
    with pytest.raises(ValueError), dockrion_nb.trace(run_id, engine=engine) as ctx:
        tracker = StepTracker()  # the trace's context is current
        assert tracker.ctx is ctx
        tracker.start("root", "graph")
        tracker.end("root", error=ValueError("bad input"))
        raise ValueError("bad input")
    events = stored(engine, run_id)
    assert [e.type for e in events] == ["started", STEP_START_TYPE, "step", "error"]
    error = events[-1].model_dump()
    assert error["error"] == "graph: bad input" and error["details"]["node"] == "graph"


def test_a_failure_an_enclosing_step_absorbed_is_not_blamed_for_a_later_one(
    engine: Engine, run_id: str
) -> None:
    tracker = StepTracker(engine.context(run_id))
    tracker.start("root", "graph")
    tracker.start("tools", "tools", parent_id="root")
    tracker.start("t1", "get_weather", parent_id="tools", kind="tool")
    tracker.end("t1", error=RuntimeError("timeout"))
    tracker.end("tools")  # the tool error was handled: the node ended well
    tracker.start("n2", "summarize", parent_id="root")
    boom = ValueError("bad state")
    tracker.end("n2", error=boom)
    tracker.end("root", error=boom)
    error = stored(engine, run_id)[-1].model_dump()
    assert error["error"] == "summarize: bad state" and error["details"]["node"] == "summarize"


def test_a_traced_run_failing_after_its_steps_recovered_names_no_step(
    engine: Engine, run_id: str
) -> None:
    with pytest.raises(KeyError), dockrion_nb.trace(run_id, engine=engine):
        tracker = StepTracker()
        tracker.start("root", "graph")
        tracker.start("t1", "lookup", parent_id="root", kind="tool")
        tracker.end("t1", error=RuntimeError("not found"))
        tracker.end("root")
        raise KeyError("later, in the cell's own code")
    error = stored(engine, run_id)[-1].model_dump()
    assert error["type"] == "error" and "node" not in error["details"]
    assert not error["error"].startswith("lookup")


def test_usage_is_published_and_summed_into_the_complete_metadata(
    engine: Engine, run_id: str
) -> None:
    with dockrion_nb.trace(run_id, engine=engine):
        tracker = StepTracker()
        tracker.start("llm1", "chat", kind="llm")
        tracker.token("Hel", step_id="llm1")
        tracker.token("lo", step_id="llm1", finish_reason="stop")
        tracker.usage(step_id="llm1", model="m", input_tokens=5, output_tokens=2)
        tracker.end("llm1")
        tracker.usage(model="m2", input_tokens=1, output_tokens=1, total_tokens=2)
    events = stored(engine, run_id)
    usage = [e.model_dump() for e in events if e.type == LLM_USAGE_TYPE]
    assert usage[0]["total_tokens"] == 7
    assert isinstance(usage[0]["time_to_first_token_ms"], int)
    complete = events[-1]
    assert complete.type == "complete"
    assert complete.model_dump()["metadata"]["usage"] == {
        "calls": 2,
        "input_tokens": 6,
        "output_tokens": 3,
        "total_tokens": 9,
        "models": ["m", "m2"],
    }


def test_a_token_names_the_llm_step_it_belongs_to(engine: Engine, run_id: str) -> None:
    tracker = StepTracker(engine.context(run_id))
    tracker.start("llm-a", "chat_a", kind="llm")
    tracker.start("llm-b", "chat_b", kind="llm")
    tracker.token("A", step_id="llm-a")
    tracker.token("B", step_id="llm-b", finish_reason="stop")
    tracker.token("loose")
    tokens = [e.model_dump() for e in stored(engine, run_id) if e.type == "token"]
    assert [(t["content"], t.get("step_id")) for t in tokens] == [
        ("A", "llm-a"),
        ("B", "llm-b"),
        ("loose", None),
    ]
    assert tokens[1]["finish_reason"] == "stop"


def test_steps_from_many_threads_each_end_once(engine: Engine, run_id: str) -> None:
    tracker = StepTracker(engine.context(run_id))

    def work(i: int) -> None:
        tracker.start(f"s{i}", f"node{i}")
        tracker.end(f"s{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ends = [e.model_dump()["step_id"] for e in stored(engine, run_id) if e.type == "step"]
    assert sorted(ends) == sorted(f"s{i}" for i in range(8))


def test_values_are_made_json_safe_and_bounded() -> None:
    assert bounded({"o": object.__new__(object)})["o"].startswith("<object object")
    big = bounded({"text": "x" * 10_000}, limit=100)
    assert big["truncated"] is True and len(big["preview"]) == 100


def test_no_context_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"has no run to write to: pass a StreamContext"):
        resolve_context(None, "StepTracker")


def test_an_unknown_integration_name_is_refused(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    with (
        pytest.raises(ValueError, match=r"unknown integration 'lang': use one of"),
        integrations.cell_scope(ctx, ["lang"]),
    ):
        pass


def test_a_missing_framework_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "no_such_framework", None)  # import fails
    with pytest.raises(
        integrations.IntegrationUnavailableError,
        match=r"--x needs the 'no_such_framework' package: pip install \"dockrion-nb\[x\]\"",
    ):
        integrations.load_module("no_such_framework", "x", "--x")


def test_importing_the_package_imports_no_framework() -> None:
    import subprocess

    code = (
        "import sys, dockrion_nb, dockrion_nb.integrations, dockrion_nb.integrations.steps;"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'langchain_core', 'langgraph', "
        "'openai', 'anthropic', 'opentelemetry', 'httpx', 'marimo'};"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
