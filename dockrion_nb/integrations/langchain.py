"""LangChain and LangGraph runs as live events, from LangChain's own callbacks.

``StreamCallbackHandler(ctx)`` goes where LangChain takes callbacks
(``graph.invoke(inputs, config={"callbacks": [handler]})``, and the same for ``ainvoke``,
``stream``, ``astream``, ``batch``); ``cell_scope(ctx)`` installs one for everything a block
runs (``%%publish RUN --langchain``, ``trace(RUN, integrations=["langchain"])``) through
LangChain's configure hook, so existing code needs no edit.

What becomes a step (``custom:step_start`` when it begins, ``step`` when it ends, written by
``steps.StepTracker``), with its ``kind``:

- the outermost run of each call (``graph`` for a LangGraph graph, else ``chain``, or ``llm``,
  ``tool``, ...): every run has one frame, and its failure is the run's failure;
- each LangGraph node (``node``), with the state keys it read and the keys it updated;
- each LLM or chat-model call (``llm``): the model name and provider as attributes, its text
  as ``token`` events, its usage as ``custom:llm_usage``;
- each tool (``tool``, with a bounded preview of its input and output) and retriever
  (``retriever``, with the number of documents);
- prompts and output parsers (``prompt``, ``parser``), and chains with a name of their own (a
  function in a ``RunnableLambda``, ``.with_config(run_name=...)``, a named subgraph, a
  conditional edge's routing function), as ``chain``.

Not steps, because a user did not write them as steps: runs tagged ``langsmith:hidden``,
LangGraph's internal runnables (``ChannelWrite<...>``, ``Branch<...>``, ``__start__``), the
anonymous composition wrappers (``RunnableSequence``, ``RunnableParallel<...>``,
``RunnableLambda`` around a lambda, ...) below the outermost run, and a subgraph's default
``LangGraph`` wrapper directly inside the node that runs it. A step's ``parent_id`` is its
nearest shown ancestor, so the tree stays whole.

Tokens: each ``on_llm_new_token`` with text (chat chunks included) is a ``token`` event with
the LLM step's ``step_id``; the finish reason (from the chunk, the generation info or the
message's response metadata) rides on the last token, or on a final empty token when it is
known only at the end. A call that did not stream sends its whole text as one token when it
ends. Models tagged ``nostream`` (LangGraph's opt-out of streaming) send no tokens.

Usage: ``usage_metadata`` of the message, else the provider's ``llm_output`` (``token_usage``
or ``usage``), with the model name (response metadata, else invocation parameters, else
LangChain's ``ls_model_name``), provider, duration and time to first token, goes to a
``custom:llm_usage`` event per call and is summed into the traced run's
``complete.metadata.usage`` (``calls``, ``input_tokens``, ``output_tokens``, ``total_tokens``,
``models``).

Errors: a failing step ends with ``status: "error"``; when the outermost run fails, an
untraced run ends with an ``error`` event naming the innermost step that failed, and a traced
run's own ``error`` names it. A LangGraph interrupt (or a ``Command`` sent to a parent graph)
is control flow, not a failure: its node ends ``ok`` with ``attributes.control`` set to the
exception's name (``GraphInterrupt``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from ..context import StreamContext
from .steps import StepTracker, bounded

SOURCE = "langchain"
HIDDEN_TAG = "langsmith:hidden"
NOSTREAM_TAG = "nostream"
NODE_TAG_PREFIX = "graph:step:"
DEFAULT_GRAPH_NAME = "LangGraph"
PREVIEW_CHARS = 500
"""A tool's input and output are previewed in its step's attributes, cut to about this."""

_PLUMBING = re.compile(r"^Runnable[A-Z]\w*(<.*>)?$")
_LANGGRAPH_INTERNAL = re.compile(
    r"^((ChannelWrite|ChannelRead|ChannelInvoke|Branch)(<.*>)?|__\w+__)$"
)
_MODEL_PARAMS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")


@dataclass
class _Run:
    """A LangChain run this handler has seen start and not yet forgotten."""

    root: str
    shown: str | None
    """The step id of the run itself when it is a step, else of its nearest shown ancestor."""
    kind: str | None = None
    """The step's kind, when the run is a step."""
    llm: _LLMCall | None = None


@dataclass
class _LLMCall:
    streams_tokens: bool
    streamed: bool = False
    finish_sent: bool = False
    model: str | None = None
    provider: str | None = None


@dataclass
class _Tree:
    """Every run under one outermost run, forgotten together when it ends, so a child that
    starts after its parent ended still finds its nearest shown ancestor."""

    runs: set[str] = field(default_factory=set)


