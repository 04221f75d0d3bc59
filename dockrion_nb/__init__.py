"""dockrion-nb: Dockrion's streaming event layer in Jupyter.

``%load_ext dockrion_nb`` registers the magics; the plain Python API lives here too.
"""

from __future__ import annotations

from typing import Any

from .backends import BackendFallbackWarning, InMemoryBackend, build_backend
from .bus import EventBus
from .config import ConfigError, RedisStreamingConfig, StreamingConfig, load_dockfile
from .context import StreamContext, get_current_context
from .events import BaseEvent, parse_event
from .filters import EventsFilter

__version__ = "0.1.0"

__all__ = [
    "BackendFallbackWarning",
    "BaseEvent",
    "ConfigError",
    "EventBus",
    "EventsFilter",
    "InMemoryBackend",
    "RedisStreamingConfig",
    "StreamContext",
    "StreamingConfig",
    "__version__",
    "build_backend",
    "get_current_context",
    "load_dockfile",
    "parse_event",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dockrion_nb``: register the magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload_ipython_extension as unload

    unload(ipython)
