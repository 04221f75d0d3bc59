"""The options a user typed (flags, ``%config`` defaults, a Dockfile) as a ``StreamingConfig``.

One function so ``%stream_backend``, ``use_backend`` and the CLI's ``--backend/--url/...``
flags accept the same options, apply the same precedence and fail with the same messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .config import ConfigError, StreamingConfig, load_dockfile

REDIS_ONLY_OPTIONS = ("url", "ttl", "pool_size")


def build_config(
    backend: str | None = None,
    *,
    url: str | None = None,
    ttl: int | None = None,
    max_events: int | None = None,
    pool_size: int | None = None,
    max_runs: int | None = None,
    dockfile: str | os.PathLike[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StreamingConfig:
    """A validated ``StreamingConfig`` from the options a user typed.

    ``dockfile`` loads a Dockfile's ``streaming:`` section; the other options override it.
    Without ``backend``, a ``url`` means Redis and nothing means memory. ``defaults`` supplies
    ``redis_url``, ``stream_ttl_seconds``, ``max_events_per_run`` and ``connection_pool_size``
    for options not given (the magics' ``%config`` settings). Raises ``ConfigError``.
    """
    defaults = defaults or {}
    if dockfile is not None:
        base = load_dockfile(dockfile, environ=environ).model_dump(exclude_none=True)
        chosen = backend or base.get("backend", "memory")
    else:
        base = {}
        chosen = backend or ("redis" if url else "memory")
    if chosen not in ("memory", "redis"):
        raise ConfigError(f"unknown backend {chosen!r}: use 'memory' or 'redis'")
    data: dict[str, Any] = {**base, "backend": chosen}
    if chosen == "memory":
        given = [
            name
            for name, v in zip(REDIS_ONLY_OPTIONS, (url, ttl, pool_size), strict=True)
            if v is not None
        ]
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise ConfigError(f"{flags} {verb} only to the redis backend (backend is memory)")
        if max_events is not None:
            data["max_events_per_run"] = max_events
        elif "max_events_per_run" in defaults and dockfile is None:
            data["max_events_per_run"] = defaults["max_events_per_run"]
        if max_runs is not None:
            data["max_runs"] = max_runs
        data.pop("redis", None)
    else:
        if max_runs is not None:
            raise ConfigError("--max-runs applies only to the memory backend (backend is redis)")
        redis: dict[str, Any] = dict(data.get("redis") or {})
        from_file = dockfile is not None and bool(redis)
        for key, value, default_key in (
            ("url", url, "redis_url"),
            ("stream_ttl_seconds", ttl, "stream_ttl_seconds"),
            ("max_events_per_run", max_events, "max_events_per_run"),
            ("connection_pool_size", pool_size, "connection_pool_size"),
        ):
            if value is not None:
                redis[key] = value
            elif default_key in defaults and not (from_file and key in redis):
                redis[key] = defaults[default_key]
        data["redis"] = redis
    source = f"{os.fspath(dockfile)}: streaming" if dockfile is not None else "streaming"
    cfg = StreamingConfig.from_mapping(data, environ=environ, source=source)
    if cfg.backend == "redis" and cfg.redis is not None:
        cfg.redis.resolved_url(environ)  # an unset ${REDIS_URL} is reported now, not later
    return cfg
