"""Streaming backends with a real LangGraph graph of plain Python nodes (no model): our events
ride the graph's custom stream, and Dockrion's own adapter reads them as it reads its own.

Each test runs the same node code twice, importing from ``dockrion_events`` and then from
``dockrion_nb``, and compares what comes out.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import langgraph_agent as agent
import pytest

pytest.importorskip("langgraph")
MODULES = ["dockrion_events", "dockrion_nb"]
ENVELOPE = {"id", "timestamp"}


@pytest.fixture(params=MODULES)
def events(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The events module under test; the graph's nodes import from it too."""
    agent.EVENTS = request.param
    module = importlib.import_module(request.param)
    yield module
    module.set_current_context(None)
    agent.EVENTS = "dockrion_events"


def queue_context(events: Any, run_id: str, allowed: Any = "all") -> Any:
    return events.StreamContext(
        run_id=run_id,
        queue_mode=True,
        events_filter=events.EventsFilter(allowed),
        streaming_backend=events.LangGraphBackend(),
    )


def custom_items(chunks: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (tag, {k: v for k, v in data.items() if k not in ENVELOPE})
        for mode, (tag, data) in ((m, d) for m, d in chunks if m == "custom")
    ]


def test_events_ride_the_graphs_custom_stream_in_order(events: Any) -> None:
    ctx = queue_context(events, "run-lg")
    events.set_current_context(ctx)
    chunks = list(agent.build_graph().stream({"question": "q"}, stream_mode=["custom", "updates"]))
    modes = [mode for mode, _ in chunks]
    assert modes == ["custom", "custom", "updates", "custom", "custom", "custom", "updates"]
    items = custom_items(chunks)
    custom_tag = "fraud_check" if events.__name__ == "dockrion_events" else "custom:fraud_check"
    assert [tag for tag, _ in items] == ["progress", "checkpoint", "token", custom_tag, "progress"]
    assert [data["sequence"] for _, data in items] == [1, 2, 3, 4, 5]
    assert items[0][1] == {
        "run_id": "run-lg",
        "sequence": 1,
        "step": "plan",
        "progress": 0.3,
        "message": "planning",
    }
    assert items[3][1] == {"run_id": "run-lg", "sequence": 4, "score": 0.02, "passed": True}
    assert chunks[-1] == ("updates", {"answer": {"answer": "Hello, q"}})
    assert ctx.queue_size() == 0  # every event went out through the stream


def test_outside_a_custom_stream_ours_queue_what_dockrions_lose(events: Any) -> None:
    """``graph.invoke`` (or a stream without ``custom``): LangGraph's writer does nothing."""
    ctx = queue_context(events, "run-inv")
    events.set_current_context(ctx)
    graph = agent.build_graph()
    assert graph.invoke({"question": "q"})["answer"] == "Hello, q"
    list(graph.stream({"question": "q"}, stream_mode=["updates"]))
    kept = ctx.drain_queued_events()
    if events.__name__ == "dockrion_events":
        assert kept == []  # the reference reports them emitted; they are gone
    else:
        assert [e.type for e in kept] == [
            "progress",
            "checkpoint",
            "token",
            "fraud_check",
            "progress",
        ] * 2
    assert not events.LangGraphBackend().is_available()  # outside any graph run
    assert events.LangGraphBackend().name == "langgraph"


def test_dockrions_adapter_reads_our_stream_as_its_own(events: Any) -> None:
    """Dockrion's ``LangGraphAdapter.invoke_stream`` drives the graph with a context and a filter
    from the module under test; the nodes find the context it set, whichever import they use."""
    import asyncio

    from dockrion_adapters.langgraph_adapter import LangGraphAdapter

    adapter = LangGraphAdapter()
    adapter.load("langgraph_agent:build_graph")
    allowed = ["token", "step", "progress", "checkpoint", "custom:fraud_check"]
    ctx = queue_context(events, "run-ad", allowed)

    async def run() -> list[dict[str, Any]]:
        stream = adapter.invoke_stream(
            {"question": "q"}, context=ctx, events_filter=ctx.events_filter
        )
        return [item async for item in stream]

    items = asyncio.run(run())
    shape = [(i["type"], i.get("event_type") or i.get("node") or i.get("step")) for i in items]
    expected = [
        ("progress", "plan"),
        ("checkpoint", None),
        ("step", "plan"),
        ("custom", "step"),  # the adapter's own step event, queued and drained
        ("token", None),
        ("custom", "fraud_check"),
        ("progress", "answer"),
        ("step", "answer"),
        ("custom", "step"),
    ]
    if events.__name__ == "dockrion_events":
        # Its backend tags the custom event with the bare name, which its filter then drops.
        expected.remove(("custom", "fraud_check"))
    assert shape == expected
    assert items[0] == {"type": "progress", "step": "plan", "progress": 0.3, "message": "planning"}
    assert items[1] == {"type": "checkpoint", "name": "plan", "data": {"steps": 2}}
    assert {"type": "token", "content": "Hello"} in items
    if events.__name__ == "dockrion_nb":
        fraud = next(i for i in items if i.get("event_type") == "fraud_check")
        assert {k: v for k, v in fraud["data"].items() if k not in ENVELOPE} == {
            "run_id": "run-ad",
            "sequence": 5,  # after the adapter's own step event (3) and the token (4)
            "score": 0.02,
            "passed": True,
        }


def test_langgraph_is_not_imported_by_dockrion_nb() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dockrion_nb\n"
        "dockrion_nb.LangGraphBackend().is_available()\n"  # outside a run: imports it lazily
        "print('langgraph' in {m.split('.')[0] for m in sys.modules})\n"
    )
    fresh = (
        "import sys, dockrion_nb\nprint('langgraph' in {m.split('.')[0] for m in sys.modules})\n"
    )
    before = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True)
    after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert before.stdout.strip() == "False" and after.stdout.strip() == "True"
