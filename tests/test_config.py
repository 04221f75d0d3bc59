"""The seed's configuration table, row by row, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockrion_nb.config import (
    ConfigError,
    RedisStreamingConfig,
    StreamingConfig,
    expand_env,
    load_dockfile,
)


def test_defaults_match_the_seed_table() -> None:
    cfg = StreamingConfig()
    assert cfg.backend == "memory"
    assert cfg.redis is None
    r = RedisStreamingConfig()
    assert r.url == "${REDIS_URL}"
    assert r.stream_ttl_seconds == 3600
    assert r.max_events_per_run == 1000
    assert r.connection_pool_size == 10


def test_backend_redis_without_section_gets_default_redis_section() -> None:
    cfg = StreamingConfig.from_mapping({"backend": "redis"})
    assert cfg.redis == RedisStreamingConfig()


def test_explicit_redis_section_is_kept() -> None:
    cfg = StreamingConfig.from_mapping(
        {"backend": "redis", "redis": {"url": "redis://h:1/2", "stream_ttl_seconds": 60}}
    )
    assert cfg.redis is not None
    assert cfg.redis.url == "redis://h:1/2"
    assert cfg.redis.stream_ttl_seconds == 60


@pytest.mark.parametrize("ttl", [60, 61, 604_799, 604_800])
def test_ttl_inside_range_is_accepted(ttl: int) -> None:
    assert RedisStreamingConfig(stream_ttl_seconds=ttl).stream_ttl_seconds == ttl


@pytest.mark.parametrize("ttl", [59, 0, -1, 604_801])
def test_ttl_outside_range_names_field_value_and_range(ttl: int) -> None:
    with pytest.raises(ConfigError) as info:
        StreamingConfig.from_mapping({"backend": "redis", "redis": {"stream_ttl_seconds": ttl}})
    msg = str(info.value)
    assert "stream_ttl_seconds" in msg and str(ttl) in msg and "60..604800" in msg


@pytest.mark.parametrize("n", [10, 11, 99_999, 100_000])
def test_max_events_inside_range_is_accepted(n: int) -> None:
    assert RedisStreamingConfig(max_events_per_run=n).max_events_per_run == n


@pytest.mark.parametrize("n", [9, 0, 100_001])
def test_max_events_outside_range_is_rejected_with_range(n: int) -> None:
    with pytest.raises(ConfigError) as info:
        StreamingConfig.from_mapping({"backend": "redis", "redis": {"max_events_per_run": n}})
    assert "max_events_per_run" in str(info.value) and "10..100000" in str(info.value)


def test_pool_size_must_be_positive() -> None:
    assert RedisStreamingConfig(connection_pool_size=1).connection_pool_size == 1
    with pytest.raises(ConfigError, match=r"connection_pool_size = 0 .*at least 1"):
        StreamingConfig.from_mapping({"backend": "redis", "redis": {"connection_pool_size": 0}})


def test_unknown_backend_is_rejected_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="'kafka' is not a backend: use 'memory' or 'redis'"):
        StreamingConfig.from_mapping({"backend": "kafka"})


def test_non_integer_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="stream_ttl_seconds"):
        StreamingConfig.from_mapping({"backend": "redis", "redis": {"stream_ttl_seconds": "soon"}})


def test_dockfile_keys_we_do_not_use_are_accepted() -> None:
    cfg = StreamingConfig.from_mapping(
        {
            "async_runs": True,
            "backend": "memory",
            "allow_client_ids": False,
            "events": {"allowed": "chat", "heartbeat_interval": 15},
            "connection": {"default_timeout": 300},
        }
    )
    assert cfg.backend == "memory"
    assert cfg.model_extra is not None and cfg.model_extra["events"]["allowed"] == "chat"


def test_env_expansion_set_unset_and_default() -> None:
    env = {"REDIS_URL": "redis://x:1/0", "EMPTY": ""}
    assert expand_env("${REDIS_URL}", env) == "redis://x:1/0"
    assert expand_env("${MISSING:-redis://localhost:6379}", env) == "redis://localhost:6379"
    assert expand_env("${REDIS_URL:-redis://other}", env) == "redis://x:1/0"
    assert expand_env("${EMPTY:-fallback}", env) == "fallback"
    assert expand_env("pre-${REDIS_URL}-post", env) == "pre-redis://x:1/0-post"
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE is not set"):
        expand_env("${NOT_SET_ANYWHERE}", env)


def test_env_expansion_applies_to_the_redis_url_in_a_mapping() -> None:
    cfg = StreamingConfig.from_mapping(
        {"backend": "redis", "redis": {"url": "${REDIS_URL:-redis://localhost:6379}"}},
        environ={},
    )
    assert cfg.redis is not None and cfg.redis.url == "redis://localhost:6379"


def test_default_url_needs_redis_url_when_resolved() -> None:
    cfg = StreamingConfig.from_mapping({"backend": "redis"})
    assert cfg.redis is not None
    assert cfg.redis.resolved_url({"REDIS_URL": "redis://a:1"}) == "redis://a:1"
    with pytest.raises(ConfigError, match="REDIS_URL"):
        cfg.redis.resolved_url({})


def test_dockfile_round_trip(tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text(
        "version: '1.0'\n"
        "agent:\n  name: invoice\n"
        "streaming:\n"
        "  async_runs: true\n"
        "  backend: redis\n"
        "  redis:\n"
        "    url: ${REDIS_URL:-redis://localhost:6379}\n"
        "    stream_ttl_seconds: 7200\n"
        "    max_events_per_run: 500\n"
        "    connection_pool_size: 4\n"
        "  events:\n    allowed: [token, step]\n"
    )
    cfg = load_dockfile(dockfile, environ={})
    assert cfg.backend == "redis"
    assert cfg.redis == RedisStreamingConfig(
        url="redis://localhost:6379",
        stream_ttl_seconds=7200,
        max_events_per_run=500,
        connection_pool_size=4,
    )
    again = StreamingConfig.from_mapping(cfg.model_dump())
    assert again == cfg


def test_dockfile_without_streaming_section_is_the_default(tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text("agent:\n  name: x\n")
    assert load_dockfile(dockfile) == StreamingConfig()


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text("streaming:\n  backend: redis\n   redis: [\n")
    with pytest.raises(ConfigError, match=r"Dockfile\.yaml is not valid YAML at line \d+"):
        load_dockfile(dockfile)


def test_missing_dockfile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Dockfile not found"):
        load_dockfile(tmp_path / "nope.yaml")


def test_invalid_value_in_dockfile_names_the_file(tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text("streaming:\n  backend: redis\n  redis:\n    stream_ttl_seconds: 5\n")
    with pytest.raises(ConfigError, match=r"Dockfile\.yaml: streaming\.redis\.stream_ttl_seconds"):
        load_dockfile(dockfile)


def test_describe_masks_the_password() -> None:
    cfg = StreamingConfig.from_mapping(
        {"backend": "redis", "redis": {"url": "redis://user:s3cret@host:6379/0"}}
    )
    shown = cfg.describe()
    assert shown["url"] == "redis://user:***@host:6379/0"
    assert "s3cret" not in repr(shown)


def test_dockrion_schema_accepts_what_we_accept() -> None:
    """Our model and Dockrion's agree on a full section (the peer package is installed)."""
    from dockrion_schema.dockfile_v1 import StreamingConfig as TheirConfig

    section = {"backend": "redis", "redis": {"url": "redis://h:6379", "stream_ttl_seconds": 120}}
    theirs = TheirConfig.model_validate(section)
    ours = StreamingConfig.from_mapping(section)
    assert ours.redis is not None and theirs.redis is not None
    for field in ("url", "stream_ttl_seconds", "max_events_per_run", "connection_pool_size"):
        assert getattr(ours.redis, field) == getattr(theirs.redis, field)


