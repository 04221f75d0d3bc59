"""dockrion-nb: Dockrion's streaming event layer in Jupyter.

``%load_ext dockrion_nb`` registers the magics; the plain Python API lives here too. Every
public name of ``dockrion_events`` 0.0.3 is importable from here as well (``RedisBackend``
lazily, as there), so Dockrion code switches by changing its import.
"""

from __future__ import annotations

from typing import Any

from .api import (
    NoEventsError,
    RunExistsError,
    Trace,
    compare,
    publish,
    publish_many,
    replay,
    runs,
    trace,
    use_backend,
    watch,
)
from .backends import BackendFallbackWarning, EventBackend, InMemoryBackend, build_backend
from .bus import EventBus
from .config import ConfigError, RedisStreamingConfig, StreamingConfig, load_dockfile
from .context import StreamContext, context_scope, get_current_context, set_current_context
from .engine import get_engine, reset_engine
from .events import (
    BaseEvent,
    CancelledEvent,
    CheckpointEvent,
    CompleteEvent,
    ErrorEvent,
    HeartbeatEvent,
    ProgressEvent,
    StartedEvent,
    StepEvent,
    TokenEvent,
    parse_event,
)
from .filters import EventsFilter
from .models import is_terminal_event
from .runs import Run, RunManager, RunStatus
from .streaming import LangGraphBackend, QueueBackend, StreamingBackend

__version__ = "0.1.0"

__all__ = [
    "BackendFallbackWarning",
    "BaseEvent",
    "CancelledEvent",
    "CheckpointEvent",
    "CompleteEvent",
    "ConfigError",
    "ErrorEvent",
    "EventBackend",
    "EventBus",
    "EventsFilter",
    "HeartbeatEvent",
    "InMemoryBackend",
    "LangGraphBackend",
    "NoEventsError",
    "ProgressEvent",
    "QueueBackend",
    "RedisStreamingConfig",
    "Run",
    "RunExistsError",
    "RunManager",
    "RunStatus",
    "StartedEvent",
    "StepEvent",
    "StreamContext",
    "StreamingBackend",
    "StreamingConfig",
    "TokenEvent",
    "Trace",
    "__version__",
    "build_backend",
    "compare",
    "context_scope",
    "get_current_context",
    "get_engine",
    "is_terminal_event",
    "load_dockfile",
    "parse_event",
    "publish",
    "publish_many",
    "replay",
    "reset_engine",
    "runs",
    "set_current_context",
    "trace",
    "use_backend",
    "watch",
]


def __getattr__(name: str) -> Any:
    """``RedisBackend`` on first use, as ``dockrion_events`` does (``redis`` loads then)."""
    if name == "RedisBackend":
        from .backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dockrion_nb``: register the magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dockrion_nb``: remove the magics and stop the engine."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)
