"""LangChain and LangGraph runs traced by their callbacks: steps, tokens, usage, errors, live.

Everything runs the real langchain-core and langgraph, offline: langchain-core's fake chat
models, a scripted chat model built on ``BaseChatModel`` (it streams and reports usage the way
provider clients do), real ``StateGraph`` graphs, tools, ``ToolNode`` and a retriever.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import (
    RunnableConfig,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.tools import tool
from langchain_core.tracers import context as lc_tracer_context
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import interrupt
from pydantic import Field

import dockrion_nb
from dockrion_nb.engine import Engine, get_engine, reset_engine
from dockrion_nb.events import BaseEvent
from dockrion_nb.integrations import langchain as lc_integration
from dockrion_nb.integrations.langchain import StreamCallbackHandler, cell_scope
from dockrion_nb.integrations.steps import LLM_USAGE_TYPE, STEP_START_TYPE

LIVE_TIMEOUT = 10.0
"""How long a gated node waits for the view to see earlier events before the test fails."""

USAGE = {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15}


# -- the pieces of a real agent --------------------------------------------------------------


class ScriptedChatModel(BaseChatModel):
    """A chat model that streams ``pieces`` and reports usage, model name and finish reason on
    its last chunk, as the OpenAI and Anthropic integrations do; ``fail_with`` raises instead."""

    pieces: list[str]
    model_name: str = "scripted-1"
    usage: dict[str, int] = Field(default_factory=lambda: dict(USAGE))
    fail_with: str | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        message = AIMessage(
            content="".join(self.pieces),
            usage_metadata=self.usage,  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        for piece in self.pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=self.usage,  # type: ignore[arg-type]
                response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
            )
        )


class Notes(TypedDict, total=False):
    question: str
    answer: str
    weather: str


def gated_graph(gate: threading.Event, *, run_async: bool) -> CompiledStateGraph[Any]:
    """plan -> call_model (a streaming model) -> call_tool (a tool that waits for ``gate``)."""
    model = ScriptedChatModel(pieces=["It ", "is ", "sunny."])

    def plan(state: Notes) -> Notes:
        return {"question": state["question"].strip()}

    def call_model(state: Notes) -> Notes:
        return {"answer": str(model.invoke(state["question"]).content)}

    async def acall_model(state: Notes) -> Notes:
        return {"answer": str((await model.ainvoke(state["question"])).content)}

    @tool
    def wait_for_view(city: str) -> str:
        """Blocks until the live view has seen the earlier events."""
        if not gate.wait(LIVE_TIMEOUT):
            raise TimeoutError("the view did not see the model's events while the run ran")
        return f"sunny in {city}"

    @tool
    async def await_view(city: str) -> str:
        """Awaits until the live view has seen the earlier events."""
        if not await asyncio.to_thread(gate.wait, LIVE_TIMEOUT):
            raise TimeoutError("the view did not see the model's events while the run ran")
        return f"sunny in {city}"

    def call_tool(state: Notes) -> Notes:
        return {"weather": wait_for_view.invoke({"city": "Paris"})}

    async def acall_tool(state: Notes) -> Notes:
        return {"weather": await await_view.ainvoke({"city": "Paris"})}

    graph = StateGraph(Notes)
    graph.add_node("plan", plan)
    graph.add_node("call_model", acall_model if run_async else call_model)  # type: ignore[arg-type]
    graph.add_node("call_tool", acall_tool if run_async else call_tool)  # type: ignore[arg-type]
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "call_model")
    graph.add_edge("call_model", "call_tool")
    graph.add_edge("call_tool", END)
    return graph.compile()


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def agent_graph() -> CompiledStateGraph[Any]:
    """A tool-calling agent: prepare -> agent (chat model) <-> tools (ToolNode)."""
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}],
                    usage_metadata={"input_tokens": 9, "output_tokens": 3, "total_tokens": 12},
                    response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
                ),
                AIMessage(
                    content="It is sunny in Paris.",
                    usage_metadata={"input_tokens": 20, "output_tokens": 6, "total_tokens": 26},
                    response_metadata={"model_name": "fake-1", "finish_reason": "stop"},
                ),
            ]
        )
    )

    def prepare(state: MessagesState) -> dict[str, Any]:
        return {"messages": [HumanMessage(str(state["messages"][-1].content).strip())]}

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def should_continue(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("prepare", prepare)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "agent")
    graph.add_conditional_edges("agent", should_continue, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile()


def failing_graph() -> CompiledStateGraph[Any]:
    """plan -> check_input, which calls a tool that raises."""

    @tool
    def validate(text: str) -> str:
        """Refuses every input."""
        raise ValueError(f"cannot use {text!r}")

    def plan(state: Notes) -> Notes:
        return {"question": state["question"]}

    def check_input(state: Notes) -> Notes:
        return {"answer": validate.invoke({"text": state["question"]})}

    graph = StateGraph(Notes)
    graph.add_node("plan", plan)
    graph.add_node("check_input", check_input)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "check_input")
    graph.add_edge("check_input", END)
    return graph.compile()


def chain(responses: list[str]) -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "Say {what}")])
    return prompt | FakeListChatModel(responses=responses) | StrOutputParser()


# -- reading the run back --------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="langchain-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def stored(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    return [e.model_dump() for e in engine.run(engine.bus.get_events(run_id))]


def outline(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each event as (type, what it is about): a step's name, a token's text, ..."""
    rows = []
    for e in events:
        if e["type"] in (STEP_START_TYPE, "step"):
            rows.append((e["type"], e["node_name"]))
        elif e["type"] == "token":
            rows.append(("token", e["content"]))
        elif e["type"] == LLM_USAGE_TYPE:
            rows.append((LLM_USAGE_TYPE, str(e["model"])))
        else:
            rows.append((e["type"], ""))
    return rows


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    """Sequences strictly increase; each step starts once, ends once, after its parent started
    and before its parent ended; tokens and usage belong to a step that is open."""
    seqs = [e["sequence"] for e in events]
    assert seqs == sorted(set(seqs)), f"sequences not strictly increasing: {seqs}"
    assert len({e["id"] for e in events}) == len(events)
    open_steps: set[str] = set()
    started: set[str] = set()
    ended: set[str] = set()
    for e in events:
        if e["type"] == STEP_START_TYPE:
            assert e["step_id"] not in started, f"step {e['node_name']} started twice"
            assert e["parent_id"] is None or e["parent_id"] in open_steps
            started.add(e["step_id"])
            open_steps.add(e["step_id"])
        elif e["type"] == "step":
            assert e["step_id"] in open_steps, f"step {e['node_name']} ended twice or unstarted"
            assert e["parent_id"] is None or e["parent_id"] in open_steps
            open_steps.discard(e["step_id"])
            ended.add(e["step_id"])
        elif e["type"] in ("token", LLM_USAGE_TYPE):
            assert e["step_id"] in open_steps
    assert started == ended, f"steps never ended: {started - ended}"


