"""One provider API call (a chat completion, a response, a message) as a step of kind ``llm``.

``LlmCall`` starts its step when the request is sent and ends it exactly once: when the
response is read, the stream is exhausted or closed, or the call fails. Between the two it
publishes each streamed piece of text as it arrives. Readers (one per provider endpoint, in
``openai.py`` / ``anthropic.py``) turn the SDK's own objects into ``LlmCall`` calls.

Tracing never breaks the traced code: a failure to publish is logged, not raised into the
user's LLM call.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from ..redaction import masked_logger
from .steps import StepTracker

log = masked_logger("dockrion_nb.integrations.llm")

P = ParamSpec("P")
R = TypeVar("R")


def never_raises(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Run ``fn``, logging (not raising) what goes wrong: tracing must not change the call."""

    @functools.wraps(fn)
    def quiet(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.warning("dockrion-nb could not trace an LLM call", exc_info=True)
            return None

    return quiet


class Reader(Protocol):
    """Reads one endpoint's objects (stream items or a whole result) into an ``LlmCall``."""

    def item(self, item: Any, call: LlmCall) -> None: ...

    def result(self, result: Any, call: LlmCall) -> None: ...


class LlmCall:
    """The step of one API call: ``custom:step_start`` now, tokens as they come, then
    ``custom:llm_usage`` and ``step`` once."""

    def __init__(
        self,
        tracker: StepTracker,
        *,
        provider: str,
        endpoint: str,
        model: str | None,
        stream: bool,
    ) -> None:
        self.tracker = tracker
        self.provider = provider
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.step_id = f"llm-{uuid.uuid4().hex[:16]}"
        self.name = f"{provider}.{endpoint}"
        self.finish_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.total_tokens: int | None = None
        self.usage_details: dict[str, int] = {}
        self.tool_calls: list[str] = []
        self.failure: str | None = None
        """An error the provider reported in the response itself (a failed response)."""
        self._started = time.perf_counter()
        self._done = False
        self._lock = threading.Lock()
        self._on_finish: list[Callable[[], Any]] = []
        tracker.start(self.step_id, self.name, kind="llm", attributes=self._attributes())

    @property
    def done(self) -> bool:
        return self._done

    def on_finish(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the step ends (to release what watched the stream)."""
        self._on_finish.append(callback)

    # -- what readers report ----------------------------------------------------------------------

    @never_raises
    def text(self, content: str, finish_reason: str | None = None) -> None:
        """A streamed piece of text, published now; a finish reason may come with it."""
        if self._done or not (content or finish_reason):
            return
        if finish_reason:
            self.finish_reason = finish_reason
        # Only real text counts for the time to first token.
        step_id = self.step_id if content else None
        self.tracker.token(content, step_id=step_id, finish_reason=finish_reason)

    def set_model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model

    def set_usage(
        self,
        *,
        input_tokens: Any = None,
        output_tokens: Any = None,
        total_tokens: Any = None,
        **details: Any,
    ) -> None:
        """Token counts as the provider reports them; ``None`` leaves a count unchanged."""
        if isinstance(input_tokens, int):
            self.input_tokens = input_tokens
        if isinstance(output_tokens, int):
            self.output_tokens = output_tokens
        if isinstance(total_tokens, int):
            self.total_tokens = total_tokens
        for key, value in details.items():
            if isinstance(value, int):
                self.usage_details[key] = value

    def add_tool_call(self, name: Any) -> None:
        if isinstance(name, str) and name and len(self.tool_calls) < 50:
            self.tool_calls.append(name)

    # -- the end --------------------------------------------------------------------------------

    @never_raises
    def finish(self, error: BaseException | None = None, *, closed_early: bool = False) -> None:
        """End the step (once): usage when anything is known, then ``step`` with its status.

        ``closed_early``: the caller closed or dropped the stream before its end."""
        with self._lock:
            if self._done:
                return
            self._done = True
        for callback in self._on_finish:
            never_raises(callback)()
        failure: BaseException | str | None = error if error is not None else self.failure
        counts = (self.input_tokens, self.output_tokens, self.total_tokens)
        if failure is None or any(c is not None for c in counts):
            self.tracker.usage(
                step_id=self.step_id,
                model=self.model,
                provider=self.provider,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                total_tokens=self.total_tokens,
                duration_ms=round((time.perf_counter() - self._started) * 1000),
                **self.usage_details,
            )
        attributes = self._attributes()
        if self.finish_reason:
            attributes["finish_reason"] = self.finish_reason
        if self.tool_calls:
            attributes["tool_calls"] = self.tool_calls
        if closed_early:
            attributes["closed_early"] = True
        self.tracker.end(self.step_id, attributes=attributes, error=failure)

    def _attributes(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "model": self.model,
            "stream": self.stream,
        }


__all__ = ["LlmCall", "Reader", "never_raises"]
