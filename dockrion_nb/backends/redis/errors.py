"""Redis failures: which are transient (followers retry them, with backoff), and one readable
message per failure, with the URL's password masked."""

from __future__ import annotations

import asyncio
import random

from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    InvalidResponse,
    MovedError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...redaction import scrub
from ..base import (
    BackendConnectionError,
    BackendError,
    BackendPublishError,
    BackendReadError,
)

BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0

# A cluster adds its own passing states: a slot without a master during a failover
# (CLUSTERDOWN, no node for the slot), a key moving while a slot migrates (TRYAGAIN), and
# redirections that did not settle within redis-py's redirection budget.
CLUSTER_TRANSIENT: tuple[type[BaseException], ...] = (
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ClusterError,
    MovedError,
    AskError,
)

TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    InvalidResponse,
    OSError,
    BackendConnectionError,
    *CLUSTER_TRANSIENT,
)


def backoff_delay(attempt: int, cap: float = BACKOFF_CAP) -> float:
    """Exponential, capped at ``cap`` seconds, with jitter so followers spread out."""
    return float(min(cap, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0))


def describe_failure(exc: BaseException, doing: str, *, url: str, masked_url: str) -> BackendError:
    """One readable message, password masked, for a failure while ``doing`` something."""
    if isinstance(exc, BackendError):
        return exc
    where = masked_url
    detail = scrub(str(exc) or type(exc).__name__, url).rstrip(".")
    lowered = detail.lower()
    if isinstance(exc, AuthenticationError) or lowered.startswith(("noauth", "wrongpass")):
        return BackendConnectionError(
            f"Redis at {where} rejected the credentials while {doing} ({detail}); "
            "check the user and password in the URL",
            backend="redis",
        )
    if isinstance(exc, InvalidResponse):
        return BackendConnectionError(
            f"the server at {where} does not answer like Redis while {doing} ({detail}); "
            "check the host and port",
            backend="redis",
        )
    if isinstance(exc, RedisTimeoutError | asyncio.TimeoutError | TimeoutError):
        return BackendConnectionError(
            f"Redis at {where} did not answer in time while {doing} ({detail})",
            backend="redis",
        )
    if isinstance(exc, RedisConnectionError | OSError):
        if "111" in detail or "refused" in lowered or "connect call failed" in lowered:
            reason = "connection refused; is the server running and the URL right?"
        elif "closed by server" in lowered:
            reason = "the server closed the connection; is this a Redis port?"
        else:
            reason = detail
        return BackendConnectionError(
            f"cannot reach Redis at {where} while {doing}: {reason}", backend="redis"
        )
    if isinstance(exc, ResponseError):
        kind = BackendPublishError if doing.startswith("publishing") else BackendReadError
        if "WRONGTYPE" in detail:
            return kind(
                f"Redis at {where} holds a key of another kind (not a stream) where the run's "
                f"events belong, while {doing}: something other than a Dockrion writer made "
                "it; delete the key or use another run id",
                backend="redis",
            )
        return kind(f"Redis at {where} refused a command while {doing}: {detail}", backend="redis")
    return BackendError(f"Redis at {where} failed while {doing}: {detail}", backend="redis")