class StreamCallbackHandler(BaseCallbackHandler):
    """Writes LangChain and LangGraph runs to a dockrion-nb run, live.

    ``ctx`` is the run to write to; ``None`` means the run current where the handler is
    created (inside ``%%publish`` or ``with trace(...)``). Pass it as
    ``config={"callbacks": [handler]}``; one handler can serve many calls, in turn or at once.

    ``run_inline = True``: LangChain's async callback manager runs a sync handler that is not
    inline in its thread-pool executor, one thread hop per token and concurrently with other
    handlers; from that worker thread, a run whose bus lives on the caller's loop would be
    published from the wrong loop. Inline, every callback runs in the caller's loop thread in
    callback order, and ``StreamContext`` either queues the event on that loop in order (when
    the run's bus lives there) or hands it to the notebook engine's loop and waits the moment
    that takes (the model waits for each callback anyway; the cost is that other tasks on the
    caller's loop wait too). Sync runs call it from whichever thread runs the step
    (LangGraph's node threads included).

    ``raise_error = False``: a failure to publish is logged by LangChain and never raised
    into the traced code; tracing does not break the agent.

    Thread safety: the table of open runs is guarded by a lock, and events go out through
    ``StepTracker`` and ``StreamContext``, which are safe from any thread and publish a
    thread's events in the order it made them. Steps running at once in several threads
    interleave in the order their callbacks arrive.
    """

    run_inline = True
    raise_error = False

    def __init__(self, ctx: StreamContext | None = None) -> None:
        super().__init__()
        self.tracker = StepTracker(ctx, source=SOURCE)
        self._runs: dict[str, _Run] = {}
        self._trees: dict[str, _Tree] = {}
        self._lock = threading.Lock()

    @property
    def ctx(self) -> StreamContext:
        return self.tracker.ctx

    def __repr__(self) -> str:
        return f"StreamCallbackHandler(run_id={self.tracker.run_id!r})"

    # -- the run tree ---------------------------------------------------------------------------

    def _begin(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        kind: str,
        *,
        show: bool,
        inputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        llm: _LLMCall | None = None,
    ) -> None:
        step_id = str(run_id)
        with self._lock:
            parent = self._runs.get(str(parent_run_id)) if parent_run_id is not None else None
            if parent is None:
                # The outermost run we see (or one whose parent started before this handler
                # was attached): always a step, so its failure ends the run.
                root, parent_step, show = step_id, None, True
                self._trees[root] = _Tree()
            else:
                root, parent_step = parent.root, parent.shown
            self._runs[step_id] = _Run(
                root=root,
                shown=step_id if show else parent_step,
                kind=kind if show else None,
                llm=llm,
            )
            self._trees[root].runs.add(step_id)
        if show:
            self.tracker.start(
                step_id,
                name,
                kind=kind,
                parent_id=parent_step,
                inputs=inputs,
                attributes=attributes,
            )
            if attributes:
                # the ``step`` event carries them too, for views that read only ended steps
                self.tracker.annotate(step_id, **attributes)

    def _parent_kind(self, parent_run_id: UUID | None) -> str | None:
        """The kind of the parent run, when the parent is itself a shown step."""
        if parent_run_id is None:
            return None
        with self._lock:
            parent = self._runs.get(str(parent_run_id))
        return parent.kind if parent is not None else None

    def _shown(self, run_id: UUID) -> _Run | None:
        """The run, when it is a step (else None: nothing to write)."""
        with self._lock:
            run = self._runs.get(str(run_id))
        if run is None or run.shown != str(run_id):
            return None
        return run

    def _forget(self, run_id: UUID) -> None:
        step_id = str(run_id)
        with self._lock:
            run = self._runs.get(step_id)
            if run is None or run.root != step_id:
                return
            tree = self._trees.pop(step_id, None)
            for child in tree.runs if tree else (step_id,):
                self._runs.pop(child, None)

    def _end(
        self,
        run_id: UUID,
        *,
        outputs: Any = None,
        error: BaseException | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            if self._shown(run_id) is None:
                return
            attrs = dict(attributes or {})
            if error is not None and _is_control_flow(error):
                attrs["control"] = type(error).__name__
                error = None
            self.tracker.end(str(run_id), outputs=outputs, error=error, attributes=attrs or None)
        finally:
            self._forget(run_id)

    # -- chains (graphs, nodes, prompts, parsers, lambdas) ---------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _run_name(serialized, kwargs, "chain")
        tags = tags or []
        metadata = metadata or {}
        kind = _chain_kind(name, tags, metadata, kwargs.get("run_type"))
        if (
            parent_run_id is None
            and kind == "chain"
            and metadata.get("ls_integration") == "langgraph"
        ):
            kind = "graph"
        show = _chain_is_step(name, kind, tags, self._parent_kind(parent_run_id))
        attributes = (
            {"langgraph_step": metadata["langgraph_step"]}
            if kind == "node" and "langgraph_step" in metadata
            else None
        )
        self._begin(
            run_id, parent_run_id, name, kind, show=show, inputs=inputs, attributes=attributes
        )

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, outputs=outputs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=error)

    # -- LLMs and chat models --------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, run_id, parent_run_id, tags, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, run_id, parent_run_id, tags, metadata, kwargs)

    def _llm_start(
        self,
        serialized: dict[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        tags = tags or []
        metadata = metadata or {}
        call = _LLMCall(
            streams_tokens=NOSTREAM_TAG not in tags,
            model=_model_from_params(kwargs.get("invocation_params"), metadata),
            provider=_text_or_none(metadata.get("ls_provider")),
        )
        attributes = {k: v for k, v in (("model", call.model), ("provider", call.provider)) if v}
        self._begin(
            run_id,
            parent_run_id,
            _run_name(serialized, kwargs, "llm"),
            "llm",
            show=HIDDEN_TAG not in tags,
            attributes=attributes,
            llm=call,
        )

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        run = self._shown(run_id)
        if run is None or run.llm is None or not run.llm.streams_tokens:
            return
        call = run.llm
        call.streamed = True
        text = _token_text(token, chunk)
        finish = _finish_reason(
            getattr(chunk, "generation_info", None), getattr(chunk, "message", None)
        )
        if finish is not None:
            call.finish_sent = True
            self.tracker.annotate(str(run_id), finish_reason=finish)
        if text or finish is not None:
            self.tracker.token(text, step_id=str(run_id), finish_reason=finish)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._shown(run_id)
        if run is None or run.llm is None:
            self._forget(run_id)
            return
        step_id = str(run_id)
        call = run.llm
        generation = (
            response.generations[0][0] if response.generations and response.generations[0] else None
        )
        message = getattr(generation, "message", None)
        finish = _finish_reason(getattr(generation, "generation_info", None), message)
        if call.streams_tokens:
            if not call.streamed:
                text = (
                    generation.text
                    if generation is not None and isinstance(generation.text, str)
                    else ""
                )
                if text or finish is not None:
                    self.tracker.token(text, step_id=step_id, finish_reason=finish)
            elif finish is not None and not call.finish_sent:
                self.tracker.token("", step_id=step_id, finish_reason=finish)
        model = _model_from_response(message, response.llm_output) or call.model
        attributes: dict[str, Any] = {}
        if model:
            attributes["model"] = model
        if finish is not None:
            attributes["finish_reason"] = finish
        step = self.tracker.open_step(step_id)
        duration = round((time.perf_counter() - step.started) * 1000) if step else None
        self.tracker.usage(
            step_id=step_id,
            model=model,
            provider=call.provider,
            duration_ms=duration,
            **_usage_of(message, response.llm_output),
        )
        self._end(run_id, attributes=attributes)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=error)

    # -- tools and retrievers ------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        attributes: dict[str, Any] = {
            "input": bounded(inputs if inputs is not None else input_str, PREVIEW_CHARS)
        }
        if kwargs.get("tool_call_id"):
            attributes["tool_call_id"] = str(kwargs["tool_call_id"])
        self._begin(
            run_id,
            parent_run_id,
            _run_name(serialized, kwargs, "tool"),
            "tool",
            show=HIDDEN_TAG not in (tags or []),
            inputs=inputs,
            attributes=attributes,
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        content = getattr(output, "content", output)  # a ToolMessage, or the tool's own value
        self._end(run_id, outputs=output, attributes={"output": bounded(content, PREVIEW_CHARS)})

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._begin(
            run_id,
            parent_run_id,
            _run_name(serialized, kwargs, "retriever"),
            "retriever",
            show=HIDDEN_TAG not in (tags or []),
            attributes={"query": bounded(query, PREVIEW_CHARS)},
        )

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, attributes={"documents": len(documents)})

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error=error)


