"""The OpenAI and Anthropic SDKs traced with no hand-written emits.

The real SDK clients (sync and async) talk to a loopback server of the test's own that
streams the providers' documented SSE formats. The server holds each next chunk until a
subscriber of the run has seen what the previous chunk carried, so these tests pass only if
tokens are published while the SDK call is still reading its stream.
"""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from sse_server import (
    Chunk,
    Reply,
    Script,
    SseServer,
    anthropic_events,
    anthropic_message,
    openai_chat_chunks,
    openai_chat_completion,
    openai_response,
    openai_response_events,
    sse,
)

import dockrion_nb
from dockrion_nb import integrations
from dockrion_nb.context import StreamContext
from dockrion_nb.engine import Engine, get_engine, reset_engine
from dockrion_nb.events import BaseEvent
from dockrion_nb.integrations import instrument as door
from dockrion_nb.integrations.anthropic import SDK as ANTHROPIC_SDK
from dockrion_nb.integrations.anthropic import instrument_anthropic
from dockrion_nb.integrations.openai import SDK as OPENAI_SDK
from dockrion_nb.integrations.openai import instrument_openai, uninstrument_openai
from dockrion_nb.integrations.steps import LLM_USAGE_TYPE, STEP_START_TYPE

GPT = "gpt-test-1"
CLAUDE = "claude-test-1"
USER = [{"role": "user", "content": "hi"}]


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="llm-clients-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


@pytest.fixture
def server() -> Iterator[SseServer]:
    srv = SseServer()
    try:
        yield srv
    finally:
        srv.close()