def steps_named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "step" and e["node_name"] == name]


class LiveView:
    """Follows a run on the engine's bus, on the engine loop, as the widget does, and opens
    ``gate`` the moment ``ready(events so far)`` holds."""

    def __init__(
        self,
        engine: Engine,
        run_id: str,
        ready: Callable[[list[dict[str, Any]]], bool],
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.seen_at_gate: list[dict[str, Any]] = []
        self._ready = ready
        self._future = engine.submit(self._follow(engine, run_id))

    async def _follow(self, engine: Engine, run_id: str) -> None:
        stream: AsyncIterator[BaseEvent] = engine.bus.subscribe(run_id)
        async for event in stream:
            self.events.append(event.model_dump())
            if not self.gate.is_set() and self._ready(self.events):
                self.seen_at_gate = list(self.events)
                self.gate.set()
            if event.is_terminal:
                return

    def finish(self) -> list[dict[str, Any]]:
        self._future.result(LIVE_TIMEOUT)
        return self.events


def model_done_and_tool_running(events: list[dict[str, Any]]) -> bool:
    text = "".join(e["content"] for e in events if e["type"] == "token")
    return (
        text == "It is sunny."
        and any(e["type"] == LLM_USAGE_TYPE for e in events)
        and any(
            e["type"] == STEP_START_TYPE and e["node_name"] in ("wait_for_view", "await_view")
            for e in events
        )
    )


# -- a LangGraph agent ---------------------------------------------------------------------------


def test_an_agent_graph_writes_nodes_model_calls_and_tools_as_a_tree(
    engine: Engine, run_id: str
) -> None:
    handler = StreamCallbackHandler(engine.context(run_id))
    result = agent_graph().invoke(
        {"messages": [HumanMessage(" weather in Paris? ")]}, config={"callbacks": [handler]}
    )
    assert result["messages"][-1].content == "It is sunny in Paris."
    events = stored(engine, run_id)
    assert outline(events) == [
        (STEP_START_TYPE, "LangGraph"),
        (STEP_START_TYPE, "prepare"),
        ("step", "prepare"),
        (STEP_START_TYPE, "agent"),
        (STEP_START_TYPE, "GenericFakeChatModel"),
        ("token", ""),  # a tool call: no text, the finish reason only
        (LLM_USAGE_TYPE, "fake-1"),
        ("step", "GenericFakeChatModel"),
        (STEP_START_TYPE, "should_continue"),
        ("step", "should_continue"),
        ("step", "agent"),
        (STEP_START_TYPE, "tools"),
        (STEP_START_TYPE, "get_weather"),
        ("step", "get_weather"),
        ("step", "tools"),
        (STEP_START_TYPE, "agent"),
        (STEP_START_TYPE, "GenericFakeChatModel"),
        ("token", "It is sunny in Paris."),  # invoked, not streamed: the text in one token
        (LLM_USAGE_TYPE, "fake-1"),
        ("step", "GenericFakeChatModel"),
        (STEP_START_TYPE, "should_continue"),
        ("step", "should_continue"),
        ("step", "agent"),
        ("step", "LangGraph"),
    ]
    assert_well_formed(events)
    by_id = {e["step_id"]: e for e in events if e["type"] == "step"}
    graph = steps_named(events, "LangGraph")[0]
    assert (graph["kind"], graph["parent_id"], graph["status"]) == ("graph", None, "ok")
    for node in ("prepare", "agent", "tools"):
        for step in steps_named(events, node):
            assert step["kind"] == "node" and step["parent_id"] == graph["step_id"]
            assert step["input_keys"] == ["messages"] and step["output_keys"] == ["messages"]
            assert isinstance(step["duration_ms"], int)
    tool_step = steps_named(events, "get_weather")[0]
    assert tool_step["kind"] == "tool"
    assert by_id[tool_step["parent_id"]]["node_name"] == "tools"
    assert tool_step["input_keys"] == ["city"]
    assert tool_step["attributes"]["input"] == {"city": "Paris"}
    assert tool_step["attributes"]["output"] == "sunny in Paris"
    llm_steps = steps_named(events, "GenericFakeChatModel")
    assert [by_id[s["parent_id"]]["node_name"] for s in llm_steps] == ["agent", "agent"]
    assert [s["attributes"]["finish_reason"] for s in llm_steps] == ["tool_calls", "stop"]
    assert all(s["kind"] == "llm" and s["attributes"]["model"] == "fake-1" for s in llm_steps)
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["finish_reason"] for t in tokens] == ["tool_calls", "stop"]
    assert [t["step_id"] for t in tokens] == [s["step_id"] for s in llm_steps]
    usage = [e for e in events if e["type"] == LLM_USAGE_TYPE]
    assert [(u["input_tokens"], u["output_tokens"], u["total_tokens"]) for u in usage] == [
        (9, 3, 12),
        (20, 6, 26),
    ]
    assert usage[0]["provider"] == "genericfakechatmodel"
    assert all(isinstance(u["duration_ms"], int) for u in usage)


