"""Tracing a provider SDK's client at its one request path, for one client or for a block.

Both SDKs send every API call through ``client.request(cast_to, options, stream=...,
stream_cls=...)`` (retries included), which returns the parsed result or the SDK's
``Stream``. Wrapping that one method covers ``create``, the ``.stream()`` helpers, the sync
and the async client alike, and leaves every other endpoint untouched.

- ``instrument_client(client, sdk, ctx)`` wraps one client object (an instance attribute,
  so other clients are unaffected; ``uninstrument_client`` removes it). Copies made with
  ``client.with_options(...)`` / ``client.copy(...)`` are instrumented too.
- ``client_scope(sdk, ctx)`` wraps the SDK's client base class for the length of a block
  (``%%publish --instrument``): every client, including those the block creates, is traced,
  but only for calls made in the block's own context (a ``ContextVar``), so other threads and
  cells are unaffected. Nested and concurrent scopes share one patch, removed by the last.

A call is traced into the pinned ``ctx`` when one was given, else into the run current where
the call is made (``%%publish``, ``trace()``); with no run it passes through untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..context import StreamContext, get_current_context
from .llm_call import LlmCall, Reader, log, never_raises
from .llm_stream import watch_stream
from .steps import StepTracker

ClientT = TypeVar("ClientT")

MARK = "_dockrion_nb_instrumentation"
ORIGINAL = "_dockrion_nb_original"
_ABSENT = object()


@dataclass(frozen=True)
class Sdk:
    """What the tracing needs to know about one provider's SDK."""

    provider: str
    sync_client: type
    """The SDK's sync client base class, which defines ``request``."""
    async_client: type
    stream_types: tuple[type, ...]
    endpoint: Callable[[Any], str | None]
    """The traced endpoint a request's options are for (``"chat.completions"``), or None."""
    reader: Callable[[str], Reader]
    """A fresh reader for one call to that endpoint."""
    scope: contextvars.ContextVar[_Scope | None] = field(compare=False, hash=False)


def request_owner(client_class: type) -> type:
    """The class in ``client_class``'s MRO that defines ``request`` (the SDK's base client)."""
    for klass in client_class.__mro__:
        if "request" in vars(klass):
            return klass
    raise TypeError(f"{client_class.__qualname__} has no request method to trace")


# -- one traced call ----------------------------------------------------------------------------

_in_call: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dockrion_nb_in_llm_call", default=False
)


def _begin(
    sdk: Sdk, args: tuple[Any, ...], kwargs: Mapping[str, Any], ctx: StreamContext | None
) -> tuple[LlmCall, Reader] | None:
    """The call's step, started, or None when this request is not one to trace."""
    if ctx is None or _in_call.get():
        return None
    options = args[1] if len(args) >= 2 else kwargs.get("options")
    try:
        endpoint = sdk.endpoint(options)
        if endpoint is None:
            return None
        body = getattr(options, "json_data", None)
        model = body.get("model") if isinstance(body, Mapping) else None
        call = LlmCall(
            StepTracker(ctx, source=sdk.provider),
            provider=sdk.provider,
            endpoint=endpoint,
            model=model if isinstance(model, str) else None,
            stream=bool(kwargs.get("stream", False)),
        )
        return call, sdk.reader(endpoint)
    except Exception:
        log.warning("dockrion-nb could not start tracing an LLM call", exc_info=True)
        return None


def _settle(sdk: Sdk, result: Any, call: LlmCall, reader: Reader, *, is_async: bool) -> None:
    """After the request returned: watch its stream, or read the whole result and end."""
    if isinstance(result, sdk.stream_types):
        try:
            watch_stream(result, call, reader, is_async=is_async)
            return
        except Exception as exc:  # an SDK whose stream we cannot follow: end the step here
            log.warning("dockrion-nb cannot follow this %s stream: %s", sdk.provider, exc)
            call.finish()
            return
    never_raises(reader.result)(result, call)
    call.finish()


def call_sync(
    sdk: Sdk, send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any
) -> Any:
    """``send(*args, **kwargs)`` (the SDK's own request), traced as one step into ``ctx``."""
    started = _begin(sdk, args, kwargs, ctx)
    if started is None:
        return send(*args, **kwargs)
    call, reader = started
    token = _in_call.set(True)
    try:
        result = send(*args, **kwargs)
    except BaseException as exc:
        call.finish(error=exc)
        raise
    finally:
        _in_call.reset(token)
    _settle(sdk, result, call, reader, is_async=False)
    return result


async def call_async(
    sdk: Sdk, send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any
) -> Any:
    """The async client's ``call_sync``."""
    started = _begin(sdk, args, kwargs, ctx)
    if started is None:
        return await send(*args, **kwargs)
    call, reader = started
    token = _in_call.set(True)
    try:
        result = await send(*args, **kwargs)
    except BaseException as exc:
        call.finish(error=exc)
        raise
    finally:
        _in_call.reset(token)
    _settle(sdk, result, call, reader, is_async=True)
    return result


# -- one client ---------------------------------------------------------------------------------


@dataclass
class Instrumentation:
    """What ``instrument_client`` put on a client, so it can be taken off again."""

    sdk: Sdk
    ctx: StreamContext | None
    saved: dict[str, Any]

    def context(self) -> StreamContext | None:
        return self.ctx if self.ctx is not None else get_current_context()


