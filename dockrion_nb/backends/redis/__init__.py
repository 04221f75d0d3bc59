"""Redis backend: Dockrion's wire format, one round trip per publish, gapless resilient follow.

Layout (identical to ``dockrion_events.backends.redis``, so each side reads what the other
writes): every event is an entry of the stream ``stream:run:{run_id}`` with the fields ``data``
(the event JSON), ``sequence`` and ``type``, and is published as JSON on the channel
``events:run:{run_id}``. We add one key, ``seq:run:{run_id}`` (not matched by ``stream:run:*``),
the run's sequence counter.

What we do beyond the reference, and why:

- ``append`` runs one Lua script per batch: it assigns sequences on the server (so writers in
  different processes never collide), XADDs with an exact ``MAXLEN`` (at most
  ``max_events_per_run`` entries are kept, never more), EXPIREs, and PUBLISHes, in one round
  trip. The client sends each event's JSON without ``sequence``; the script splices
  ``{"sequence":N,`` in front, so the stored and published JSON carry the assigned number.
  A PING travels in the same packet ahead of the script, so that Redis sends the Pub/Sub
  message before the script's reply (followers hear the event before the publisher resumes).
- The counter starts from ``max(counter key, last stream entry's sequence)`` on every batch,
  so runs written by Dockrion (which has no counter key) continue correctly, and never below
  the highest sequence this backend has written to the run, so a server that restarts without
  persistence (and forgets the run) does not number anew under followers that have seen those
  sequences; they go on receiving. ``clear_run`` lets the numbering start again. If a writer
  that never wrote to the run numbers it anew all the same, a follower that has seen higher
  sequences skips those events as repeats and logs one warning that says why.
- Replay near the end of a long stream reads the stream backwards in small chunks and stops at
  the requested sequence: its cost follows what is returned, not the stream's length.
- Our bus and followers get stored events and live messages as models validated straight from
  the JSON bytes (one pass, no dict; ``follow_models`` hands them to the bus with no layer of
  its own); ``get_events`` and ``subscribe`` (Dockrion's protocol) give wire dicts. Both paths
  accept and skip the same entries and messages.
- One Pub/Sub connection per backend multiplexes every followed run and decodes each message
  once; followers get their own queues. When that connection drops, it reconnects with bounded
  exponential backoff and jitter, re-subscribes, and every follower fills what it missed from
  the stream: no loss, no duplicate. ``state`` says ``live`` or ``reconnecting``. A follower
  more than ``QUEUE_LIMIT`` events behind stops queueing and re-reads the stream once it has
  drained (a ``gap`` event if trimming took some). After reading the stream, a follower that
  hears nothing for ``SETTLE_SECONDS`` reads it once more, because Dockrion publishes before it
  stores.
- Errors raise (``BackendConnectionError``/``BackendPublishError``) with the URL's password
  masked; nothing is dropped silently. Stream entries or messages that are not valid events are
  skipped, counted (``skipped_entries``/``skipped_messages``) and logged.

Connections: reads and other commands share one blocking pool of ``connection_pool_size`` (a
burst waits for a free connection instead of failing). Two more live outside the pool: the
append script's command connection (concurrent appends pipeline on it) and the Pub/Sub
connection. redis-py sets both up (TLS, AUTH, database); then we read their sockets ourselves
(``link``), parsing with hiredis in the read callback, because redis-py's stream layers (a task
per command write under a socket timeout, a reader task per reply) cost event-loop steps
between a publish and its followers.
Everything speaks RESP2. redis-py's own command retries are off: a retried script whose first
reply was lost would store its events twice; stale pooled connections are still replaced
before use, and followers retry by themselves.

Beyond one server, the same backend runs on a Redis Cluster (``redis+cluster://``,
``cluster.py``: ``RedisCluster`` routes commands; the stream keeps Dockrion's name, the counter
and the sharded channel sit in its hash slot, see ``keys``; ``cluster_hub.py`` follows slot
moves and failovers) and on a Sentinel-managed master (``redis+sentinel://``, ``sentinel.py``:
it follows ``+switch-master``). ``RedisBackend(url)`` builds the right one from the URL.

Pub/Sub channels ignore the database number, as in Dockrion, so two databases on one server
should not share run ids.
"""

from .backend import RedisBackend
from .keys import (
    CHANNEL_PREFIX,
    COUNTER_PREFIX,
    STREAM_PREFIX,
    counter_key,
    pubsub_channel,
    stream_key,
)

__all__ = [
    "CHANNEL_PREFIX",
    "COUNTER_PREFIX",
    "STREAM_PREFIX",
    "RedisBackend",
    "RedisClusterBackend",
    "RedisSentinelBackend",
    "counter_key",
    "pubsub_channel",
    "stream_key",
]


def __getattr__(name: str) -> object:
    # Imported when asked for: a one-server user never loads redis-py's cluster client.
    if name == "RedisClusterBackend":
        from .cluster import RedisClusterBackend

        return RedisClusterBackend
    if name == "RedisSentinelBackend":
        from .sentinel import RedisSentinelBackend

        return RedisSentinelBackend
    raise AttributeError(name)
