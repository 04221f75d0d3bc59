"""Backends: Dockrion's protocol, the in-memory backend, the Redis backend and the factory."""

from .base import (
    BackendClosedError,
    BackendConnectionError,
    BackendError,
    BackendPublishError,
    BackendReadError,
    BackendSubscribeError,
    EventBackend,
    RunLogBackend,
    RunSummary,
)
from .factory import BackendFallbackWarning, build_backend
from .memory import InMemoryBackend

__all__ = [
    "BackendClosedError",
    "BackendConnectionError",
    "BackendError",
    "BackendFallbackWarning",
    "BackendPublishError",
    "BackendReadError",
    "BackendSubscribeError",
    "EventBackend",
    "InMemoryBackend",
    "RunLogBackend",
    "RunSummary",
    "build_backend",
]


def __getattr__(name: str) -> object:
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(name)
