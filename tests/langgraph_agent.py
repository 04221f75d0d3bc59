"""A LangGraph agent of plain Python nodes (no model), written as Dockrion users write them:
each node finds the run's context with ``get_current_context()`` and emits through it.

``EVENTS`` names the module the nodes import that from (``dockrion_events`` or ``dockrion_nb``),
so one graph serves both sides of a drop-in test; ``build_graph`` is the factory an entrypoint
such as ``langgraph_agent:build_graph`` names (Dockrion's adapter loads it that way).
"""

from __future__ import annotations

import importlib
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

EVENTS = "dockrion_events"


class State(TypedDict, total=False):
    question: str
    plan: list[str]
    answer: str


def _context() -> Any:
    return importlib.import_module(EVENTS).get_current_context()


def plan(state: State) -> State:
    ctx = _context()
    if ctx:
        ctx.sync_emit_progress("plan", 0.3, "planning")
        ctx.sync_checkpoint("plan", {"steps": 2})
    return {"plan": ["look up", "answer"]}


def answer(state: State) -> State:
    ctx = _context()
    if ctx:
        ctx.sync_emit_token("Hello")
        ctx.sync_emit("fraud_check", {"score": 0.02, "passed": True})
        ctx.sync_emit_progress("answer", 1.0)
    return {"answer": f"Hello, {state['question']}"}


def build_graph() -> Any:
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("answer", answer)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "answer")
    graph.add_edge("answer", END)
    return graph.compile()
