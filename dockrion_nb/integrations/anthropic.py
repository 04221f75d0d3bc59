"""The Anthropic SDK's clients feeding the live view: ``instrument_anthropic(client)``.

Traced, sync (``Anthropic``) and async (``AsyncAnthropic``, and the other clients built on
the same base): ``messages.create`` (streamed or not, ``beta.messages`` too) and the
``messages.stream(...)`` helper. Each ``text_delta`` is a token as it arrives;
``message_start`` gives the model and input tokens, ``message_delta`` the stop reason and
output tokens; an ``error`` event in the stream fails the step (the SDK raises it). Each call
is a step of kind ``llm`` named ``anthropic.messages``; other endpoints pass through.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, TypeVar

import anthropic

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
    return "messages" if path.endswith("/v1/messages") else None


def _usage(usage: Any, call: LlmCall) -> None:
    if usage is None:
        return
    call.set_usage(
        input_tokens=getattr(usage, "input_tokens", None),
        output_tokens=getattr(usage, "output_tokens", None),
        cache_creation_input_tokens=getattr(usage, "cache_creation_input_tokens", None),
        cache_read_input_tokens=getattr(usage, "cache_read_input_tokens", None),
    )


class MessagesReader:
    """Raw message stream events, or a whole ``Message``."""

    def item(self, event: Any, call: LlmCall) -> None:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            if getattr(delta, "type", None) == "text_delta":
                text = getattr(delta, "text", None)
                if isinstance(text, str):
                    call.text(text)
        elif kind == "content_block_start":
            block = getattr(event, "content_block", None)
            if getattr(block, "type", None) in ("tool_use", "server_tool_use"):
                call.add_tool_call(getattr(block, "name", None))
            elif getattr(block, "type", None) == "text":
                text = getattr(block, "text", None)
                if isinstance(text, str) and text:
                    call.text(text)
        elif kind == "message_start":
            message = getattr(event, "message", None)
            call.set_model(getattr(message, "model", None))
            _usage(getattr(message, "usage", None), call)
        elif kind == "message_delta":
            # message_delta's usage counts are cumulative for the whole message.
            _usage(getattr(event, "usage", None), call)
            reason = getattr(getattr(event, "delta", None), "stop_reason", None)
            if isinstance(reason, str):
                call.text("", reason)

    def result(self, message: Any, call: LlmCall) -> None:
        call.set_model(getattr(message, "model", None))
        _usage(getattr(message, "usage", None), call)
        reason = getattr(message, "stop_reason", None)
        if isinstance(reason, str):
            call.finish_reason = reason
        for block in getattr(message, "content", None) or ():
            if getattr(block, "type", None) in ("tool_use", "server_tool_use"):
                call.add_tool_call(getattr(block, "name", None))


SDK = Sdk(
    provider="anthropic",
    sync_client=request_owner(anthropic.Anthropic),
    async_client=request_owner(anthropic.AsyncAnthropic),
    stream_types=(anthropic.Stream, anthropic.AsyncStream),
    endpoint=_endpoint,
    reader=lambda endpoint: MessagesReader(),
    scope=contextvars.ContextVar("dockrion_nb_anthropic_scope", default=None),
)


def instrument_anthropic(client: ClientT, ctx: StreamContext | None = None) -> ClientT:
    """Trace ``client``'s messages calls; returns the same client.

    With ``ctx=None`` each call goes to the run current where it is made (``%%publish``,
    ``trace()``) and a call outside any run passes through untouched; a ``ctx`` pins the
    client to that run. Instrumenting again changes only the pinned ctx (no double events);
    ``uninstrument_anthropic(client)`` undoes it. Copies from ``client.with_options(...)``
    are instrumented alike.
    """
    return instrument_client(client, SDK, ctx, "instrument_anthropic")


def uninstrument_anthropic(client: Any) -> bool:
    """Stop tracing ``client``; False if it was not instrumented."""
    return uninstrument_client(client)


@contextlib.contextmanager
def cell_scope(ctx: StreamContext) -> Iterator[None]:
    """Trace every Anthropic client's calls made in this block (this thread or task) into
    ``ctx``."""
    with client_scope(SDK, ctx):
        yield


__all__ = [
    "SDK",
    "MessagesReader",
    "cell_scope",
    "instrument_anthropic",
    "uninstrument_anthropic",
]