# -- odd input ---------------------------------------------------------------------------------


def test_a_dockfile_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockfile.yaml"
    path.write_bytes(b"streaming:\n  backend: m\xe9mory\n")
    with pytest.raises(
        ConfigError, match=r"Dockfile .*Dockfile.yaml is not UTF-8 text \(byte 0xe9 at"
    ):
        load_dockfile(path)


@pytest.mark.parametrize(
    "field", ["stream_ttl_seconds", "max_events_per_run", "connection_pool_size"]
)
def test_a_boolean_is_not_a_number(field: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"streaming.redis.{field} = True: must be an integer, not a boolean"
    ):
        StreamingConfig.from_mapping({"backend": "redis", "redis": {field: True}})
    with pytest.raises(
        ConfigError, match=r"streaming.max_events_per_run = False: must be an integer"
    ):
        StreamingConfig.from_mapping({"max_events_per_run": False})


def test_an_empty_redis_url_variable_is_named() -> None:
    cfg = StreamingConfig.from_mapping({"backend": "redis"}, environ={"REDIS_URL": ""})
    assert cfg.redis is not None
    with pytest.raises(ConfigError, match=r"environment variable REDIS_URL is set but empty"):
        cfg.redis.resolved_url({"REDIS_URL": ""})
    assert cfg.redis.resolved_url({"REDIS_URL": "redis://h"}) == "redis://h"
    with pytest.raises(ConfigError, match=r"streaming.redis.url is empty"):
        RedisStreamingConfig(url="").resolved_url({})


def test_memory_max_runs_is_a_setting() -> None:
    cfg = StreamingConfig.from_mapping({"backend": "memory", "max_runs": 50})
    assert cfg.max_runs == 50
    with pytest.raises(
        ConfigError, match=r"streaming.max_runs = 0 is out of range: must be at least 1"
    ):
        StreamingConfig.from_mapping({"max_runs": 0})