# -- what a run is -------------------------------------------------------------------------------


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], default: str) -> str:
    """LangChain's run name (``run_name``, a node's name), else the serialized class's."""
    name = kwargs.get("name")
    if not name and serialized:
        name = serialized.get("name")
        if not name:
            ids = serialized.get("id")
            if isinstance(ids, list) and ids:
                name = ids[-1]
    return str(name) if name else default


def _chain_kind(name: str, tags: Sequence[str], metadata: Mapping[str, Any], run_type: Any) -> str:
    if (
        any(tag.startswith(NODE_TAG_PREFIX) for tag in tags)
        and metadata.get("langgraph_node") == name
    ):
        return "node"
    if run_type in ("prompt", "parser"):
        return str(run_type)
    if name == DEFAULT_GRAPH_NAME:
        return "graph"
    return "chain"


def _chain_is_step(name: str, kind: str, tags: Sequence[str], parent_kind: str | None) -> bool:
    """Whether a chain below the outermost run is one a user would call a step."""
    if HIDDEN_TAG in tags or _LANGGRAPH_INTERNAL.match(name):
        return False
    if kind == "node":
        return True
    if kind == "graph" and parent_kind == "node":
        return False  # a subgraph's default wrapper directly inside the node that runs it
    return not _PLUMBING.match(name)


