"""Key and channel names, shared with ``dockrion_events`` so each side reads the other's runs."""

from __future__ import annotations

STREAM_PREFIX = "stream:run:"
CHANNEL_PREFIX = "events:run:"
COUNTER_PREFIX = "seq:run:"
RUNSTATE_PREFIX = "runstate:run:"  # a run's state hash (``runstate``), ours only


def stream_key(run_id: str) -> str:
    return f"{STREAM_PREFIX}{run_id}"


def pubsub_channel(run_id: str) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


def counter_key(run_id: str) -> str:
    return f"{COUNTER_PREFIX}{run_id}"


def runstate_key(run_id: str) -> str:
    return f"{RUNSTATE_PREFIX}{run_id}"