@pytest.mark.parametrize("method", ["invoke", "stream"])
def test_a_sync_graph_reaches_the_view_while_it_runs_in_order_and_once(
    engine: Engine, run_id: str, method: str
) -> None:
    view = LiveView(engine, run_id, model_done_and_tool_running)
    graph = gated_graph(view.gate, run_async=False)
    with dockrion_nb.trace(run_id, engine=engine):
        config: Any = {"callbacks": [StreamCallbackHandler()]}  # the trace's run is current
        if method == "invoke":
            out = graph.invoke({"question": " weather? "}, config=config)
        else:
            # stream_mode="messages" makes LangGraph stream the model's tokens; its nodes
            # run in worker threads
            chunks = list(graph.stream({"question": " weather? "}, config, stream_mode="messages"))
            assert chunks, "LangGraph streamed no messages"
    if method == "invoke":
        assert out == {
            "question": "weather?",
            "answer": "It is sunny.",
            "weather": "sunny in Paris",
        }
    events = view.finish()
    assert view.gate.is_set()
    # the tool was still waiting: its step and the graph's had not ended when the view saw
    # the model's tokens, usage and the tool's start
    at_gate = outline(view.seen_at_gate)
    assert ("step", "wait_for_view") not in at_gate and ("step", "LangGraph") not in at_gate
    assert events == stored(engine, run_id)
    assert_well_formed(events)
    tokens = [e for e in events if e["type"] == "token"]
    if method == "invoke":
        assert [(t["content"], t["finish_reason"]) for t in tokens] == [("It is sunny.", "stop")]
    else:
        assert [(t["content"], t["finish_reason"]) for t in tokens] == [
            ("It ", None),
            ("is ", None),
            ("sunny.", None),
            ("", "stop"),
        ]
    llm = steps_named(events, "ScriptedChatModel")[0]
    assert llm["attributes"]["model"] == "scripted-1"
    usage = next(e for e in events if e["type"] == LLM_USAGE_TYPE)
    if method == "stream":
        assert isinstance(usage["time_to_first_token_ms"], int)
    assert events[0]["type"] == "started" and events[-1]["type"] == "complete"
    assert events[-1]["metadata"]["usage"] == {**USAGE, "calls": 1, "models": ["scripted-1"]}


