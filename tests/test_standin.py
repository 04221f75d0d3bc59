"""The OpenAI stand-in the tutorials use: the real ``openai`` client reads its replies.

Each test talks to the stand-in with the real SDK (no mock), so the chunks it streams parse as
OpenAI's own types; the last tests check it stays on loopback and stops when told.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from dockrion_nb.engine import Engine
from dockrion_nb.integrations.openai import instrument_openai
from dockrion_nb.standin import OpenAIStandIn, prompt_words

REPLY = "Paris is the capital of France."
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def standin() -> Iterator[OpenAIStandIn]:
    server = OpenAIStandIn(REPLY, delay=0)
    try:
        yield server
    finally:
        server.stop()


def client_of(server: OpenAIStandIn) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)


def test_a_stream_is_the_reply_word_by_word_in_openai_chunks(standin: OpenAIStandIn) -> None:
    chunks = list(
        client_of(standin).chat.completions.create(model="gpt-x", messages=USER, stream=True)
    )
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas == ["", "Paris", " is", " the", " capital", " of", " France.", None]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert {c.model for c in chunks} == {"gpt-x"}
    assert all(c.usage is None for c in chunks)
    assert standin.requests == 1


def test_a_stream_ends_with_usage_when_the_request_asks_for_it(standin: OpenAIStandIn) -> None:
    chunks = list(
        client_of(standin).chat.completions.create(
            model="gpt-x", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 6)
    assert last.usage.total_tokens == 12


def test_a_call_without_stream_gets_one_completion(standin: OpenAIStandIn) -> None:
    completion = client_of(standin).chat.completions.create(model="gpt-y", messages=USER)
    assert type(completion) is ChatCompletion
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-y"
    assert completion.usage is not None and completion.usage.completion_tokens == 6


def test_an_instrumented_client_traces_the_stand_ins_stream_as_tokens(
    standin: OpenAIStandIn, run_id: str
) -> None:
    engine = Engine(name="standin-engine")
    try:
        client = instrument_openai(client_of(standin), engine.context(run_id))
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-x", messages=USER, stream=True)
            if c.choices
        )
        events = engine.run(engine.bus.get_events(run_id))
    finally:
        engine.shutdown()
    assert text == REPLY
    assert "".join(e.model_dump().get("content") or "" for e in events if e.type == "token") == (
        REPLY
    )


def test_other_endpoints_and_bad_bodies_are_openai_errors(standin: OpenAIStandIn) -> None:
    client = client_of(standin)
    with pytest.raises(openai.NotFoundError, match="no such endpoint: POST /v1/embeddings"):
        client.embeddings.create(model="e", input="x")
    with pytest.raises(openai.BadRequestError, match="the body must be a JSON object"):
        client.post("/chat/completions", body=[1, 2], cast_to=object)
    assert standin.requests == 0


def test_prompt_words_counts_text_content_only() -> None:
    body = {"messages": [{"content": "one two"}, {"content": [{"type": "text"}]}, "junk"]}
    assert prompt_words(body) == 2
    assert prompt_words(None) == 0


def test_bad_arguments_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="reply must have at least one word"):
        OpenAIStandIn("  ")
    with pytest.raises(ValueError, match="delay must be 0 or more seconds, not -1"):
        OpenAIStandIn(delay=-1)


def test_it_listens_on_loopback_only_and_stop_closes_the_port() -> None:
    with OpenAIStandIn() as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server._httpd.server_address[0] == "127.0.0.1"
        assert server.running
        port = server.port
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert "stopped" in repr(server)


def test_importing_the_stand_in_imports_no_sdk() -> None:
    code = "import dockrion_nb.standin, sys; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
