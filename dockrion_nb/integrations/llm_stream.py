"""Watching an SDK stream as the user reads it, without changing what the user reads.

The OpenAI and Anthropic SDKs' ``Stream`` / ``AsyncStream`` hand out items from one iterator
(``stream._iterator``) whichever way they are read (``for``, ``next()``, the ``.stream()``
helpers on top). ``watch_stream`` puts a pass-through generator in its place, so the user
gets the same stream object and the same items, and each item reaches the call's reader the
moment the SDK yields it. The step ends once, on the first of:

- the stream is exhausted (``ok``) or raises (``error``, the exception re-raised unchanged);
- the response is closed before the end (``stream.close()``, leaving a ``with`` block, a
  helper's ``close()``): ``ok`` with ``closed_early``;
- the stream is dropped unread or half read: ``ok`` with ``closed_early``, when it is freed.
  An ending found by the cyclic garbage collector is handed to a reaper thread, since the
  collector may run while this thread holds a lock the publish path needs.
"""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .llm_call import LlmCall, Reader, never_raises


class _Pulling:
    """True while the wrapper is asking the SDK for its next item: a response closed then is
    the SDK finishing the stream itself, not the user closing it early."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False


def watch_stream(stream: Any, call: LlmCall, reader: Reader, *, is_async: bool) -> None:
    """Route ``stream``'s items through ``reader`` as they are read, and end ``call`` once."""
    _ensure_reaper()
    inner = stream._iterator
    pulling = _Pulling()
    items = (
        _async_items(inner, call, reader, pulling)
        if is_async
        else _sync_items(inner, call, reader, pulling)
    )
    stream._iterator = items
    _hook_close(stream.response, call, pulling, is_async=is_async)
    collected = weakref.finalize(stream, _end_early, call)
    collected.atexit = False
    call.on_finish(collected.detach)


def _sync_items(
    inner: Iterator[Any], call: LlmCall, reader: Reader, pulling: _Pulling
) -> Iterator[Any]:
    while True:
        pulling.active = True
        try:
            item = next(inner)
        except StopIteration:
            call.finish()
            return
        except BaseException as exc:
            call.finish(error=exc)
            raise
        finally:
            pulling.active = False
        never_raises(reader.item)(item, call)
        try:
            yield item
        except GeneratorExit:  # the stream was dropped part way and is being freed
            _end_early(call)
            raise


async def _async_items(
    inner: AsyncIterator[Any], call: LlmCall, reader: Reader, pulling: _Pulling
) -> AsyncIterator[Any]:
    while True:
        pulling.active = True
        try:
            item = await inner.__anext__()
        except StopAsyncIteration:
            call.finish()
            return
        except BaseException as exc:
            call.finish(error=exc)
            raise
        finally:
            pulling.active = False
        never_raises(reader.item)(item, call)
        try:
            yield item
        except GeneratorExit:
            _end_early(call)
            raise


def _hook_close(response: Any, call: LlmCall, pulling: _Pulling, *, is_async: bool) -> None:
    """End the step when the user closes the response before the stream's end."""
    name = "aclose" if is_async else "close"
    original = getattr(response, name)

    def closed_early() -> None:
        if not pulling.active:
            _end_early(call)

    if is_async:

        async def aclose() -> None:
            closed_early()
            await original()

        hook: Any = aclose
    else:

        def close() -> None:
            closed_early()
            original()

        hook = close
    setattr(response, name, hook)

    def unhook() -> None:
        if response.__dict__.get(name) is hook:
            del response.__dict__[name]

    call.on_finish(unhook)


# -- endings found by the garbage collector ---------------------------------------------------

_reaped: queue.SimpleQueue[LlmCall] = queue.SimpleQueue()  # put() is safe inside GC callbacks
_reaper_lock = threading.Lock()
_reaper: threading.Thread | None = None
_collecting = False


def _track_collection(phase: str, info: dict[str, Any]) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_track_collection)


def _end_early(call: LlmCall) -> None:
    """End a stream's step that the user closed or dropped: now, or from the reaper thread
    when the cyclic collector is running (it may have interrupted a publish holding a lock)."""
    if call.done:
        return
    if _collecting:
        _reaped.put(call)
    else:
        call.finish(closed_early=True)


def _ensure_reaper() -> None:
    global _reaper
    with _reaper_lock:
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(
                target=_end_reaped, name="dockrion-nb-llm-reaper", daemon=True
            )
            _reaper.start()


def _end_reaped() -> None:
    while True:
        _reaped.get().finish(closed_early=True)


__all__ = ["watch_stream"]