@pytest.mark.parametrize("method", ["ainvoke", "astream"])
async def test_an_async_graph_reaches_the_view_while_it_runs_in_order_and_once(
    engine: Engine, run_id: str, method: str
) -> None:
    view = LiveView(engine, run_id, model_done_and_tool_running)
    graph = gated_graph(view.gate, run_async=True)
    async with dockrion_nb.trace(run_id, engine=engine) as ctx:
        config: Any = {"callbacks": [StreamCallbackHandler(ctx)]}
        if method == "ainvoke":
            out = await graph.ainvoke({"question": "weather?"}, config=config)
            assert out["weather"] == "sunny in Paris"
        else:
            async for _ in graph.astream({"question": "weather?"}, config, stream_mode="messages"):
                pass
    events = view.finish()
    at_gate = outline(view.seen_at_gate)
    assert (STEP_START_TYPE, "await_view") in at_gate
    assert ("step", "await_view") not in at_gate and ("step", "LangGraph") not in at_gate
    assert events == stored(engine, run_id)
    assert_well_formed(events)
    streamed = [t["content"] for t in events if t["type"] == "token"]
    assert streamed == (["It is sunny."] if method == "ainvoke" else ["It ", "is ", "sunny.", ""])
    assert [n for t, n in outline(events) if t == "step"] == [
        "plan",
        "ScriptedChatModel",
        "call_model",
        "await_view",
        "call_tool",
        "LangGraph",
    ]
    assert events[-1]["type"] == "complete"
    assert events[-1]["metadata"]["usage"]["total_tokens"] == USAGE["total_tokens"]


