"""How every integration writes a run: steps that start and end, tokens, LLM usage, failures.

One vocabulary for all sources (LangChain callbacks, provider SDKs, OpenTelemetry spans), so
the live view and the exports read them alike:

- ``custom:step_start`` when a step begins (``node_name``, ``step_id``, ``parent_id``,
  ``kind``, ``input_keys``, ``attributes``): the view shows it as running at once. It passes
  the events filter as ``step`` does.
- ``step`` when it ends: Dockrion's fields (``node_name``, ``duration_ms``, ``input_keys``,
  ``output_keys``) plus ``step_id``, ``parent_id``, ``kind``, ``status`` (``ok`` or
  ``error``), ``error`` (the message, on failure) and ``attributes``.
- ``token`` for each streamed piece of LLM text, with the ``step_id`` of its LLM call when
  the source knows it; a final empty token carries ``finish_reason`` when the source reports
  it only at the end.
- ``custom:llm_usage`` after an LLM call: ``step_id``, ``model``, ``provider``,
  ``input_tokens``, ``output_tokens``, ``total_tokens``, ``time_to_first_token_ms``,
  ``duration_ms``. The run's totals are also kept in ``ctx.usage``, and a traced run
  (``%%publish``, ``trace()``) puts them in its ``complete`` event's ``metadata.usage``.
- A failure of the outermost step ends the run with an ``error`` event naming the innermost
  step that failed (``details.node``), unless a ``Trace`` owns the run's end: then the trace's
  own ``error`` event names it. A failure that an enclosing step absorbed (it ended well, as
  an agent does that recovers from a tool error) is forgotten, so a later one is not blamed
  on it.

Every value is made JSON-safe and bounded before it is published: framework objects never
reach the backend, and one huge prompt never swamps the view.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..context import StreamContext, get_current_context
from ..events import CustomEvent, ErrorEvent, StepEvent, TokenEvent
from ..tracing import error_details, jsonable, utf8_text

STEP_START_TYPE = "custom:step_start"
LLM_USAGE_TYPE = "custom:llm_usage"
MAX_ATTRIBUTE_CHARS = 2000
"""A published attribute value's JSON is cut to about this many characters."""
MAX_KEYS = 50


def resolve_context(ctx: StreamContext | None, what: str) -> StreamContext:
    """``ctx``, else the run being traced here (``%%publish``, ``trace()``), else an error."""
    found = ctx if ctx is not None else get_current_context()
    if found is None:
        raise ValueError(
            f"{what} has no run to write to: pass a StreamContext (ctx=...), or use it inside "
            "%%publish RUN or `with dockrion_nb.trace(RUN):`"
        )
    if not isinstance(found, StreamContext):
        raise TypeError(f"{what}: ctx must be a StreamContext, not {type(found).__name__}")
    return found


def bounded(value: Any, limit: int = MAX_ATTRIBUTE_CHARS) -> Any:
    """``value`` JSON-safe, and cut when its JSON is longer than ``limit`` characters."""
    safe = jsonable(value)
    text = json.dumps(safe, ensure_ascii=False)
    if len(text) <= limit:
        return safe
    return {"truncated": True, "preview": text[:limit], "size_chars": len(text)}


def keys_of(value: Any) -> list[str]:
    """The keys of a mapping input or output (a LangGraph state, a tool's kwargs), else []."""
    if isinstance(value, Mapping):
        return [str(k) for k in list(value)[:MAX_KEYS]]
    return []


