"""What tracing a LangChain call with ``StreamCallbackHandler`` costs, per token and per step.

``python -m bench.langchain_overhead [--tokens N] [--steps N] [--redis URL]`` streams a
prompt | model | parser chain whose fake chat model (langchain-core's ``FakeListChatModel``,
no sleep) yields one token per character, and runs a LangGraph graph of plain nodes, each
without a handler and with one writing to a notebook engine (memory backend, and Redis when
``--redis`` is given). It prints the time per token and per node, and the difference the
handler makes: the time each callback waits for its event to reach the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import END, START, StateGraph

from dockrion_nb.engine import Engine
from dockrion_nb.integrations.langchain import StreamCallbackHandler

REPEATS = 3


class Counter(TypedDict):
    n: int


def chain(tokens: int) -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    model = FakeListChatModel(responses=["x" * tokens])
    return prompt | model | StrOutputParser()


def graph(steps: int) -> Any:
    g = StateGraph(Counter)
    names = [f"node_{i}" for i in range(steps)]
    for name in names:
        g.add_node(name, lambda state: {"n": state["n"] + 1})
    g.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)
    g.add_edge(names[-1], END)
    return g.compile()


def best(fn: Callable[[], Any]) -> float:
    """The fastest of a few runs, in seconds."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_unit(
    pipeline: Any, flow: Any, tokens: int, steps: int, config: Callable[[], dict[str, Any]]
) -> dict[str, float]:
    """Microseconds per token (``stream``, ``astream``) and per node (``graph``); ``config``
    gives each call its callbacks."""

    async def astream() -> None:
        async for _ in pipeline.astream({"q": "go"}, config()):
            pass

    return {
        "stream_us_per_token": best(lambda: [*pipeline.stream({"q": "go"}, config())])
        / tokens
        * 1e6,
        "astream_us_per_token": best(lambda: asyncio.run(astream())) / tokens * 1e6,
        "graph_us_per_node": best(lambda: flow.invoke({"n": 0}, config())) / steps * 1e6,
    }


def measure(
    tokens: int = 2000, steps: int = 50, redis_url: str | None = None
) -> dict[str, dict[str, float]]:
    """``per_unit`` figures keyed by ``none`` (no handler), ``memory`` and ``redis``."""
    engines: dict[str, Engine] = {"memory": Engine(name="bench-langchain-memory")}
    if redis_url:
        engines["redis"] = Engine(name="bench-langchain-redis")
        engines["redis"].use({"backend": "redis", "redis": {"url": redis_url}})
    pipeline = chain(tokens)
    flow = graph(steps)
    run_ids: list[tuple[Engine, str]] = []

    def traced(engine: Engine) -> Callable[[], dict[str, Any]]:
        def config() -> dict[str, Any]:
            run_id = f"bench-lc-{uuid.uuid4().hex[:10]}"
            run_ids.append((engine, run_id))
            return {"callbacks": [StreamCallbackHandler(engine.context(run_id))]}

        return config

    try:
        results = {"none": per_unit(pipeline, flow, tokens, steps, dict)}
        for label, engine in engines.items():
            results[label] = per_unit(pipeline, flow, tokens, steps, traced(engine))
    finally:
        for engine, run_id in run_ids:
            engine.run(engine.bus.clear_run(run_id))
        for engine in engines.values():
            engine.shutdown()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.langchain_overhead")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per streamed call")
    parser.add_argument("--steps", type=int, default=50, help="nodes in the graph")
    parser.add_argument("--redis", metavar="URL", help="also measure a Redis backend")
    args = parser.parse_args(argv)
    results = measure(args.tokens, args.steps, args.redis)
    base = results["none"]
    print(f"{args.tokens} tokens, {args.steps} nodes; best of {REPEATS}; microseconds")
    print(f"{'handler':<8} {'stream/token':>13} {'astream/token':>14} {'graph/node':>11}")
    for label, row in results.items():
        cells = []
        for key in ("stream_us_per_token", "astream_us_per_token", "graph_us_per_node"):
            extra = "" if label == "none" else f" (+{row[key] - base[key]:.0f})"
            cells.append(f"{row[key]:.0f}{extra}")
        print(f"{label:<8} {cells[0]:>13} {cells[1]:>14} {cells[2]:>11}")


if __name__ == "__main__":
    main()