class Collector:
    """A live subscriber of one run: what arrived, as it arrived."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.events: list[BaseEvent] = []
        self._cond = threading.Condition()

        async def follow() -> None:
            async for event in engine.bus.subscribe(run_id):
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()

        self._task = engine.submit(follow())

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.type == kind)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def gated(
        self, script: Script, *, calls_before: int = 0, tokens_before: int = 0
    ) -> list[Chunk]:
        """The script's chunks, each held until the steps and tokens before it were seen.
        ``calls_before``/``tokens_before``: what calls scripted earlier for the same run, not
        made yet, will have published before this one starts."""
        steps = self.count(STEP_START_TYPE) + 1 + calls_before
        tokens = self.count("token") + tokens_before
        chunks = []
        for data, produces in script:

            def gate(timeout: float, need: int = tokens) -> bool:
                return self.wait_until(
                    lambda: self.count(STEP_START_TYPE) >= steps and self.count("token") >= need,
                    timeout,
                )

            chunks.append(Chunk(data, gate))
            tokens += produces
        return chunks

    def close(self) -> None:
        self._task.cancel()


@pytest.fixture
def live(engine: Engine, run_id: str) -> Iterator[Collector]:
    collector = Collector(engine, run_id)
    try:
        yield collector
    finally:
        collector.close()


def stored(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    return [e.model_dump() for e in engine.run(engine.bus.get_events(run_id))]


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each event reduced to what the tests compare: type and its telling field."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if e["type"] == "token":
            out.append(("token", e["content"], e["finish_reason"]))
        elif e["type"] in (STEP_START_TYPE, "step"):
            out.append((e["type"], e["node_name"]))
        else:
            out.append((e["type"],))
    return out


def one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def openai_client(server: SseServer, ctx: StreamContext | None = None) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
    return instrument_openai(client, ctx)


def anthropic_client(server: SseServer, ctx: StreamContext | None = None) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
    return instrument_anthropic(client, ctx)


def streamed_call(name: str, tokens: list[str], finish: str) -> list[tuple[Any, ...]]:
    return [
        (STEP_START_TYPE, name),
        *[("token", t, None) for t in tokens],
        ("token", "", finish),
        (LLM_USAGE_TYPE,),
        ("step", name),
    ]


# -- OpenAI: chat completions -------------------------------------------------------------------


def test_openai_chat_stream_tokens_arrive_while_the_call_is_still_reading(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["Hel", "lo", " world"]
    script = openai_chat_chunks(GPT, tokens, usage={"prompt": 7, "completion": 3})
    server.expect(Reply(chunks=live.gated(script)))
    client = openai_client(server, engine.context(run_id))

    stream = client.chat.completions.create(
        model=GPT, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert server.late == [], "a chunk waited for a token that was not published live"
    assert type(stream) is openai.Stream
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert server.requests[0].body["stream_options"] == {"include_usage": True}
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("openai.chat.completions", tokens, "stop")
    usage = one(events, LLM_USAGE_TYPE)
    assert (usage["provider"], usage["model"]) == ("openai", GPT)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 3, 10)
    assert isinstance(usage["time_to_first_token_ms"], int)
    assert usage["time_to_first_token_ms"] <= usage["duration_ms"]
    step = one(events, "step")
    assert (step["kind"], step["status"]) == ("llm", "ok")
    assert step["attributes"]["finish_reason"] == "stop"
    assert step["step_id"] == usage["step_id"] == one(events, STEP_START_TYPE)["step_id"]


async def test_openai_async_chat_stream_is_live_in_order_once(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["a", "b", "c", "d"]
    server.expect(Reply(chunks=live.gated(openai_chat_chunks(GPT, tokens, finish="length"))))
    client = instrument_openai(
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0),
        engine.context(run_id),
    )

    stream = await client.chat.completions.create(model=GPT, messages=USER, stream=True)
    texts = [c.choices[0].delta.content async for c in stream if c.choices]

    assert server.late == []
    assert type(stream) is openai.AsyncStream
    assert texts == ["", *tokens, None]
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("openai.chat.completions", tokens, "length")
    usage = one(events, LLM_USAGE_TYPE)
    assert usage["model"] == GPT and usage["input_tokens"] is None  # no include_usage asked
    assert isinstance(usage["time_to_first_token_ms"], int)


def test_openai_chat_stream_helper_is_one_live_step(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["x", "y"]
    script = openai_chat_chunks(GPT, tokens, usage={"prompt": 2, "completion": 2})
    server.expect(Reply(chunks=live.gated(script)))
    client = openai_client(server, engine.context(run_id))

    with client.chat.completions.stream(
        model=GPT, messages=USER, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta" and e.delta]
        final = stream.get_final_completion()

    assert server.late == []
    assert deltas == tokens and final.choices[0].message.content == "xy"
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("openai.chat.completions", tokens, "stop")
    assert one(events, LLM_USAGE_TYPE)["total_tokens"] == 4


# -- OpenAI: the Responses API ------------------------------------------------------------------


def test_openai_responses_stream_is_live_with_usage_from_completed(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["Par", "is"]
    script = openai_response_events(GPT, tokens, {"input": 11, "output": 2})
    server.expect(Reply(chunks=live.gated(script)))
    client = openai_client(server, engine.context(run_id))

    stream = client.responses.create(model=GPT, input="capital of France?", stream=True)
    kinds = [event.type for event in stream]

    assert server.late == []
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("openai.responses", tokens, "completed")
    usage = one(events, LLM_USAGE_TYPE)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (11, 2, 13)
    assert usage["model"] == GPT and isinstance(usage["time_to_first_token_ms"], int)


async def test_openai_async_responses_stream_helper_is_live(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["O", "K", "!"]
    script = openai_response_events(GPT, tokens, {"input": 3, "output": 3})
    server.expect(Reply(chunks=live.gated(script)))
    client = instrument_openai(
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0),
        engine.context(run_id),
    )

    async with client.responses.stream(model=GPT, input="ok?") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()

    assert server.late == []
    assert deltas == tokens and final.output_text == "OK!"
    assert shape(stored(engine, run_id)) == streamed_call("openai.responses", tokens, "completed")


def test_openai_non_streamed_calls_are_one_step_each_with_usage(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    server.expect(
        Reply(json_body=openai_chat_completion(GPT, "Hi there", prompt=5, completion=2)),
        Reply(json_body=openai_response(GPT, "Done", "completed", {"input": 4, "output": 1})),
    )
    client = openai_client(server, engine.context(run_id))

    completion = client.chat.completions.create(model=GPT, messages=USER)
    response = client.responses.create(model=GPT, input="go")

    assert (
        type(completion) is ChatCompletion and completion.choices[0].message.content == "Hi there"
    )
    assert type(response) is Response and response.output_text == "Done"
    events = stored(engine, run_id)
    assert shape(events) == [
        (STEP_START_TYPE, "openai.chat.completions"),
        (LLM_USAGE_TYPE,),
        ("step", "openai.chat.completions"),
        (STEP_START_TYPE, "openai.responses"),
        (LLM_USAGE_TYPE,),
        ("step", "openai.responses"),
    ]
    chat_usage, responses_usage = [e for e in events if e["type"] == LLM_USAGE_TYPE]
    assert (chat_usage["input_tokens"], chat_usage["output_tokens"]) == (5, 2)
    assert (responses_usage["input_tokens"], responses_usage["total_tokens"]) == (4, 5)
    assert chat_usage["time_to_first_token_ms"] is None
    steps = [e for e in events if e["type"] == "step"]
    assert [s["attributes"]["stream"] for s in steps] == [False, False]
    assert steps[0]["attributes"]["finish_reason"] == "stop"


# -- failures -------------------------------------------------------------------------------------


def test_an_http_error_ends_the_step_with_error_and_is_raised_unchanged(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    body = {"error": {"message": "the server broke", "type": "server_error", "code": None}}
    server.expect(Reply(status=500, json_body=body))
    client = openai_client(server, engine.context(run_id))

    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=GPT, messages=USER, stream=True)

    assert raised.value.status_code == 500 and raised.value.body == body["error"]
    events = stored(engine, run_id)
    assert [e["type"] for e in events] == [STEP_START_TYPE, "step", "error"]
    step = events[1]
    assert step["status"] == "error" and "the server broke" in step["error"]
    error = events[2]
    assert error["details"]["node"] == "openai.chat.completions"
    assert error["code"] == "InternalServerError"


def test_a_stream_that_breaks_mid_way_ends_the_step_with_error(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    script = openai_chat_chunks(GPT, ["one", "two", "three"])[:3]  # role, "one", "two"
    server.expect(Reply(chunks=live.gated(script), broken=True))
    client = openai_client(server, engine.context(run_id))

    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model=GPT, messages=USER, stream=True):
            seen.append(chunk.choices[0].delta.content or "")

    assert seen == ["", "one", "two"] and server.late == []
    events = stored(engine, run_id)
    assert shape(events)[:3] == [
        (STEP_START_TYPE, "openai.chat.completions"),
        ("token", "one", None),
        ("token", "two", None),
    ]
    step = one(events, "step")
    assert step["status"] == "error" and step["error"]
    assert events[-1]["type"] == "error"


def test_anthropic_error_event_mid_stream_fails_the_step_and_is_raised(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    script = anthropic_events(CLAUDE, ["Hi"], input_tokens=3, output_tokens=1)[:4]
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    chunks = [Chunk(data) for data, _ in script] + [Chunk(sse(overloaded, event="error"))]
    server.expect(Reply(chunks=chunks))
    client = anthropic_client(server, engine.context(run_id))

    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for _ in client.messages.create(model=CLAUDE, max_tokens=5, messages=USER, stream=True):
            pass

    events = stored(engine, run_id)
    step = one(events, "step")
    assert step["status"] == "error" and "Overloaded" in step["error"]
    usage = one(events, LLM_USAGE_TYPE)  # what was known before the failure is kept
    assert usage["input_tokens"] == 3 and usage["model"] == CLAUDE
    assert [e["content"] for e in events if e["type"] == "token"] == ["Hi"]


async def test_anthropic_async_http_error_ends_the_step_with_error(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    body = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    server.expect(Reply(status=500, json_body=body))
    client = instrument_anthropic(
        anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0),
        engine.context(run_id),
    )

    with pytest.raises(anthropic.InternalServerError):
        await client.messages.create(model=CLAUDE, max_tokens=5, messages=USER)

    events = stored(engine, run_id)
    assert [e["type"] for e in events] == [STEP_START_TYPE, "step", "error"]
    assert events[1]["status"] == "error" and events[2]["details"]["node"] == "anthropic.messages"


# -- streams the user leaves part way -------------------------------------------------------------


def test_closing_a_stream_early_ends_its_step_once(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    script = openai_chat_chunks(GPT, ["first", "second", "third"])
    server.expect(Reply(chunks=[Chunk(data) for data, _ in script]))
    client = openai_client(server, engine.context(run_id))

    with client.chat.completions.create(model=GPT, messages=USER, stream=True) as stream:
        for chunk in stream:
            if chunk.choices[0].delta.content == "first":
                break

    events = stored(engine, run_id)
    assert shape(events) == [
        (STEP_START_TYPE, "openai.chat.completions"),
        ("token", "first", None),
        (LLM_USAGE_TYPE,),
        ("step", "openai.chat.completions"),
    ]
    step = events[-1]
    assert step["status"] == "ok" and step["attributes"]["closed_early"] is True
    del stream
    gc.collect()  # being collected later does not end it a second time
    assert len(stored(engine, run_id)) == 4


def test_a_dropped_stream_ends_its_step_when_collected(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    script = openai_chat_chunks(GPT, ["only", "part"])
    server.expect(Reply(chunks=[Chunk(data) for data, _ in script]))
    client = openai_client(server, engine.context(run_id))

    stream = client.chat.completions.create(model=GPT, messages=USER, stream=True)
    next(stream)
    next(stream)  # "only"
    del stream
    gc.collect()

    assert live.wait_until(lambda: live.count("step") == 1), "the dropped stream's step never ended"
    events = stored(engine, run_id)
    assert shape(events)[:2] == [
        (STEP_START_TYPE, "openai.chat.completions"),
        ("token", "only", None),
    ]
    assert one(events, "step")["attributes"]["closed_early"] is True


# -- instrumenting: idempotent, undoable, following the current run -------------------------------


def test_instrumenting_twice_traces_once_and_uninstrument_restores_the_client(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    ctx = engine.context(run_id)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
    assert instrument_openai(instrument_openai(client, ctx), ctx) is client
    server.expect(
        Reply(json_body=openai_chat_completion(GPT, "a", 1, 1)),
        Reply(json_body=openai_chat_completion(GPT, "b", 1, 1)),
    )

    client.chat.completions.create(model=GPT, messages=USER)
    assert [e["type"] for e in stored(engine, run_id)] == [STEP_START_TYPE, LLM_USAGE_TYPE, "step"]

    assert uninstrument_openai(client) is True
    assert "request" not in vars(client) and uninstrument_openai(client) is False
    client.chat.completions.create(model=GPT, messages=USER)
    assert len(stored(engine, run_id)) == 3


def test_without_ctx_a_client_follows_the_current_run_and_passes_through_outside_any(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    client = openai_client(server)  # ctx=None
    server.expect(
        Reply(json_body=openai_chat_completion(GPT, "outside", 1, 1)),
        Reply(json_body=openai_chat_completion(GPT, "inside", 6, 4)),
        Reply(json_body={"object": "list", "data": []}),
    )

    outside = client.chat.completions.create(model=GPT, messages=USER)
    with dockrion_nb.trace(run_id, engine=engine):
        inside = client.chat.completions.create(model=GPT, messages=USER)
        models = client.models.list()  # not an LLM call: passes through untraced

    assert outside.choices[0].message.content == "outside"
    assert inside.choices[0].message.content == "inside" and list(models) == []
    events = stored(engine, run_id)
    assert [e["type"] for e in events] == [
        "started",
        STEP_START_TYPE,
        LLM_USAGE_TYPE,
        "step",
        "complete",
    ]
    assert events[-1]["metadata"]["usage"] == {
        "calls": 1,
        "input_tokens": 6,
        "output_tokens": 4,
        "total_tokens": 10,
        "models": [GPT],
    }


def test_copies_made_with_with_options_are_traced_to_the_same_run(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    client = openai_client(server, engine.context(run_id))
    server.expect(Reply(json_body=openai_chat_completion(GPT, "copy", 1, 1)))

    client.with_options(timeout=5.0).chat.completions.create(model=GPT, messages=USER)

    assert [e["type"] for e in stored(engine, run_id)] == [STEP_START_TYPE, LLM_USAGE_TYPE, "step"]


def test_instrument_dispatches_on_the_client_and_refuses_anything_else(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    ctx = engine.context(run_id)
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
    assert door.instrument(client, ctx) is client
    server.expect(Reply(json_body=anthropic_message(CLAUDE, "hey", 2, 1)))
    client.messages.create(model=CLAUDE, max_tokens=5, messages=USER)
    assert [e["node_name"] for e in stored(engine, run_id) if e["type"] == "step"] == [
        "anthropic.messages"
    ]
    assert door.uninstrument(client) is True

    with pytest.raises(TypeError, match=r"instrument\(\) takes an OpenAI or Anthropic client"):
        door.instrument(object())
    with pytest.raises(TypeError, match=r"ctx must be a StreamContext or None"):
        instrument_openai(openai.OpenAI(api_key="sk-test"), ctx="run-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"instrument_anthropic takes an anthropic client"):
        instrument_anthropic(openai.OpenAI(api_key="sk-test"))


# -- Anthropic: messages --------------------------------------------------------------------------


def test_anthropic_messages_stream_is_live_with_model_usage_and_stop_reason(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["Bon", "jour"]
    script = anthropic_events(CLAUDE, tokens, input_tokens=9, output_tokens=4)
    server.expect(Reply(chunks=live.gated(script)))
    client = anthropic_client(server, engine.context(run_id))

    stream = client.messages.create(model=CLAUDE, max_tokens=20, messages=USER, stream=True)
    kinds = [event.type for event in stream]

    assert server.late == []
    assert type(stream) is anthropic.Stream
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("anthropic.messages", tokens, "end_turn")
    usage = one(events, LLM_USAGE_TYPE)
    assert (usage["provider"], usage["model"]) == ("anthropic", CLAUDE)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (9, 4, 13)
    assert isinstance(usage["time_to_first_token_ms"], int)
    assert one(events, "step")["attributes"]["finish_reason"] == "end_turn"


async def test_anthropic_async_messages_stream_helper_is_live(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["The", " answer", " is", " 42"]
    script = anthropic_events(
        CLAUDE, tokens, input_tokens=5, output_tokens=4, stop_reason="max_tokens"
    )
    server.expect(Reply(chunks=live.gated(script)))
    client = instrument_anthropic(
        anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0),
        engine.context(run_id),
    )

    async with client.messages.stream(model=CLAUDE, max_tokens=4, messages=USER) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert server.late == []
    assert texts == tokens and final.usage.output_tokens == 4
    assert shape(stored(engine, run_id)) == streamed_call(
        "anthropic.messages", tokens, "max_tokens"
    )


def test_anthropic_sync_messages_stream_helper_is_live(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["Gu", "ten", " Tag"]
    script = anthropic_events(CLAUDE, tokens, input_tokens=6, output_tokens=3)
    server.expect(Reply(chunks=live.gated(script)))
    client = anthropic_client(server, engine.context(run_id))

    with client.messages.stream(model=CLAUDE, max_tokens=8, messages=USER) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert server.late == []
    assert texts == tokens and final.usage.output_tokens == 3
    events = stored(engine, run_id)
    assert shape(events) == streamed_call("anthropic.messages", tokens, "end_turn")
    usage = one(events, LLM_USAGE_TYPE)
    assert (usage["input_tokens"], usage["output_tokens"], usage["model"]) == (6, 3, CLAUDE)


async def test_anthropic_async_create_stream_is_live_in_order_once(
    engine: Engine, run_id: str, server: SseServer, live: Collector
) -> None:
    tokens = ["Ho", "la", "!"]
    script = anthropic_events(
        CLAUDE, tokens, input_tokens=4, output_tokens=3, stop_reason="stop_sequence"
    )
    server.expect(Reply(chunks=live.gated(script)))
    client = instrument_anthropic(
        anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0),
        engine.context(run_id),
    )

    stream = await client.messages.create(model=CLAUDE, max_tokens=8, messages=USER, stream=True)
    kinds = [event.type async for event in stream]

    assert server.late == []
    assert type(stream) is anthropic.AsyncStream
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert live.wait_until(lambda: live.count("step") == 1)
    events = stored(engine, run_id)
    assert [e.model_dump() for e in live.events] == events  # in order, once
    assert shape(events) == streamed_call("anthropic.messages", tokens, "stop_sequence")
    assert isinstance(one(events, LLM_USAGE_TYPE)["time_to_first_token_ms"], int)


def test_anthropic_non_streamed_message_is_one_step_with_usage(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    server.expect(Reply(json_body=anthropic_message(CLAUDE, "Sure.", 12, 3)))
    client = anthropic_client(server, engine.context(run_id))

    message = client.messages.create(model=CLAUDE, max_tokens=20, messages=USER)

    assert type(message) is anthropic.types.Message and message.content[0].text == "Sure."
    events = stored(engine, run_id)
    assert shape(events) == [
        (STEP_START_TYPE, "anthropic.messages"),
        (LLM_USAGE_TYPE,),
        ("step", "anthropic.messages"),
    ]
    usage = one(events, LLM_USAGE_TYPE)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (12, 3, 15)
    assert one(events, "step")["attributes"]["finish_reason"] == "end_turn"


# -- a block's clients: cell_scope and %%publish --instrument -----------------------------------


def test_cell_scope_traces_clients_the_block_creates_in_its_own_thread_only(
    engine: Engine, run_id: str, server: SseServer
) -> None:
    ctx = engine.context(run_id)
    original = vars(OPENAI_SDK.sync_client)["request"]
    server.expect(*[Reply(json_body=openai_chat_completion(GPT, "x", 1, 1)) for _ in range(3)])
    base = server.url + "/v1"

    with door.cell_scope(ctx):
        client = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model=GPT, messages=USER)
        other = threading.Thread(
            target=lambda: client.chat.completions.create(model=GPT, messages=USER)
        )
        other.start()
        other.join(30)

    client.chat.completions.create(model=GPT, messages=USER)  # after the block: untraced
    assert len(server.requests) == 3
    assert [e["type"] for e in stored(engine, run_id)] == [STEP_START_TYPE, LLM_USAGE_TYPE, "step"]
    assert vars(OPENAI_SDK.sync_client)["request"] is original
    assert "request" not in vars(client)


def test_instrument_works_with_only_anthropic_installed(
    engine: Engine, run_id: str, server: SseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "dockrion_nb.integrations.instrument")
    only_anthropic = importlib.import_module("dockrion_nb.integrations.instrument")
    assert only_anthropic.installed_sdks() == ["anthropic"]
    server.expect(Reply(json_body=anthropic_message(CLAUDE, "fine", 1, 1)))

    with integrations.cell_scope(engine.context(run_id), ["instrument"]):
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
        client.messages.create(model=CLAUDE, max_tokens=5, messages=USER)

    assert [e["type"] for e in stored(engine, run_id)] == [STEP_START_TYPE, LLM_USAGE_TYPE, "step"]
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.delitem(sys.modules, "dockrion_nb.integrations.instrument")
    with pytest.raises(
        integrations.IntegrationUnavailableError,
        match=r'need the openai or the anthropic package: pip install "dockrion-nb\[openai\]"',
    ):
        integrations.load_module(*integrations.CELL_SCOPES["instrument"], "--instrument")


@pytest.fixture
def ip(ipython: Any) -> Iterator[Any]:
    shell = ipython
    shell.run_line_magic("load_ext", "dockrion_nb")
    reset_engine()
    try:
        yield shell
    finally:
        shell.user_ns.pop("ctx", None)
        reset_engine()


def test_publish_instrument_traces_the_clients_a_cell_creates(
    ip: Any, run_id: str, server: SseServer
) -> None:
    server.expect(
        Reply(
            chunks=[
                Chunk(d)
                for d, _ in openai_chat_chunks(GPT, ["Hi"], usage={"prompt": 2, "completion": 1})
            ]
        ),
        Reply(
            chunks=[
                Chunk(d)
                for d, _ in anthropic_events(CLAUDE, ["Yo"], input_tokens=3, output_tokens=1)
            ]
        ),
    )
    ip.user_ns["BASE"] = server.url
    cell = """