@dataclass
class OpenStep:
    """A step that has started and not ended."""

    step_id: str
    name: str
    kind: str
    parent_id: str | None
    started: float
    input_keys: list[str]
    first_token_at: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class StepTracker:
    """Writes one run's steps, tokens and usage through its ``StreamContext``.

    Every method is synchronous and safe from any thread, including a thread whose event loop
    is running (callbacks of async frameworks): ``StreamContext``'s sync calls carry each event
    to the bus in order. ``source`` names the integration in error messages.
    """

    def __init__(self, ctx: StreamContext | None = None, *, source: str = "integration") -> None:
        self.ctx = resolve_context(ctx, source)
        self.source = source
        self._open: dict[str, OpenStep] = {}
        self._lock = threading.Lock()
        # The open ancestors of the step named in ``ctx.failed_step``: if one of them ends
        # well, it absorbed that failure (a tool error the agent recovered from), so a later
        # failure must not be blamed on it.
        self._failure_ancestors: set[str] = set()

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    def is_open(self, step_id: str) -> bool:
        with self._lock:
            return step_id in self._open

    def open_step(self, step_id: str) -> OpenStep | None:
        with self._lock:
            return self._open.get(step_id)

    # -- steps ----------------------------------------------------------------------------------

    def start(
        self,
        step_id: str,
        name: str,
        *,
        kind: str = "chain",
        parent_id: str | None = None,
        inputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """A step began: remember it and publish ``custom:step_start``."""
        step = OpenStep(
            step_id=step_id,
            name=name,
            kind=kind,
            parent_id=parent_id,
            started=time.perf_counter(),
            input_keys=keys_of(inputs),
        )
        with self._lock:
            self._open[step_id] = step
            if parent_id is None:
                self.ctx.failed_step = None
                self._failure_ancestors.clear()
        fields: dict[str, Any] = {
            "node_name": name,
            "step_id": step_id,
            "parent_id": parent_id,
            "kind": kind,
            "input_keys": step.input_keys,
        }
        if attributes:
            fields["attributes"] = bounded(dict(attributes))
        self.ctx.sync_emit_event(
            CustomEvent(run_id=self.run_id, type=STEP_START_TYPE, **fields), filter_as="step"
        )

    def end(
        self,
        step_id: str,
        *,
        outputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        error: BaseException | str | None = None,
        name: str | None = None,
        kind: str | None = None,
        duration_ms: int | None = None,
    ) -> int | None:
        """A step ended (with ``error`` when it failed): publish its ``step`` event.

        ``kind`` and ``duration_ms`` replace the kind given at the start and the duration
        measured here, for sources that learn them only at the end or time steps themselves
        (an OpenTelemetry span's kind attribute, its own start and end times).

        Returns its duration in milliseconds, or None for a step that never started here (it
        is still published, without a duration, if ``name`` is given)."""
        with self._lock:
            step = self._open.pop(step_id, None)
            if error is None and step_id in self._failure_ancestors:
                self._failure_ancestors.clear()
                self.ctx.failed_step = None
        if step is None and name is None:
            return None
        if duration_ms is not None:
            duration: int | None = duration_ms
        else:
            duration = round((time.perf_counter() - step.started) * 1000) if step else None
        node = step.name if step else str(name)
        parent = step.parent_id if step else None
        fields: dict[str, Any] = {
            "step_id": step_id,
            "parent_id": parent,
            "kind": kind or (step.kind if step else "chain"),
            "status": "ok" if error is None else "error",
        }
        merged = {**(step.attributes if step else {}), **(attributes or {})}
        if merged:
            fields["attributes"] = bounded(merged)
        if error is not None:
            fields["error"] = _message(error)[:MAX_ATTRIBUTE_CHARS]
            with self._lock:
                if self.ctx.failed_step is None:
                    self.ctx.failed_step = node  # the innermost failing step ends first
                    self._failure_ancestors = self._ancestors(parent)
        self.ctx.sync_emit_event(
            StepEvent(
                run_id=self.run_id,
                node_name=node,
                duration_ms=duration,
                input_keys=step.input_keys if step else [],
                output_keys=keys_of(outputs),
                **fields,
            )
        )
        if error is not None and parent is None and not self.ctx.traced:
            self.fail_run(error)
        return duration

    def _ancestors(self, step_id: str | None) -> set[str]:
        """``step_id`` and the open steps above it (call with the lock held)."""
        found: set[str] = set()
        while step_id is not None and step_id not in found:
            found.add(step_id)
            parent = self._open.get(step_id)
            step_id = parent.parent_id if parent is not None else None
        return found

    def annotate(self, step_id: str, **attributes: Any) -> None:
        """Attributes learnt while a step runs (a model name, a finish reason), published with
        its ``step`` event."""
        with self._lock:
            step = self._open.get(step_id)
            if step is not None:
                step.attributes.update(attributes)

    def fail_run(self, error: BaseException | str) -> None:
        """End the run with an ``error`` event that names the step that failed."""
        node = self.ctx.failed_step
        details: dict[str, Any] = {"node": node, "source": self.source}
        code = "INTERNAL_ERROR"
        if isinstance(error, BaseException):
            details.update(error_details(error))
            code = type(error).__name__
        message = _message(error)
        self.ctx.sync_emit_event(
            ErrorEvent(
                run_id=self.run_id,
                error=f"{node}: {message}" if node else message,
                code=code,
                details=details,
            )
        )

    # -- tokens and usage -------------------------------------------------------------------------

    def token(
        self, content: str, *, step_id: str | None = None, finish_reason: str | None = None
    ) -> None:
        """A streamed piece of text. ``step_id`` (the LLM call it belongs to) is published with
        it, so a view can tell apart tokens of LLM calls that run at once, and it times the
        first token."""
        extra: dict[str, Any] = {}
        if step_id is not None:
            extra["step_id"] = step_id
            with self._lock:
                step = self._open.get(step_id)
                if step is not None and step.first_token_at is None:
                    step.first_token_at = time.perf_counter()
        self.ctx.sync_emit_event(
            TokenEvent(run_id=self.run_id, content=content, finish_reason=finish_reason, **extra)
        )

    def time_to_first_token_ms(self, step_id: str) -> int | None:
        with self._lock:
            step = self._open.get(step_id)
            if step is None or step.first_token_at is None:
                return None
            return round((step.first_token_at - step.started) * 1000)

    def usage(
        self,
        *,
        step_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
        time_to_first_token_ms: int | None = None,
        duration_ms: int | None = None,
        **extra: Any,
    ) -> None:
        """One LLM call's usage: a ``custom:llm_usage`` event, and the run's totals."""
        if total_tokens is None and input_tokens is not None and output_tokens is not None:
            total_tokens = input_tokens + output_tokens
        if time_to_first_token_ms is None and step_id is not None:
            time_to_first_token_ms = self.time_to_first_token_ms(step_id)
        fields: dict[str, Any] = {
            "step_id": step_id,
            "model": model,
            "provider": provider,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": total_tokens,
            "time_to_first_token_ms": time_to_first_token_ms,
            "duration_ms": duration_ms,
        }
        if extra:
            fields["attributes"] = bounded(extra)
        with self._lock:
            totals = self.ctx.usage
            totals["calls"] = totals.get("calls", 0) + 1
            for key, value in (
                ("input_tokens", input_tokens),
                ("output_tokens", output_tokens),
                ("total_tokens", total_tokens),
            ):
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
            if model:
                models = totals.setdefault("models", [])
                if model not in models:
                    models.append(model)
        self.ctx.sync_emit_event(CustomEvent(run_id=self.run_id, type=LLM_USAGE_TYPE, **fields))


def _message(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        return utf8_text(str(error) or type(error).__name__)
    return utf8_text(error)


__all__ = [
    "LLM_USAGE_TYPE",
    "STEP_START_TYPE",
    "OpenStep",
    "StepTracker",
    "bounded",
    "keys_of",
    "resolve_context",
]
