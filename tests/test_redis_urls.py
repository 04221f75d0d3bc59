"""Cluster and Sentinel URLs: what each names, and what is refused (saying why, masked).

``redis+cluster://h1:7000,h2:7001/`` names a Redis Cluster, ``redis+sentinel://h1:26379,
h2:26379/mymaster/0`` the master a set of sentinels watches; ``streaming.redis`` keeps its
fields, only the URL changes. The config checks these URLs as it checks its other fields.
"""

from __future__ import annotations

import pytest

from dockrion_nb.config import ConfigError, RedisStreamingConfig, StreamingConfig
from dockrion_nb.redis_urls import RedisURLError, parse_redis_url, topology_of

PW = "Zx9-s3cr3t"


def test_a_cluster_url_names_its_startup_nodes() -> None:
    target = parse_redis_url("redis+cluster://10.0.0.1:7000,node-b:7001,[::1]:7002/")
    assert target.topology == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("node-b", 7001), ("::1", 7002))
    assert target.pubsub == "auto" and target.db == 0


def test_a_cluster_url_takes_credentials_and_the_pubsub_mode() -> None:
    target = parse_redis_url(f"redis+cluster://app:{PW}%40x@h1,h2:7001?pubsub=classic")
    assert (target.username, target.password) == ("app", f"{PW}@x")
    assert target.nodes == (("h1", 6379), ("h2", 7001))  # the default port
    assert target.pubsub == "classic"


def test_a_sentinel_url_names_sentinels_service_and_database() -> None:
    target = parse_redis_url(
        f"redis+sentinel://:{PW}@s1:26379,s2/mymaster/3?sentinel_password=other"
    )
    assert target.topology == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26379))
    assert (target.service, target.db) == ("mymaster", 3)
    assert (target.password, target.sentinel_password) == (PW, "other")
    assert parse_redis_url("redis+sentinel://s1/mymaster").db == 0


def test_single_server_urls_are_left_to_redis_py() -> None:
    for url in ("redis://h:6379/0", "rediss://h", "unix:///tmp/r.sock"):
        assert topology_of(url) == "single"
        assert parse_redis_url(url).topology == "single"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "no host list"),
        ("redis+cluster://h1:7000,,h2:7001/", "no host list"),
        ("redis+cluster://h1:port/", "'h1:port' in redis+cluster://h1:port/ is not host:port"),
        ("redis+cluster://h1:70000/", "port 70000 of 'h1:70000'"),
        ("redis+cluster://h1:7000/2", "a Redis Cluster has one database (0), not '2'"),
        ("redis+cluster://h1:7000/?pubsub=fast", "pubsub='fast'"),
        ("redis+cluster://h1:7000/?db=1", "unknown option 'db'"),
        ("redis+sentinel://s1:26379", "no service name"),
        ("redis+sentinel://s1:26379/", "no service name"),
        ("redis+sentinel://s1/my master/0", "service name 'my master'"),
        ("redis+sentinel://s1/mymaster/zero", "database 'zero'"),
        ("rediss+cluster://h1:7000/", "TLS to a cluster or Sentinel is not supported"),
    ],
)
def test_a_bad_url_is_refused_with_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(RedisURLError) as info:
        parse_redis_url(url)
    assert says in str(info.value)


def test_a_refused_url_never_shows_its_passwords() -> None:
    for url in (
        f"redis+cluster://:{PW}@h1:7000/5",
        f"redis+sentinel://u:{PW}@s1:26379?sentinel_password={PW}",
        f"redis+cluster://u:{PW}@h1:bad/",
    ):
        with pytest.raises(RedisURLError) as info:
            parse_redis_url(url)
        assert PW not in str(info.value) and "***" in str(info.value)


def test_the_config_checks_a_cluster_url_like_its_other_fields() -> None:
    with pytest.raises(ConfigError, match=r"streaming\.redis\.url .*one database") as info:
        StreamingConfig.from_mapping(
            {"backend": "redis", "redis": {"url": f"redis+cluster://:{PW}@h1:7000/1"}}
        )
    assert PW not in str(info.value)
    with pytest.raises(ValueError, match="no service name") as err:
        RedisStreamingConfig(url=f"redis+sentinel://:{PW}@s1:26379")
    assert PW not in str(err.value)  # pydantic's own message does not quote the input


def test_the_config_accepts_both_urls_with_the_same_fields() -> None:
    for url in ("redis+cluster://h1:7000,h2:7001/", "redis+sentinel://s1,s2/mymaster/0"):
        cfg = StreamingConfig.from_mapping(
            {"backend": "redis", "redis": {"url": url, "stream_ttl_seconds": 7200}}
        )
        assert cfg.redis is not None and cfg.redis.resolved_url() == url
        assert cfg.describe()["stream_ttl_seconds"] == 7200


def test_an_expanded_url_is_checked_once_it_is_expanded() -> None:
    cfg = RedisStreamingConfig(url="${CLUSTER_URL}")  # not checked before expansion
    assert cfg.resolved_url({"CLUSTER_URL": "redis+cluster://h1:7000/"})
    with pytest.raises(ConfigError, match="no service name"):
        cfg.resolved_url({"CLUSTER_URL": f"redis+sentinel://:{PW}@s1"})
