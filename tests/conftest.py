"""Shared fixtures: real Redis servers, unique run ids, a fresh engine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from servers import PrivateServer

STRICT = os.environ.get("DOCKRION_NB_STRICT_SKIPS") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``DOCKRION_NB_STRICT_SKIPS=1`` (CI), where it fails."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


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
    """Delete every key a test's runs created on ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = []
        for rid in run_ids:
            keys += list(client.scan_iter(match=f"*{rid}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