import openai, anthropic
gpt = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-test", max_retries=0)
text = "".join(c.choices[0].delta.content or "" for c in gpt.chat.completions.create(
    model="gpt-test-1", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True}) if c.choices)
claude = anthropic.AsyncAnthropic(base_url=BASE, api_key="sk-ant-test", max_retries=0)
async with claude.messages.stream(model="claude-test-1", max_tokens=5,
                                  messages=[{"role": "user", "content": "hi"}]) as s:
    text += "".join([t async for t in s.text_stream])
text
"""
    assert ip.run_cell_magic("publish", f"{run_id} --instrument", cell) == "HiYo"

    engine = get_engine()
    events = [e.model_dump() for e in engine.run(engine.bus.get_events(run_id))]
    assert shape(events) == [
        ("started",),
        *streamed_call("openai.chat.completions", ["Hi"], "stop"),
        *streamed_call("anthropic.messages", ["Yo"], "end_turn"),
        ("complete",),
    ]
    assert events[-1]["metadata"]["usage"] == {
        "calls": 2,
        "input_tokens": 5,
        "output_tokens": 2,
        "total_tokens": 7,
        "models": [GPT, CLAUDE],
    }
    assert not hasattr(vars(OPENAI_SDK.sync_client)["request"], "_dockrion_nb_original")
    assert not hasattr(vars(ANTHROPIC_SDK.async_client)["request"], "_dockrion_nb_original")


def test_publish_instrument_cell_streams_reach_a_follower_while_the_cell_runs(
    ip: Any, run_id: str, server: SseServer
) -> None:
    """Each chunk of both streams is held until a follower of the run has seen what the one
    before carried, so the cell ends only if its tokens were published while it ran."""
    live = Collector(get_engine(), run_id)
    try:
        gpt = openai_chat_chunks(GPT, ["Hel", "lo"], usage={"prompt": 2, "completion": 2})
        claude = anthropic_events(CLAUDE, ["Y", "o"], input_tokens=3, output_tokens=2)
        server.expect(
            Reply(chunks=live.gated(gpt)),
            Reply(chunks=live.gated(claude, calls_before=1, tokens_before=sum(n for _, n in gpt))),
        )
        ip.user_ns["BASE"] = server.url
        cell = """
