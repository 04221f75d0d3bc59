"""Streaming configuration: the seed's schema, ``${VAR:-default}`` expansion, Dockfile loading.

The models mirror Dockrion's ``streaming:`` section field for field, so a Dockfile that Dockrion
accepts loads here too; keys we do not use (``async_runs``, ``events``, ``connection`` ...) are
kept, not rejected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .redaction import mask_url, scrub
from .redis_urls import RedisURLError, parse_redis_url

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

TTL_RANGE = (60, 604_800)
MAX_EVENTS_RANGE = (10, 100_000)


class ConfigError(ValueError):
    """A configuration a user must fix; the message names the field, the value and the rule
    (with any password masked: a misplaced URL is quoted as the bad value)."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from the environment.

    An unset ``${VAR}`` without a default is an error that names the variable, because a
    silently empty Redis URL would only fail later with a far less helpful message.
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set (used as ${{{name}}}); set it, "
            f"or give a default: ${{{name}:-redis://localhost:6379}}"
        )

    return _VAR.sub(substitute, text)


def _expand_tree(value: Any, environ: Mapping[str, str] | None) -> Any:
    if isinstance(value, str):
        return expand_env(value, environ)
    if isinstance(value, list):
        return [_expand_tree(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand_tree(v, environ) for k, v in value.items()}
    return value


def _no_bool(value: Any) -> Any:
    """``true`` in YAML is not 1: a boolean where a number belongs is a mistake to report."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


NotBool = BeforeValidator(_no_bool)


class RedisStreamingConfig(BaseModel):
    """``streaming.redis``: exactly the seed's table. ``url`` also names a Redis Cluster
    (``redis+cluster://h1:7000,h2:7001/``) or a Sentinel-managed master
    (``redis+sentinel://h1:26379,h2:26379/mymaster/0``); the other fields mean the same there."""

    # Errors never quote the input: a misplaced URL would show its password.
    model_config = ConfigDict(extra="allow", validate_assignment=True, hide_input_in_errors=True)

    url: str = "${REDIS_URL}"
    stream_ttl_seconds: Annotated[int, NotBool] = Field(
        default=3600, ge=TTL_RANGE[0], le=TTL_RANGE[1], strict=False
    )
    max_events_per_run: Annotated[int, NotBool] = Field(
        default=1000, ge=MAX_EVENTS_RANGE[0], le=MAX_EVENTS_RANGE[1], strict=False
    )
    connection_pool_size: Annotated[int, NotBool] = Field(default=10, ge=1)

    @field_validator("url")
    @classmethod
    def _known_deployment(cls, url: str) -> str:
        """A cluster or Sentinel URL is checked here (``${VAR}``s once they are expanded);
        redis-py checks a single server's URL when the backend is built."""
        if "${" not in url:
            parse_redis_url(url)  # RedisURLError (a ValueError) says what is wrong
        return url

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name == "url" and isinstance(value, str) else value

    def resolved_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL with ``${VAR}`` expanded; raises ``ConfigError`` naming an unset or empty
        variable (an empty URL would only fail later, far less clearly)."""
        url = expand_env(self.url, environ)
        if url.strip():
            try:
                parse_redis_url(url)
            except RedisURLError as exc:
                raise ConfigError(f"streaming.redis.url: {exc}") from None
            return url
        env = os.environ if environ is None else environ
        empty = [m.group(1) for m in _VAR.finditer(self.url) if env.get(m.group(1)) == ""]
        if empty:
            raise ConfigError(
                f"environment variable {empty[0]} is set but empty (used as ${{{empty[0]}}} in "
                "streaming.redis.url); set it to a Redis URL, e.g. redis://localhost:6379/0"
            )
        raise ConfigError(
            "streaming.redis.url is empty: give a Redis URL, e.g. redis://localhost:6379/0"
        )


class StreamingConfig(BaseModel):
    """``streaming:``: the backend choice and its settings."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    backend: Literal["memory", "redis"] = "memory"
    redis: RedisStreamingConfig | None = None
    # Not in Dockrion's schema: the memory backend's trim limit (Dockrion hard-codes 1000) and
    # how many runs it keeps (None: every run until cleared; else the least recently written
    # run is evicted, with a log line).
    max_events_per_run: Annotated[int, NotBool] = Field(
        default=1000, ge=MAX_EVENTS_RANGE[0], le=MAX_EVENTS_RANGE[1]
    )
    max_runs: Annotated[int, NotBool] | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _redis_section(self) -> StreamingConfig:
        if self.backend == "redis" and self.redis is None:
            self.redis = RedisStreamingConfig()
        return self

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | None,
        *,
        environ: Mapping[str, str] | None = None,
        source: str = "streaming",
    ) -> StreamingConfig:
        """Validate a ``streaming:`` mapping, expanding environment variables first."""
        raw = _expand_tree(dict(data or {}), environ)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, source)) from None

    def describe(self) -> dict[str, Any]:
        """Settings fit to show a user: the Redis URL with its password masked."""
        out: dict[str, Any] = {"backend": self.backend}
        if self.backend == "memory":
            out["max_events_per_run"] = self.max_events_per_run
            if self.max_runs is not None:
                out["max_runs"] = self.max_runs
        if self.redis is not None and self.backend == "redis":
            try:
                url = self.redis.resolved_url()
            except ConfigError:
                url = self.redis.url
            out.update(
                url=mask_url(url),
                stream_ttl_seconds=self.redis.stream_ttl_seconds,
                max_events_per_run=self.redis.max_events_per_run,
                connection_pool_size=self.redis.connection_pool_size,
            )
        return out


_RANGES = {
    "stream_ttl_seconds": TTL_RANGE,
    "max_events_per_run": MAX_EVENTS_RANGE,
}


def describe_validation_error(exc: ValidationError, source: str = "streaming") -> str:
    """One readable line per bad field: where, what was given, what is allowed."""
    lines = []
    for item in exc.errors():
        loc = ".".join(str(p) for p in item["loc"])
        field = str(item["loc"][-1]) if item["loc"] else ""
        where = f"{source}.{loc}" if loc else source
        given = item.get("input")
        if field in _RANGES and item["type"] in {
            "greater_than_equal",
            "less_than_equal",
        }:
            lo, hi = _RANGES[field]
            lines.append(f"{where} = {given!r} is out of range: allowed {lo}..{hi}")
        elif field in ("connection_pool_size", "max_runs") and item["type"] == "greater_than_equal":
            lines.append(f"{where} = {given!r} is out of range: must be at least 1")
        elif field == "backend":
            lines.append(f"{where} = {given!r} is not a backend: use 'memory' or 'redis'")
        else:
            lines.append(f"{where} = {given!r}: {item['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(lines)


def load_dockfile(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> StreamingConfig:
    """Load the ``streaming:`` section of a Dockfile (YAML); a missing section is the default."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Dockfile not found: {p}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Dockfile {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read Dockfile {p}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"Dockfile {p} is not valid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"Dockfile {p} must be a YAML mapping, not {type(doc).__name__}")
    section = doc.get("streaming")
    if section is None:
        return StreamingConfig()
    if not isinstance(section, dict):
        raise ConfigError(f"'streaming' in {p} must be a mapping, not {type(section).__name__}")
    return StreamingConfig.from_mapping(section, environ=environ, source=f"{p.name}: streaming")
