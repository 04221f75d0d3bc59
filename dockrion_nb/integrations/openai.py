"""The OpenAI SDK's clients feeding the live view: ``instrument_openai(client)``.

Traced endpoints, sync (``OpenAI``) and async (``AsyncOpenAI``, and subclasses such as
``AzureOpenAI``):

- ``chat.completions.create`` (streamed or not) and the ``chat.completions.stream(...)``
  helper: the text of choice 0 as tokens, its ``finish_reason``, the model, and the usage
  (streamed usage needs ``stream_options={"include_usage": True}``, as with the API itself);
- ``responses.create`` (streamed or not) and ``responses.stream(...)``: every
  ``response.output_text.delta`` as a token, the model and usage of ``response.completed``;
  a ``response.failed`` or ``error`` event ends the step with status ``error``.

Each call is a step of kind ``llm`` named ``openai.chat.completions`` / ``openai.responses``.
Other endpoints (embeddings, files, ...) pass through untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, TypeVar

import openai

from ..context import StreamContext
from .llm_call import LlmCall
from .llm_client import (
    Sdk,
    client_scope,
    instrument_client,
    request_owner,
    uninstrument_client,
)

ClientT = TypeVar("ClientT")


def _endpoint(options: Any) -> str | None:
    if str(getattr(options, "method", "")).lower() != "post":
        return None
    path = str(getattr(options, "url", "")).split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat.completions"
    if path.endswith("/responses"):
        return "responses"
    return None


def _chat_usage(usage: Any, call: LlmCall) -> None:
    if usage is None:
        return
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    call.set_usage(
        input_tokens=getattr(usage, "prompt_tokens", None),
        output_tokens=getattr(usage, "completion_tokens", None),
        total_tokens=getattr(usage, "total_tokens", None),
        cached_input_tokens=getattr(prompt, "cached_tokens", None),
        reasoning_tokens=getattr(completion, "reasoning_tokens", None),
    )


class ChatCompletionsReader:
    """``ChatCompletionChunk`` items, or a whole ``ChatCompletion``."""

    def item(self, chunk: Any, call: LlmCall) -> None:
        call.set_model(getattr(chunk, "model", None))
        _chat_usage(getattr(chunk, "usage", None), call)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            for tool_call in getattr(delta, "tool_calls", None) or ():
                call.add_tool_call(getattr(getattr(tool_call, "function", None), "name", None))
            content = getattr(delta, "content", None)
            call.text(
                content if isinstance(content, str) else "",
                getattr(choice, "finish_reason", None),
            )

    def result(self, completion: Any, call: LlmCall) -> None:
        call.set_model(getattr(completion, "model", None))
        _chat_usage(getattr(completion, "usage", None), call)
        choices = getattr(completion, "choices", None) or ()
        if choices:
            call.finish_reason = getattr(choices[0], "finish_reason", None)
            message = getattr(choices[0], "message", None)
            for tool_call in getattr(message, "tool_calls", None) or ():
                call.add_tool_call(getattr(getattr(tool_call, "function", None), "name", None))


class ResponsesReader:
    """Responses API stream events, or a whole ``Response``."""

    def item(self, event: Any, call: LlmCall) -> None:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                call.text(delta)
        elif kind == "response.output_item.added":
            item = getattr(event, "item", None)
            if getattr(item, "type", None) == "function_call":
                call.add_tool_call(getattr(item, "name", None))
        elif kind == "error":
            code = getattr(event, "code", None) or "error"
            call.failure = f"{code}: {getattr(event, 'message', None)}"
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            call.set_model(getattr(getattr(event, "response", None), "model", None))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = getattr(event, "response", None)
            self._final(response, call)
            if call.finish_reason:
                call.text("", call.finish_reason)

    def result(self, response: Any, call: LlmCall) -> None:
        self._final(response, call)
        for item in getattr(response, "output", None) or ():
            if getattr(item, "type", None) == "function_call":
                call.add_tool_call(getattr(item, "name", None))

    def _final(self, response: Any, call: LlmCall) -> None:
        call.set_model(getattr(response, "model", None))
        usage = getattr(response, "usage", None)
        if usage is not None:
            call.set_usage(
                input_tokens=getattr(usage, "input_tokens", None),
                output_tokens=getattr(usage, "output_tokens", None),
                total_tokens=getattr(usage, "total_tokens", None),
                cached_input_tokens=getattr(
                    getattr(usage, "input_tokens_details", None), "cached_tokens", None
                ),
                reasoning_tokens=getattr(
                    getattr(usage, "output_tokens_details", None), "reasoning_tokens", None
                ),
            )
        status = getattr(response, "status", None)
        incomplete = getattr(getattr(response, "incomplete_details", None), "reason", None)
        reason = incomplete if status == "incomplete" and incomplete else status
        if isinstance(reason, str):
            call.finish_reason = reason
        if status == "failed":
            error = getattr(response, "error", None)
            message = getattr(error, "message", None) or "the response failed"
            code = getattr(error, "code", None)
            call.failure = f"{code}: {message}" if code else str(message)


def _reader(endpoint: str) -> Any:
    return ChatCompletionsReader() if endpoint == "chat.completions" else ResponsesReader()


SDK = Sdk(
    provider="openai",
    sync_client=request_owner(openai.OpenAI),
    async_client=request_owner(openai.AsyncOpenAI),
    stream_types=(openai.Stream, openai.AsyncStream),
    endpoint=_endpoint,
    reader=_reader,
    scope=contextvars.ContextVar("dockrion_nb_openai_scope", default=None),
)


def instrument_openai(client: ClientT, ctx: StreamContext | None = None) -> ClientT:
    """Trace ``client``'s chat completions and responses; returns the same client.

    With ``ctx=None`` each call goes to the run current where it is made (``%%publish``,
    ``trace()``) and a call outside any run passes through untouched; a ``ctx`` pins the
    client to that run. Instrumenting again changes only the pinned ctx (no double events);
    ``uninstrument_openai(client)`` undoes it. Copies from ``client.with_options(...)`` are
    instrumented alike.
    """
    return instrument_client(client, SDK, ctx, "instrument_openai")


def uninstrument_openai(client: Any) -> bool:
    """Stop tracing ``client``; False if it was not instrumented."""
    return uninstrument_client(client)


@contextlib.contextmanager
def cell_scope(ctx: StreamContext) -> Iterator[None]:
    """Trace every OpenAI client's calls made in this block (this thread or task) into ``ctx``."""
    with client_scope(SDK, ctx):
        yield


__all__ = [
    "SDK",
    "ChatCompletionsReader",
    "ResponsesReader",
    "cell_scope",
    "instrument_openai",
    "uninstrument_openai",
]