import openai, anthropic
gpt = openai.OpenAI(base_url=BASE + "/v1", api_key="sk-test", max_retries=0)
text = "".join(c.choices[0].delta.content or "" for c in gpt.chat.completions.create(
    model="gpt-test-1", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True}) if c.choices)
claude = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-test", max_retries=0)
with claude.messages.stream(model="claude-test-1", max_tokens=5,
                            messages=[{"role": "user", "content": "hi"}]) as s:
    text += "".join(s.text_stream)
text
"""
        assert ip.run_cell_magic("publish", f"{run_id} --instrument", cell) == "HelloYo"

        assert server.late == []
        assert live.wait_until(lambda: live.count("complete") == 1)
        followed = [e.model_dump() for e in live.events]
        engine = get_engine()
        assert followed == [e.model_dump() for e in engine.run(engine.bus.get_events(run_id))]
        assert shape(followed) == [
            ("started",),
            *streamed_call("openai.chat.completions", ["Hel", "lo"], "stop"),
            *streamed_call("anthropic.messages", ["Y", "o"], "end_turn"),
            ("complete",),
        ]
    finally:
        live.close()


def readme_block(containing: str) -> str:
    """The README's Python code block that contains ``containing``."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"{len(found)} README blocks contain {containing!r}"
    return found[0]


