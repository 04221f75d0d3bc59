"""One door for both provider SDKs: ``instrument(client)`` and ``%%publish --instrument``.

``instrument(client, ctx=None)`` hands an OpenAI or Anthropic client to its integration
(``openai.py`` / ``anthropic.py``) by the client's class, importing only that SDK.
``cell_scope(ctx)``, which ``%%publish RUN --instrument`` and ``trace(RUN,
integrations=["instrument"])`` enter, traces every client of each installed SDK for the
block, the clients the block creates included. Either SDK alone is enough; this module
refuses to load (with what to install) only when neither is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType
from typing import Any, TypeVar

from ..context import StreamContext
from . import IntegrationUnavailableError
from .llm_client import instrument_client, uninstrument_client

ClientT = TypeVar("ClientT")

# SDK package -> our module for it
PROVIDERS: dict[str, str] = {
    "openai": "dockrion_nb.integrations.openai",
    "anthropic": "dockrion_nb.integrations.anthropic",
}


def installed_sdks() -> list[str]:
    """The provider SDKs importable here, without importing them."""
    found = []
    for name in PROVIDERS:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


if not installed_sdks():
    raise IntegrationUnavailableError(
        "--instrument and instrument() need the openai or the anthropic package: "
        'pip install "dockrion-nb[openai]" or "dockrion-nb[anthropic]"'
    )


def _integration(client: Any) -> ModuleType:
    for klass in type(client).__mro__:
        package = klass.__module__.partition(".")[0]
        if package in PROVIDERS:
            return importlib.import_module(PROVIDERS[package])
    raise TypeError(
        "instrument() takes an OpenAI or Anthropic client (openai.OpenAI, openai.AsyncOpenAI, "
        f"anthropic.Anthropic, anthropic.AsyncAnthropic), not "
        f"{type(client).__module__}.{type(client).__qualname__}"
    )


def instrument(client: ClientT, ctx: StreamContext | None = None) -> ClientT:
    """Trace an OpenAI or Anthropic client's LLM calls; returns the same client.

    ``ctx=None``: each call goes to the run current where it is made (``%%publish``,
    ``trace()``), and a call outside any run passes through untouched. A ``ctx`` pins the
    client to that run. Idempotent; ``uninstrument(client)`` undoes it.
    """
    sdk = _integration(client).SDK
    return instrument_client(client, sdk, ctx, "instrument()")


def uninstrument(client: Any) -> bool:
    """Stop tracing a client ``instrument`` wrapped; False if it was not instrumented."""
    return uninstrument_client(client)


@contextlib.contextmanager
def cell_scope(ctx: StreamContext) -> Iterator[None]:
    """Trace every installed SDK's clients for the block (its own thread or task only)."""
    with contextlib.ExitStack() as stack:
        for name in installed_sdks():
            module = importlib.import_module(PROVIDERS[name])
            stack.enter_context(module.cell_scope(ctx))
        yield


__all__ = ["PROVIDERS", "cell_scope", "installed_sdks", "instrument", "uninstrument"]