def test_parallel_nodes_in_worker_threads_keep_their_tokens_apart(
    engine: Engine, run_id: str
) -> None:
    """LangGraph runs nodes of one step in a thread pool: each token names its LLM call."""
    models = {
        "left": ScriptedChatModel(pieces=["l1 ", "l2 ", "l3"], model_name="left-m"),
        "right": ScriptedChatModel(pieces=["r1 ", "r2 ", "r3"], model_name="right-m"),
    }

    class Both(TypedDict, total=False):
        question: str
        left: str
        right: str

    def node(side: str) -> Callable[[Both], Both]:
        def run(state: Both) -> Both:
            return {side: str(models[side].invoke(state["question"]).content)}  # type: ignore[misc]

        run.__name__ = side
        return run

    graph = StateGraph(Both)
    graph.add_node("left", node("left"))
    graph.add_node("right", node("right"))
    graph.add_edge(START, "left")
    graph.add_edge(START, "right")
    handler = StreamCallbackHandler(engine.context(run_id))
    list(
        graph.compile().stream(
            {"question": "go"}, config={"callbacks": [handler]}, stream_mode="messages"
        )
    )
    events = stored(engine, run_id)
    assert_well_formed(events)
    llm_of = {
        e["step_id"]: e["attributes"]["model"]
        for e in events
        if e["type"] == "step" and e["kind"] == "llm"
    }
    text: dict[str, str] = {}
    for e in events:
        if e["type"] == "token":
            text[llm_of[e["step_id"]]] = text.get(llm_of[e["step_id"]], "") + e["content"]
    assert text == {"left-m": "l1 l2 l3", "right-m": "r1 r2 r3"}
    assert sorted(handler.ctx.usage["models"]) == ["left-m", "right-m"]


def test_plumbing_is_not_shown_and_steps_keep_their_nearest_shown_parent(
    engine: Engine, run_id: str
) -> None:
    def helper(x: Any) -> Any:
        return x

    def work(state: Notes, config: RunnableConfig) -> Notes:
        (RunnableLambda(lambda x: x) | RunnableLambda(helper)).invoke(1, config)
        RunnableParallel(same=RunnablePassthrough(), kept=RunnableLambda(helper)).invoke(1, config)
        RunnableLambda(helper).with_config(run_name="named_step").invoke(1, config)
        return {"answer": "ok"}

    inner = StateGraph(Notes)
    inner.add_node("inner", lambda state: {"weather": "rain"})
    inner.add_edge(START, "inner")
    graph = StateGraph(Notes)
    graph.add_node("work", work)
    graph.add_node("sub", inner.compile())
    graph.add_edge(START, "work")
    graph.add_edge("work", "sub")
    handler = StreamCallbackHandler(engine.context(run_id))
    graph.compile().invoke({"question": "q"}, config={"callbacks": [handler]})
    events = stored(engine, run_id)
    assert_well_formed(events)
    names = {e["step_id"]: e["node_name"] for e in events if e["type"] == "step"}
    assert [(e["node_name"], names.get(e["parent_id"])) for e in events if e["type"] == "step"] == [
        ("helper", "work"),  # from inside a RunnableSequence of a lambda and helper
        ("helper", "work"),  # from inside a RunnableParallel
        ("named_step", "work"),
        ("work", "LangGraph"),
        ("inner", "sub"),  # the subgraph's own LangGraph wrapper is folded into its node
        ("sub", "LangGraph"),
        ("LangGraph", None),
    ]