def test_the_readmes_anthropic_example_runs_as_written(
    run_id: str, server: SseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block runs unchanged: ``anthropic.Anthropic()`` finds the loopback server and a key
    in the environment, as it would find the real API; ``msgs`` is the notebook's."""
    block = readme_block("instrument(anthropic.Anthropic())")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    server.expect(
        Reply(
            chunks=[
                Chunk(d)
                for d, _ in anthropic_events(CLAUDE, ["Re", "ady"], input_tokens=2, output_tokens=2)
            ]
        )
    )
    reset_engine()
    namespace: dict[str, Any] = {"anthropic": anthropic, "dockrion_nb": dockrion_nb, "msgs": USER}
    try:
        exec(compile(block, "<README>", "exec"), namespace)
        assert namespace["text"] == "Ready"
        engine = get_engine()
        events = [e.model_dump() for e in engine.run(engine.bus.get_events("run-2"))]
        assert shape(events) == [
            ("started",),
            *streamed_call("anthropic.messages", ["Re", "ady"], "end_turn"),
            ("complete",),
        ]
        assert server.requests[0].body["model"] == "claude-sonnet-4-5"
    finally:
        if "client" in namespace:
            door.uninstrument(namespace["client"])
        reset_engine()


def test_importing_the_instrument_door_imports_no_sdk() -> None:
    code = (
        "import sys, dockrion_nb.integrations.instrument as door;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'openai', 'anthropic'}),"
        " door.installed_sdks())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] ['openai', 'anthropic']"
