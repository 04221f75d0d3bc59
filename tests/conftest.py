"""Shared fixtures: real Redis servers, unique run ids, a fresh engine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servers import LocalCluster, LocalSentinel, PrivateServer, server_binary

from dockrion_nb import InMemoryBackend
from dockrion_nb.backends.base import RunLogBackend

STRICT = os.environ.get("DOCKRION_NB_STRICT_SKIPS") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``DOCKRION_NB_STRICT_SKIPS=1`` (CI), where it fails."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ipython() -> Any:
    """The one in-process IPython shell of the test session (IPython allows one), with the
    extension loaded; test modules unload and reload it as they need."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or get_ipython()
    assert shell is not None
    return shell


@pytest.fixture
def magics_shell(ipython: Any) -> Iterator[Any]:
    """The session's shell with the extension loaded, the magics' settings at their defaults
    (other modules' tests change them) and a fresh engine; unloaded afterwards."""
    from dockrion_nb.engine import reset_engine
    from dockrion_nb.magics import StreamMagics

    ipython.run_line_magic("load_ext", "dockrion_nb")
    magics = ipython.magics_manager.registry["StreamMagics"]
    for name in StreamMagics.class_traits(config=True):
        magics.set_trait(name, StreamMagics.class_traits()[name].default_value)
    reset_engine()
    try:
        yield ipython
    finally:
        reset_engine()
        ipython.run_line_magic("unload_ext", "dockrion_nb")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` when set (CI: the machine's Redis), else a private server for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = PrivateServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """Always a private Valkey server, so the suite also runs against Valkey in CI."""
    server = PrivateServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateServer]:
    """A fresh private server for tests that stop, kill, restart or flood it."""
    server = PrivateServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id unique to this test (and this process), safe to use on the shared Redis."""
    return f"t-{uuid.uuid4().hex[:12]}"


def redis_cleanup(url: str, *run_ids: str) -> None:
    """Delete every key a test's runs created on ``url`` (one server, every master of a
    cluster, or a Sentinel's master)."""
    import redis

    from dockrion_nb.redis_urls import parse_redis_url

    target = parse_redis_url(url)
    if target.topology == "single":
        clients = [redis.Redis.from_url(url)]
    elif target.topology == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], password=target.password
        )
        try:
            clients = [
                redis.Redis(host=n.host, port=n.port, password=target.password)
                for n in cluster.get_primaries()
            ]
        finally:
            cluster.close()
    else:
        from redis.sentinel import Sentinel

        assert target.service is not None
        host, port = Sentinel(list(target.nodes)).discover_master(target.service)
        clients = [redis.Redis(host=host, port=port, db=target.db, password=target.password)]
    for client in clients:
        try:
            for rid in run_ids:
                for key in list(client.scan_iter(match=f"*{rid}*", count=1000)):
                    client.delete(key)  # one by one: on a cluster, keys live in many slots
        finally:
            client.close()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A local Redis Cluster for the session: three masters, three replicas, cluster mode,
    a password on every node (so every connection the backend makes must AUTH)."""
    require(server_binary() is not None, "no Redis-compatible server binary for a cluster")
    cluster = LocalCluster(password="cluster-pw-7")
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    """A local Sentinel deployment for the session: one master, one replica, three sentinels."""
    require(server_binary() is not None, "no Redis-compatible server binary for Sentinel")
    deployment = LocalSentinel()
    deployment.start()
    try:
        yield deployment.url
    finally:
        deployment.close()


# -- one factory per backend kind, for suites that run on every backend -------------------

BACKENDS = ["memory", "redis", "valkey", "cluster", "sentinel"]
URL_FIXTURES = {
    "redis": "redis_url",
    "valkey": "valkey_url",
    "cluster": "cluster_url",
    "sentinel": "sentinel_url",
}

Factory = Callable[..., RunLogBackend]


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Builds backends of one kind (inside the test's loop); removes Redis keys afterwards."""
    kind = request.param
    url = None
    if kind != "memory":
        url = request.getfixturevalue(URL_FIXTURES[kind])
    used: list[str] = []

    def make(max_events: int = 100_000) -> RunLogBackend:
        if url is None:
            return InMemoryBackend(max_events_per_run=max_events)
        from dockrion_nb.backends.redis import RedisBackend

        return RedisBackend(url, stream_ttl_seconds=600, max_events_per_run=max_events)

    make.kind = kind  # type: ignore[attr-defined]
    make.used = used  # type: ignore[attr-defined]
    yield make
    if url is not None and used:
        redis_cleanup(url, *used)


def new_run(factory: Factory) -> str:
    rid = f"c-{uuid.uuid4().hex[:12]}"
    factory.used.append(rid)  # type: ignore[attr-defined]
    return rid
