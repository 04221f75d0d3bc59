"""Streaming backends: where a queue-mode ``StreamContext`` hands each event first.

Dockrion's ``dockrion_events.streaming``, name for name. ``LangGraphBackend`` writes events into
the custom stream of the LangGraph run the caller is inside (``get_stream_writer()``), so they
arrive in ``graph.stream(..., stream_mode=[..., "custom"])`` as ``("custom", (type, fields))``
at the moment they happen; ``QueueBackend`` keeps them for an adapter to drain. A backend that
declines an event (``emit`` returns False) leaves it to the context's own queue.

``LangGraphBackend`` differs from Dockrion's in two ways, both so that no event is lost
silently: a custom event is tagged ``custom:<name>`` in the stream (what Dockrion's docstring
and its adapter's filter expect; its code sends the bare name, which that filter drops), and
inside a graph run that did not ask for the ``custom`` stream (``graph.invoke``, or a
``stream_mode`` without ``"custom"``) it declines, so the event is queued instead of vanishing.
LangGraph is imported when first needed, never with ``dockrion_nb``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .events import CUSTOM_PREFIX, EVENT_CLASSES, BaseEvent

log = logging.getLogger("dockrion_nb.streaming")


@runtime_checkable
class StreamingBackend(Protocol):
    """Dockrion's protocol: ``name``, ``emit(event) -> bool`` (False: not taken, queue it),
    ``is_available()``."""

    @property
    def name(self) -> str: ...

    def emit(self, event: BaseEvent) -> bool: ...

    def is_available(self) -> bool: ...


def stream_tag(event: BaseEvent) -> str:
    """The type an event is written under in LangGraph's custom stream: a built-in type as it
    is, anything else ``custom:<name>``."""
    kind = event.type
    if kind in EVENT_CLASSES or kind.startswith(CUSTOM_PREFIX):
        return kind
    return CUSTOM_PREFIX + kind


def _empty(_: Any) -> None:
    pass


def _is_no_op(writer: Callable[[Any], None]) -> bool:
    """Whether ``writer`` is LangGraph's stand-in for a run that does not stream ``custom``
    (a function that does nothing). Unknown shapes count as real writers, as in Dockrion."""
    try:
        from langgraph import config as lg_config
        from langgraph import runtime as lg_runtime
    except ImportError:
        return False
    stand_ins = (
        getattr(lg_config, "_no_op_stream_writer", None),
        getattr(lg_runtime, "_no_op_stream_writer", None),
    )
    if writer in stand_ins:
        return True
    code = getattr(writer, "__code__", None)
    return (
        code is not None
        and code.co_code == _empty.__code__.co_code
        and code.co_consts == _empty.__code__.co_consts
        and not code.co_names
    )


class LangGraphBackend:
    """Events into the custom stream of the LangGraph run the caller is inside."""

    @property
    def name(self) -> str:
        return "langgraph"

    def _get_writer(self) -> Callable[[Any], None] | None:
        """The current run's stream writer, or None outside a graph run (or without langgraph,
        or when the run does not stream ``custom``)."""
        try:
            from langgraph.config import get_stream_writer
        except ImportError:
            return None
        try:
            writer: Callable[[Any], None] = get_stream_writer()
        except Exception:  # outside a runnable context LangGraph raises RuntimeError/KeyError
            return None
        return None if _is_no_op(writer) else writer

    def is_available(self) -> bool:
        return self._get_writer() is not None

    def emit(self, event: BaseEvent) -> bool:
        """Write ``(type, fields)`` (every field but ``type``, as Python values) to the custom
        stream; False when there is no stream to write to or the writer fails."""
        writer = self._get_writer()
        if writer is None:
            return False
        try:
            writer((stream_tag(event), event.model_dump(exclude={"type"})))
        except Exception as exc:
            log.debug("LangGraph stream writer failed (%s); the event is queued instead", exc)
            return False
        return True


class QueueBackend:
    """Keeps events until ``drain()``; always available."""

    def __init__(self) -> None:
        self._queue: deque[BaseEvent] = deque()

    @property
    def name(self) -> str:
        return "queue"

    def emit(self, event: BaseEvent) -> bool:
        self._queue.append(event)
        return True

    def is_available(self) -> bool:
        return True

    def drain(self) -> list[BaseEvent]:
        """The kept events in order; none are kept afterwards."""
        out: list[BaseEvent] = []
        while self._queue:
            try:
                out.append(self._queue.popleft())
            except IndexError:
                break
        return out

    def __len__(self) -> int:
        return len(self._queue)


__all__ = ["LangGraphBackend", "QueueBackend", "StreamingBackend", "stream_tag"]
