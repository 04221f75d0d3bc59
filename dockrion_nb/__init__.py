"""dockrion-nb: Dockrion's streaming event layer in Jupyter.

``%load_ext dockrion_nb`` registers the magics; the plain Python API lives here too.
"""

from __future__ import annotations

from typing import Any

from .api import (
    NoEventsError,
    RunExistsError,
    Trace,
    publish,
    publish_many,
    replay,
    runs,
    trace,
    use_backend,
    watch,
)
from .backends import BackendFallbackWarning, InMemoryBackend, build_backend
from .bus import EventBus
from .config import ConfigError, RedisStreamingConfig, StreamingConfig, load_dockfile
from .context import StreamContext, get_current_context
from .engine import get_engine, reset_engine
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
    "NoEventsError",
    "RedisStreamingConfig",
    "RunExistsError",
    "StreamContext",
    "StreamingConfig",
    "Trace",
    "__version__",
    "build_backend",
    "get_current_context",
    "get_engine",
    "load_dockfile",
    "parse_event",
    "publish",
    "publish_many",
    "replay",
    "reset_engine",
    "runs",
    "trace",
    "use_backend",
    "watch",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dockrion_nb``: register the magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dockrion_nb``: remove the magics and stop the engine."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)