def test_a_failing_tool_ends_an_untraced_run_with_an_error_naming_it(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_started(agent_name="checker")
    with pytest.raises(ValueError, match="cannot use 'x'"):
        failing_graph().invoke(
            {"question": "x"}, config={"callbacks": [StreamCallbackHandler(ctx)]}
        )
    events = stored(engine, run_id)
    assert_well_formed(events)
    ends = [(e["node_name"], e["status"]) for e in events if e["type"] == "step"]
    assert ends == [
        ("plan", "ok"),
        ("validate", "error"),
        ("check_input", "error"),
        ("LangGraph", "error"),
    ]
    assert steps_named(events, "validate")[0]["error"] == "cannot use 'x'"
    error = events[-1]
    assert [e["type"] for e in events].count("error") == 1
    assert error["type"] == "error" and error["code"] == "ValueError"
    assert error["error"] == "validate: cannot use 'x'"
    assert error["details"]["node"] == "validate" and error["details"]["source"] == "langchain"


def test_a_failing_node_in_a_traced_run_is_named_by_the_trace(engine: Engine, run_id: str) -> None:
    def broken(state: Notes) -> Notes:
        raise KeyError("profile")

    graph = StateGraph(Notes)
    graph.add_node("load_profile", broken)
    graph.add_edge(START, "load_profile")
    with (
        pytest.raises(KeyError),
        dockrion_nb.trace(run_id, engine=engine, integrations=["langchain"]),
    ):
        graph.compile().invoke({"question": "q"})
    events = stored(engine, run_id)
    assert [e["type"] for e in events].count("error") == 1
    assert steps_named(events, "load_profile")[0]["status"] == "error"
    error = events[-1]
    assert error["type"] == "error"
    assert error["error"] == "load_profile: 'profile'"
    assert error["details"]["node"] == "load_profile"
    assert error["code"] == "KeyError"


def test_a_tool_error_the_agent_handled_is_shown_but_not_blamed_for_a_later_failure(
    engine: Engine, run_id: str
) -> None:
    @tool
    def flaky(city: str) -> str:
        """Always fails."""
        raise ValueError("service down")

    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": "flaky", "args": {"city": "Paris"}, "id": "c1"}],
                ),
                AIMessage(content="Sorry, no weather today."),
            ]
        )
    )

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([flaky], handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    with (
        pytest.raises(KeyError),
        dockrion_nb.trace(run_id, engine=engine, integrations=["langchain"]),
    ):
        out = graph.compile().invoke({"messages": [("human", "weather?")]})
        assert out["messages"][-1].content == "Sorry, no weather today."
        raise KeyError("late bug")
    events = stored(engine, run_id)
    assert_well_formed(events)
    assert steps_named(events, "flaky")[0]["status"] == "error"
    assert steps_named(events, "tools")[0]["status"] == "ok"
    error = events[-1]
    assert error["type"] == "error" and "node" not in error["details"]
    assert error["error"] == "'late bug'"  # not "flaky: 'late bug'"


async def test_a_failing_model_in_an_async_chain_names_the_model(
    engine: Engine, run_id: str
) -> None:
    broken = ScriptedChatModel(pieces=["x"], fail_with="rate limited")
    pipeline = ChatPromptTemplate.from_messages([("human", "{q}")]) | broken | StrOutputParser()
    ctx = engine.context(run_id)
    with pytest.raises(RuntimeError, match="rate limited"):
        async for _ in pipeline.astream(
            {"q": "hi"}, config={"callbacks": [StreamCallbackHandler(ctx)]}
        ):
            pass
    events = stored(engine, run_id)
    assert_well_formed(events)
    assert steps_named(events, "ScriptedChatModel")[0]["status"] == "error"
    assert events[-1]["type"] == "error"
    assert events[-1]["error"] == "ScriptedChatModel: rate limited"
    assert not [e for e in events if e["type"] == LLM_USAGE_TYPE]


def test_a_langgraph_interrupt_is_not_an_error(engine: Engine, run_id: str) -> None:
    def ask(state: Notes) -> Notes:
        return {"answer": str(interrupt("which city?"))}

    graph = StateGraph(Notes)
    graph.add_node("ask_user", ask)
    graph.add_edge(START, "ask_user")
    compiled = graph.compile(checkpointer=InMemorySaver())
    handler = StreamCallbackHandler(engine.context(run_id))
    out = compiled.invoke(
        {"question": "q"}, config={"callbacks": [handler], "configurable": {"thread_id": run_id}}
    )
    assert "__interrupt__" in out
    events = stored(engine, run_id)
    assert_well_formed(events)
    ask_step = steps_named(events, "ask_user")[0]
    assert ask_step["status"] == "ok" and ask_step["attributes"]["control"] == "GraphInterrupt"
    assert steps_named(events, "LangGraph")[0]["status"] == "ok"
    assert "error" not in [e["type"] for e in events]


# -- chains ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_chain_writes_prompt_model_and_parser_and_its_tokens_once(
    engine: Engine, run_id: str, method: str
) -> None:
    pipeline = chain(["hi there"])
    config: Any = {"callbacks": [StreamCallbackHandler(engine.context(run_id))]}
    inputs = {"what": "hi"}
    if method == "invoke":
        out = pipeline.invoke(inputs, config)
    elif method == "ainvoke":
        out = await pipeline.ainvoke(inputs, config)
    elif method == "stream":
        out = "".join(pipeline.stream(inputs, config))
    else:
        out = "".join([piece async for piece in pipeline.astream(inputs, config)])
    assert out == "hi there"
    events = stored(engine, run_id)
    assert_well_formed(events)
    steps = [(e["node_name"], e["kind"]) for e in events if e["type"] == STEP_START_TYPE]
    assert steps == [
        ("RunnableSequence", "chain"),  # the outermost run is always a step
        ("ChatPromptTemplate", "prompt"),
        ("FakeListChatModel", "llm"),
        ("StrOutputParser", "parser"),
    ]
    tokens = [e["content"] for e in events if e["type"] == "token"]
    assert "".join(tokens) == "hi there"
    assert tokens == (["hi there"] if method.endswith("invoke") else list("hi there"))
    assert [e["type"] for e in events].count(LLM_USAGE_TYPE) == 1


