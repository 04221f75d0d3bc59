"""Key and channel names, shared with ``dockrion_events`` so each side reads the other's runs,
and where they live on a Redis Cluster.

One server: the stream ``stream:run:{id}``, the channel ``events:run:{id}`` (both Dockrion's),
our counter ``seq:run:{id}`` and run-state hash ``runstate:run:{id}``.

A cluster runs a script on one hash slot only, and Dockrion's stream name has no hash tag, so
the stream keeps its name (Dockrion's readers and writers find it) and what the append script
touches besides is named into the stream's slot with a hash tag holding the stream's name: the
counter ``seq:run:{stream:run:ID}``, the run state ``runstate:run:{stream:run:ID}`` and, with
sharded Pub/Sub, the channel ``events:run:{stream:run:ID}`` (SPUBLISH from a script must stay
in its slot). Classic Pub/Sub
keeps Dockrion's channel name, which a cluster broadcasts to every node.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from functools import lru_cache

STREAM_PREFIX = "stream:run:"
CHANNEL_PREFIX = "events:run:"
COUNTER_PREFIX = "seq:run:"
RUNSTATE_PREFIX = "runstate:run:"  # a run's state hash (``runstate``), ours only
SLOTS = 16384


def stream_key(run_id: str) -> str:
    return f"{STREAM_PREFIX}{run_id}"


def pubsub_channel(run_id: str) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


def counter_key(run_id: str) -> str:
    return f"{COUNTER_PREFIX}{run_id}"


def runstate_key(run_id: str) -> str:
    return f"{RUNSTATE_PREFIX}{run_id}"


def hashed_part(key: str) -> str:
    """The part of ``key`` a cluster hashes: the first non-empty ``{...}``, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    """The hash slot of ``key`` (CRC16/XMODEM of its hashed part, as Redis computes it)."""
    return binascii.crc_hqx(hashed_part(key).encode(), 0) % SLOTS


@lru_cache(maxsize=1024)
def _tag_for_slot(slot: int) -> str:
    """A short hash tag that lands in ``slot`` (found by trying numbers: a few ms at most)."""
    n = 0
    while key_slot(f"{{{n}}}") != slot:
        n += 1
    return str(n)


def colocated(prefix: str, key: str) -> str:
    """A name that starts with ``prefix`` and lives in ``key``'s hash slot: ``prefix{key}``
    when ``key`` is hashed whole (every key we write: run ids have no braces), else a tag in
    the same slot followed by ``key`` (so the name stays unique)."""
    part = hashed_part(key)
    if "}" not in part and "{" not in part:
        return f"{prefix}{{{part}}}" if part == key else f"{prefix}{{{part}}}{key}"
    return f"{prefix}{{{_tag_for_slot(key_slot(key))}}}{key}"


def _unwrap(name: str) -> str:
    """``{stream:run:ID}`` -> ``ID`` (what ``colocated`` wraps a run's stream name in)."""
    if name.startswith("{") and name.endswith("}") and name[1:].startswith(STREAM_PREFIX):
        return name[1 + len(STREAM_PREFIX) : -1]
    return name


@dataclass(frozen=True)
class KeyLayout:
    """Where one backend keeps a run's counter and state and sends its live events."""

    cluster: bool = False
    sharded: bool = False  # SPUBLISH/SSUBSCRIBE (a cluster's sharded Pub/Sub) instead of classic

    def stream(self, run_id: str) -> str:
        return stream_key(run_id)

    def counter(self, run_id: str) -> str:
        if self.cluster:
            return colocated(COUNTER_PREFIX, stream_key(run_id))
        return counter_key(run_id)

    def runstate(self, run_id: str) -> str:
        if self.cluster:
            return colocated(RUNSTATE_PREFIX, stream_key(run_id))
        return runstate_key(run_id)

    def run_of_runstate(self, key: str) -> str:
        """The run id of a run-state hash of this layout."""
        return _unwrap(key[len(RUNSTATE_PREFIX) :]) if self.cluster else key[len(RUNSTATE_PREFIX) :]

    def channel(self, run_id: str) -> str:
        if self.sharded:
            return colocated(CHANNEL_PREFIX, stream_key(run_id))
        return pubsub_channel(run_id)

    def run_of_channel(self, channel: str) -> str:
        """The run id a channel of this layout belongs to."""
        name = channel[len(CHANNEL_PREFIX) :]
        return _unwrap(name) if self.sharded else name

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def describe(self) -> str:
        if not self.cluster:
            return "one server"
        return "cluster, sharded Pub/Sub" if self.sharded else "cluster, classic Pub/Sub"


SINGLE_SERVER = KeyLayout()
