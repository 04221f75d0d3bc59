"""Dockrion's run models: ``RunStatus``, ``Run`` (a run's record) and ``RunCreateResponse``.

``RunStatus`` mixes in ``str`` as Dockrion's does, so ``str(RunStatus.RUNNING)`` (shown in
its error messages) reads the same on both sides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, field_serializer


class RunStatus(str, Enum):  # noqa: UP042 - Dockrion's: str() is "RunStatus.RUNNING", as in its errors
    """Status of a run."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Run(BaseModel):
    """One run's record: status, times, result or error, metadata (Dockrion's model)."""

    run_id: str
    status: RunStatus = RunStatus.ACCEPTED
    created_at: datetime = Field(default_factory=_utc_now)
    completed_at: datetime | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_serializer("created_at", "completed_at")
    def _iso(self, value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    @field_serializer("status")
    def _status_value(self, value: RunStatus) -> str:
        return value.value

    def to_response(self) -> dict[str, Any]:
        """The JSON body Dockrion's ``GET /runs/{run_id}`` answers with."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "output": self.output,
            "error": self.error,
            "metadata": self.metadata,
        }


class RunCreateResponse(BaseModel):
    """Dockrion's answer to ``POST /runs``."""

    run_id: str
    status: str = "accepted"
    events_url: str
    created_at: datetime

    @field_serializer("created_at")
    def _iso(self, value: datetime) -> str:
        return value.isoformat()


__all__ = ["FINISHED", "Run", "RunCreateResponse", "RunStatus"]