def test_a_model_tagged_nostream_writes_its_step_but_no_tokens(engine: Engine, run_id: str) -> None:
    model = ScriptedChatModel(pieces=["secret ", "plan"]).with_config(tags=["nostream"])
    handler = StreamCallbackHandler(engine.context(run_id))
    assert "".join(str(c.content) for c in model.stream("hi", config={"callbacks": [handler]})) == (
        "secret plan"
    )
    events = stored(engine, run_id)
    assert [e["type"] for e in events] == [STEP_START_TYPE, LLM_USAGE_TYPE, "step"]


def test_a_retriever_is_a_step_with_its_document_count(engine: Engine, run_id: str) -> None:
    class Shelf(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content=f"{query} {i}") for i in range(3)]

    Shelf().invoke("paris", config={"callbacks": [StreamCallbackHandler(engine.context(run_id))]})
    start, end = stored(engine, run_id)
    assert (start["node_name"], start["kind"], start["attributes"]) == (
        "Shelf",
        "retriever",
        {"query": "paris"},
    )
    assert end["status"] == "ok" and end["attributes"] == {"query": "paris", "documents": 3}


def test_a_handler_needs_a_run() -> None:
    with pytest.raises(ValueError, match="langchain has no run to write to"):
        StreamCallbackHandler()


# -- everything a block runs ------------------------------------------------------------------


def test_cell_scope_traces_calls_without_callbacks_and_only_inside_the_block(
    engine: Engine, run_id: str
) -> None:
    hooks_before = len(lc_tracer_context._configure_hooks)
    ctx = engine.context(run_id)
    for _ in range(2):
        with cell_scope(ctx) as handler:
            assert chain(["one"]).invoke({"what": "one"}) == "one"
            # a handler passed by hand inside the block is not doubled by the block's
            chain(["two"]).invoke({"what": "two"}, config={"callbacks": [handler]})
    chain(["after"]).invoke({"what": "after"})  # outside the block: not traced
    tokens = [e["content"] for e in stored(engine, run_id) if e["type"] == "token"]
    assert tokens == ["one", "two", "one", "two"]
    # the hook is registered once per process, not once per block
    assert len(lc_tracer_context._configure_hooks) - hooks_before <= 1
    ours = [h for h in lc_tracer_context._configure_hooks if h[0] is lc_integration._cell_handler]
    assert len(ours) == 1


@pytest.fixture(scope="module")
def ip(ipython: Any) -> Iterator[Any]:
    shell = ipython
    shell.run_line_magic("load_ext", "dockrion_nb")
    yield shell
    shell.run_line_magic("unload_ext", "dockrion_nb")


@pytest.fixture
def notebook(ip: Any) -> Iterator[Any]:
    """A fresh engine (memory backend) and the graphs a notebook would have defined."""
    reset_engine()
    ip.user_ns["agent_graph"] = agent_graph
    ip.user_ns["failing_graph"] = failing_graph
    ip.user_ns["chain"] = chain
    yield ip
    ip.user_ns.pop("ctx", None)
    reset_engine()


