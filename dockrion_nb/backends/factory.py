"""``build_backend(config)``: the configured backend, or memory with a visible reason."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

from ..config import StreamingConfig
from ..redaction import masked_logger
from .base import RunLogBackend
from .memory import InMemoryBackend

log = masked_logger("dockrion_nb.backends")


class BackendFallbackWarning(UserWarning):
    """``backend: redis`` was asked for but the memory backend is used instead."""


def redis_library_error() -> str | None:
    """Why the ``redis`` library (with asyncio support) cannot be used, or None if it can."""
    try:
        importlib.import_module("redis.asyncio")
    except ImportError as exc:
        return f"the 'redis' package cannot be imported ({exc})"
    return None


def build_backend(
    config: StreamingConfig | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> RunLogBackend:
    """Build the backend a ``streaming:`` config asks for.

    With ``backend: redis`` and no usable ``redis`` library this returns an
    ``InMemoryBackend`` whose ``fallback_reason`` says why, and warns with
    ``BackendFallbackWarning`` so the user sees it where they are.
    """
    if not isinstance(config, StreamingConfig):
        config = StreamingConfig.from_mapping(config, environ=environ)
    if config.backend == "memory":
        return InMemoryBackend(
            max_events_per_run=config.max_events_per_run, max_runs=config.max_runs
        )
    redis_cfg = config.redis
    assert redis_cfg is not None  # the model creates it for backend: redis
    reason = redis_library_error()
    if reason is not None:
        message = (
            f"backend 'redis' is not available: {reason}; using the in-memory backend "
            "(events stay in this process). Install it with: pip install 'redis[hiredis]'"
        )
        warnings.warn(message, BackendFallbackWarning, stacklevel=2)
        log.warning(message)
        backend = InMemoryBackend(max_events_per_run=redis_cfg.max_events_per_run)
        backend.fallback_reason = message
        return backend
    from .redis import RedisBackend

    return RedisBackend(
        url=redis_cfg.resolved_url(environ),
        stream_ttl_seconds=redis_cfg.stream_ttl_seconds,
        max_events_per_run=redis_cfg.max_events_per_run,
        connection_pool_size=redis_cfg.connection_pool_size,
    )