def _check(client: Any, sdk: Sdk, ctx: Any, what: str) -> None:
    if not isinstance(client, sdk.sync_client | sdk.async_client):
        raise TypeError(
            f"{what} takes an {sdk.provider} client (such as {sdk.provider}."
            f"{'OpenAI' if sdk.provider == 'openai' else 'Anthropic'}()), "
            f"not {type(client).__module__}.{type(client).__qualname__}"
        )
    if ctx is not None and not isinstance(ctx, StreamContext):
        raise TypeError(
            f"{what}: ctx must be a StreamContext or None (the current run), "
            f"not {type(ctx).__name__}"
        )


def _unpatched_request(client: Any) -> Callable[..., Any]:
    """The client's own bound ``request``, past a block's class-level patch if one is on."""
    function = getattr(type(client), "request")  # noqa: B009
    function = getattr(function, ORIGINAL, function)
    bound: Callable[..., Any] = function.__get__(client, type(client))
    return bound


def instrument_client(client: ClientT, sdk: Sdk, ctx: StreamContext | None, what: str) -> ClientT:
    """Trace ``client``'s LLM calls (idempotent: a second call only changes the pinned ctx)."""
    _check(client, sdk, ctx, what)
    state = vars(client)
    existing = state.get(MARK)
    if isinstance(existing, Instrumentation):
        existing.ctx = ctx
        return client
    instrumentation = Instrumentation(sdk=sdk, ctx=ctx, saved={})
    send = _unpatched_request(client)
    is_async = isinstance(client, sdk.async_client)

    if is_async:

        async def request(*args: Any, **kwargs: Any) -> Any:
            return await call_async(sdk, send, args, kwargs, instrumentation.context())

        traced: Callable[..., Any] = functools.wraps(send)(request)
    else:

        def request_sync(*args: Any, **kwargs: Any) -> Any:
            return call_sync(sdk, send, args, kwargs, instrumentation.context())

        traced = functools.wraps(send)(request_sync)

    copy = getattr(client, "copy", None)
    replacements: dict[str, Any] = {"request": traced}
    if callable(copy):

        def copied(*args: Any, **kwargs: Any) -> Any:
            new = copy(*args, **kwargs)
            if isinstance(new, sdk.sync_client | sdk.async_client):
                instrument_client(new, sdk, instrumentation.ctx, what)
            return new

        replacements["copy"] = replacements["with_options"] = functools.wraps(copy)(copied)
    for name, value in replacements.items():
        instrumentation.saved[name] = state.get(name, _ABSENT)
        setattr(client, name, value)
    state[MARK] = instrumentation
    return client


def uninstrument_client(client: Any) -> bool:
    """Take ``instrument_client``'s wrapping off ``client``; False if it had none."""
    state = vars(client)
    instrumentation = state.pop(MARK, None)
    if not isinstance(instrumentation, Instrumentation):
        return False
    for name, previous in instrumentation.saved.items():
        if previous is _ABSENT:
            state.pop(name, None)
        else:
            state[name] = previous
    return True


# -- every client, for a block ----------------------------------------------------------------


@dataclass
class _Scope:
    ctx: StreamContext
    active: bool = True


_patch_lock = threading.Lock()
_patch_users: dict[str, int] = {}


def _scoped_request(sdk: Sdk, original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    def current(sdk: Sdk = sdk) -> StreamContext | None:
        scope = sdk.scope.get()
        return scope.ctx if scope is not None and scope.active else None

    if is_async:

        async def request(self: Any, *args: Any, **kwargs: Any) -> Any:
            send = original.__get__(self, type(self))
            return await call_async(sdk, send, args, kwargs, current())

        wrapper: Callable[..., Any] = functools.wraps(original)(request)
    else:

        def request_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
            send = original.__get__(self, type(self))
            return call_sync(sdk, send, args, kwargs, current())

        wrapper = functools.wraps(original)(request_sync)
    setattr(wrapper, ORIGINAL, original)
    return wrapper


def _patch(sdk: Sdk) -> None:
    with _patch_lock:
        users = _patch_users.get(sdk.provider, 0)
        if users == 0:
            for owner, is_async in ((sdk.sync_client, False), (sdk.async_client, True)):
                original = vars(owner)["request"]
                owner.request = _scoped_request(sdk, original, is_async)  # type: ignore[attr-defined]
        _patch_users[sdk.provider] = users + 1


def _unpatch(sdk: Sdk) -> None:
    with _patch_lock:
        users = _patch_users.get(sdk.provider, 0) - 1
        _patch_users[sdk.provider] = max(users, 0)
        if users > 0:
            return
        for owner in (sdk.sync_client, sdk.async_client):
            current = vars(owner).get("request")
            original = getattr(current, ORIGINAL, None)
            if original is not None:
                owner.request = original  # type: ignore[attr-defined]
            else:  # someone patched it after us: leave theirs in place
                log.warning("%s.request was changed by someone else; left as is", owner)


@contextlib.contextmanager
def client_scope(sdk: Sdk, ctx: StreamContext) -> Iterator[None]:
    """Trace every ``sdk`` client's calls made in this block (this context only) into ``ctx``."""
    if not isinstance(ctx, StreamContext):
        raise TypeError(f"cell_scope needs a StreamContext, not {type(ctx).__name__}")
    scope = _Scope(ctx)
    _patch(sdk)
    token = sdk.scope.set(scope)
    try:
        yield
    finally:
        scope.active = False  # tasks the block started and left running stop tracing here
        sdk.scope.reset(token)
        _unpatch(sdk)


__all__ = [
    "Instrumentation",
    "Sdk",
    "call_async",
    "call_sync",
    "client_scope",
    "instrument_client",
    "request_owner",
    "uninstrument_client",
]
