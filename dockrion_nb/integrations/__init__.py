"""Outside sources feeding the live view with no hand-written emits.

One module per source, each importing its framework lazily and installed as an optional extra:

- ``langchain``: ``StreamCallbackHandler`` for LangChain and LangGraph (``[langchain]``)
- ``openai`` / ``anthropic`` / ``instrument``: the provider SDKs' clients (``[openai]``,
  ``[anthropic]``), on ``llm_client`` (the SDKs' request path wrapped), ``llm_stream`` (a
  stream followed as it is read) and ``llm_call`` (one API call as a step); these three import
  no SDK
- ``otel``: OpenTelemetry spans in (``SpanEventProcessor``) and runs out as spans (``[otel]``)
- ``dockrion_server``: a running Dockrion server's runs over its HTTP/SSE API (``[server]``)

Each turns its source's own signals into ``StreamContext`` calls through ``steps.StepTracker``,
so every source writes steps, usage and errors the same way. ``import dockrion_nb`` imports
none of them; a module here is imported when it is first used.

``cell_scope(ctx, names)`` is what ``%%publish RUN --langchain --instrument`` (and
``trace(..., integrations=[...])``) enter around the traced code: each name's module offers a
``cell_scope(ctx)`` context manager that covers everything the block runs.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import StreamContext

# name -> (module, the pip extra that brings its framework)
CELL_SCOPES: dict[str, tuple[str, str]] = {
    "langchain": ("dockrion_nb.integrations.langchain", "langchain"),
    # openai or anthropic: the module itself names both when neither is installed
    "instrument": ("dockrion_nb.integrations.instrument", "openai"),
}


class IntegrationUnavailableError(ImportError):
    """An integration's framework is not installed; the message says what to install."""


def load_module(module: str, extra: str, what: str) -> object:
    """Import an integration module, turning a missing framework into one clear error."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dockrion_nb"):
            raise
        raise IntegrationUnavailableError(
            f'{what} needs the {exc.name!r} package: pip install "dockrion-nb[{extra}]"'
        ) from None


@contextlib.contextmanager
def cell_scope(ctx: StreamContext, names: Iterable[str]) -> Iterator[None]:
    """Enter each named integration's ``cell_scope(ctx)`` for the length of the block."""
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in CELL_SCOPES]
    if unknown:
        raise ValueError(
            f"unknown integration {unknown[0]!r}: use one of {', '.join(sorted(CELL_SCOPES))}"
        )
    with contextlib.ExitStack() as stack:
        for name in wanted:
            module, extra = CELL_SCOPES[name]
            mod = load_module(module, extra, f"--{name}")
            stack.enter_context(mod.cell_scope(ctx))  # type: ignore[attr-defined]
        yield


__all__ = ["CELL_SCOPES", "IntegrationUnavailableError", "cell_scope", "load_module"]