def _is_control_flow(error: BaseException) -> bool:
    """LangGraph's interrupts and parent commands travel as exceptions (``GraphBubbleUp``)."""
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(error).__mro__)


# -- what an LLM said ----------------------------------------------------------------------------


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _token_text(token: Any, chunk: Any) -> str:
    """The text of a streamed token: a string, or the text blocks of a content-block list."""
    if isinstance(token, str) and token:
        return token
    content = (
        token
        if isinstance(token, list)
        else getattr(getattr(chunk, "message", None), "content", None)
    )
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "".join(parts)
    return ""


def _finish_reason(generation_info: Any, message: Any) -> str | None:
    """Why generation stopped: OpenAI's ``finish_reason``, Anthropic's ``stop_reason``, ..."""
    sources = (generation_info, getattr(message, "response_metadata", None))
    for source in sources:
        if isinstance(source, Mapping):
            for key in ("finish_reason", "stop_reason", "done_reason"):
                if source.get(key):
                    return str(source[key])
    return None


def _model_from_params(params: Any, metadata: Mapping[str, Any]) -> str | None:
    if isinstance(params, Mapping):
        for key in _MODEL_PARAMS:
            if params.get(key):
                return str(params[key])
    return _text_or_none(metadata.get("ls_model_name"))


def _model_from_response(message: Any, llm_output: Any) -> str | None:
    """The model that answered (often more precise than the one asked for)."""
    for source in (getattr(message, "response_metadata", None), llm_output):
        if isinstance(source, Mapping):
            for key in ("model_name", "model", "model_id"):
                if source.get(key):
                    return str(source[key])
    return None


def _usage_of(message: Any, llm_output: Any) -> dict[str, int | None]:
    """Token counts: the message's ``usage_metadata``, else the provider's ``llm_output``."""
    usage = getattr(message, "usage_metadata", None)
    if isinstance(usage, Mapping) and usage:
        return {
            "input_tokens": _int(usage.get("input_tokens")),
            "output_tokens": _int(usage.get("output_tokens")),
            "total_tokens": _int(usage.get("total_tokens")),
        }
    if isinstance(llm_output, Mapping):
        raw = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(raw, Mapping):
            return {
                "input_tokens": _int(raw.get("prompt_tokens", raw.get("input_tokens"))),
                "output_tokens": _int(raw.get("completion_tokens", raw.get("output_tokens"))),
                "total_tokens": _int(raw.get("total_tokens")),
            }
    return {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- a handler for everything a block runs ------------------------------------------------------

_cell_handler: ContextVar[StreamCallbackHandler | None] = ContextVar(
    "dockrion_nb_langchain_handler", default=None
)
_hook_lock = threading.Lock()
_hook_registered = False


def _register_hook() -> None:
    """Tell LangChain, once per process, to add the handler in ``_cell_handler`` to every run.

    With ``handle_class`` set, LangChain adds it only where no ``StreamCallbackHandler`` is
    already attached, so a handler passed by hand inside the block is not doubled."""
    global _hook_registered
    with _hook_lock:
        if not _hook_registered:
            register_configure_hook(_cell_handler, True, StreamCallbackHandler)
            _hook_registered = True


@contextlib.contextmanager
def cell_scope(ctx: StreamContext | None = None) -> Iterator[StreamCallbackHandler]:
    """Trace every LangChain/LangGraph call made in the block (this thread and the tasks and
    threads that copy its context) to ``ctx``, with no ``callbacks=`` in the code.

    Calls that already carry a ``StreamCallbackHandler`` keep theirs. A thread started by hand
    (``threading.Thread``) does not inherit the block's context: pass it the handler."""
    handler = StreamCallbackHandler(ctx)
    _register_hook()
    token = _cell_handler.set(handler)
    try:
        yield handler
    finally:
        _cell_handler.reset(token)


__all__ = ["StreamCallbackHandler", "cell_scope"]