def published(run_id: str) -> list[dict[str, Any]]:
    engine = get_engine()
    return [e.model_dump() for e in engine.run(engine.bus.get_events(run_id))]


def test_publish_langchain_traces_a_cell_whose_code_has_no_callbacks(
    notebook: Any, run_id: str
) -> None:
    notebook.run_cell_magic(
        "publish",
        f"{run_id} --langchain",
        'out = agent_graph().invoke({"messages": [("human", "weather?")]})\n'
        'out["messages"][-1].content',
    )
    events = published(run_id)
    assert_well_formed(events)
    assert events[0]["type"] == "started"
    assert [e["node_name"] for e in events if e["type"] == "step" and e["kind"] == "node"] == [
        "prepare",
        "agent",
        "tools",
        "agent",
    ]
    complete = events[-1]
    assert complete["type"] == "complete"
    assert complete["output"] == {"result": "It is sunny in Paris."}
    assert complete["metadata"]["usage"] == {
        "calls": 2,
        "input_tokens": 29,
        "output_tokens": 9,
        "total_tokens": 38,
        "models": ["fake-1"],
    }


def test_publish_langchain_traces_top_level_await(notebook: Any, run_id: str) -> None:
    notebook.run_cell_magic(
        "publish",
        f"{run_id} --langchain",
        'pieces = [p async for p in chain(["hey you"]).astream({"what": "hey"})]\n"".join(pieces)',
    )
    events = published(run_id)
    assert_well_formed(events)
    assert "".join(e["content"] for e in events if e["type"] == "token") == "hey you"
    assert events[-1]["type"] == "complete" and events[-1]["output"] == {"result": "hey you"}


def test_publish_langchain_error_names_the_failing_step(notebook: Any, run_id: str) -> None:
    result = notebook.run_cell(
        f"%%publish {run_id} --langchain\nfailing_graph().invoke({{'question': 'x'}})"
    )
    assert isinstance(result.error_in_exec, ValueError)
    events = published(run_id)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0] is events[-1]
    assert errors[0]["error"] == "validate: cannot use 'x'"
    assert errors[0]["details"]["node"] == "validate"


@pytest.mark.parametrize(
    "call", ['graph.invoke(question)["weather"]', '(await graph.ainvoke(question))["weather"]']
)
def test_publish_langchain_cell_reaches_a_follower_while_it_runs(
    notebook: Any, run_id: str, call: str
) -> None:
    """The cell's graph has no callbacks of its own; its tool waits until a follower of the
    run has seen the model's tokens, its usage and the tool's start, so the cell ends (rather
    than raising TimeoutError) only if ``--langchain`` published them while it ran."""
    engine = get_engine()
    view = LiveView(engine, run_id, model_done_and_tool_running)
    notebook.user_ns["graph"] = gated_graph(view.gate, run_async=call.startswith("(await"))
    notebook.user_ns["question"] = {"question": " weather? "}

    assert notebook.run_cell_magic("publish", f"{run_id} --langchain", call) == "sunny in Paris"

    events = view.finish()
    assert view.gate.is_set()
    at_gate = outline(view.seen_at_gate)
    assert at_gate[0] == ("started", "")
    assert not {("step", "wait_for_view"), ("step", "await_view"), ("complete", "")} & set(at_gate)
    assert events == published(run_id)
    assert_well_formed(events)
    assert events[-1]["type"] == "complete"
    assert events[-1]["output"] == {"result": "sunny in Paris"}


def test_publish_without_langchain_traces_no_langchain_calls(notebook: Any, run_id: str) -> None:
    notebook.run_cell_magic("publish", run_id, 'chain(["quiet"]).invoke({"what": "q"})')
    assert [e["type"] for e in published(run_id)] == ["started", "complete"]


def test_importing_dockrion_nb_and_its_magics_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dockrion_nb, dockrion_nb.magics, dockrion_nb.api, dockrion_nb.integrations;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'langchain_core', 'langgraph',"
        " 'langsmith'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
