"""The Redis backend on real servers: wire layout, server-side sequences, one round trip per
publish, TTL and exact trimming, tail replay cost, bad entries, errors, URLs and the fallback.

Runs against ``redis_url`` (the machine's Redis when ``REDIS_URL`` is set, else a private
server) and the private Valkey server; tests that need to watch every command or break things
use a private server of their own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from conftest import redis_cleanup, require
from servers import PrivateServer, free_port, server_binary

from dockrion_nb import EventBus
from dockrion_nb.backends import BackendFallbackWarning, InMemoryBackend, build_backend
from dockrion_nb.backends.base import (
    BackendConnectionError,
    BackendPublishError,
    BackendReadError,
    BackendSubscribeError,
)
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.events import CompleteEvent, StartedEvent, TokenEvent, parse_event


@pytest.fixture(params=["redis", "valkey"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "valkey_url"))


@pytest.fixture
def cleanup(url: str) -> Iterator[list[str]]:
    run_ids: list[str] = []
    yield run_ids
    if run_ids:
        redis_cleanup(url, *run_ids)


@pytest.fixture
async def backend(url: str, run_id: str, cleanup: list[str]) -> AsyncIterator[RedisBackend]:
    cleanup.append(run_id)
    b = RedisBackend(url, stream_ttl_seconds=600, max_events_per_run=1000)
    yield b
    await b.close()


def tokens(run_id: str, n: int, start: int = 0) -> list[TokenEvent]:
    return [TokenEvent(run_id=run_id, content=f"t{i}") for i in range(start, start + n)]


# -- wire layout ---------------------------------------------------------------------------------


async def test_stream_entries_and_channel_use_dockrions_layout(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    raw = aioredis.from_url(url)
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"events:run:{run_id}")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    try:
        bus = EventBus(backend)
        stored = await bus.publish_many(
            run_id, [StartedEvent(run_id=run_id, agent_name="a"), *tokens(run_id, 2)]
        )
        entries = await raw.xrange(f"stream:run:{run_id}")
        assert len(entries) == 3
        for (_, fields), event in zip(entries, stored, strict=True):
            assert set(fields) == {b"data", b"sequence", b"type"}
            data = json.loads(fields[b"data"])
            assert data == event.to_dict()
            assert fields[b"sequence"] == str(event.sequence).encode()
            assert fields[b"type"] == event.type.encode()
        published = []
        while len(published) < 3:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
            assert msg is not None, "a published event did not arrive on events:run:<id>"
            published.append(json.loads(msg["data"]))
        assert published == [e.to_dict() for e in stored]
        assert [e.sequence for e in stored] == [1, 2, 3]
    finally:
        await pubsub.aclose()
        await raw.aclose()


async def test_counter_continues_a_run_written_without_our_counter_key(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    raw = redis.Redis.from_url(url)
    try:
        for seq in (1, 2, 3):  # as Dockrion's store_event writes them
            event = TokenEvent(run_id=run_id, content=str(seq), sequence=seq).to_dict()
            raw.xadd(
                f"stream:run:{run_id}",
                {"data": json.dumps(event), "sequence": str(seq), "type": "token"},
            )
        stored = await EventBus(backend).publish_many(run_id, tokens(run_id, 2))
        assert [e.sequence for e in stored] == [4, 5]
    finally:
        raw.close()


async def test_events_that_carry_a_sequence_keep_it_and_push_the_counter(
    backend: RedisBackend, run_id: str
) -> None:
    bus = EventBus(backend)
    kept = await bus.publish(run_id, TokenEvent(run_id=run_id, content="x", sequence=40))
    after = await bus.publish(run_id, TokenEvent(run_id=run_id, content="y"))
    assert (kept.sequence, after.sequence) == (40, 41)
    assert [e.sequence for e in await bus.get_events(run_id)] == [40, 41]


async def test_ttl_is_set_on_stream_and_counter_and_trim_is_exact(
    url: str, run_id: str, cleanup: list[str]
) -> None:
    cleanup.append(run_id)
    backend = RedisBackend(url, stream_ttl_seconds=120, max_events_per_run=25)
    raw = redis.Redis.from_url(url)
    try:
        bus = EventBus(backend)
        for start in range(0, 60, 7):
            await bus.publish_many(run_id, tokens(run_id, 7, start))
        assert raw.xlen(f"stream:run:{run_id}") == 25
        assert 110 <= raw.ttl(f"stream:run:{run_id}") <= 120
        assert 110 <= raw.ttl(f"seq:run:{run_id}") <= 120
        kept = await bus.get_events(run_id)
        assert [e.sequence for e in kept] == list(range(39, 64))
    finally:
        raw.close()
        await backend.close()


async def test_store_event_keeps_dockrions_semantics(backend: RedisBackend, run_id: str) -> None:
    event = TokenEvent(run_id=run_id, content="d", sequence=7).to_dict()
    await backend.store_event(run_id, event)
    assert await backend.get_events(run_id) == [event]
    appended = await backend.append(run_id, [TokenEvent(run_id=run_id, content="n").to_dict()])
    assert appended[0]["sequence"] == 8


async def test_list_runs_reports_counts_sequences_type_and_ttl(
    backend: RedisBackend, run_id: str, cleanup: list[str]
) -> None:
    other = f"{run_id}-b"
    cleanup.append(other)
    bus = EventBus(backend)
    await bus.publish_many(run_id, [*tokens(run_id, 3), CompleteEvent(run_id=run_id)])
    await bus.publish_many(other, tokens(other, 2))
    runs = {r.run_id: r for r in await bus.list_runs(f"{run_id}*")}
    assert set(runs) == {run_id, other}
    done = runs[run_id]
    assert (done.event_count, done.first_sequence, done.last_sequence) == (4, 1, 4)
    assert done.last_type == "complete" and done.status == "complete"
    assert done.ttl_seconds is not None and 590 <= done.ttl_seconds <= 600
    assert done.first_timestamp is not None and done.last_timestamp is not None
    assert runs[other].status == "running"
    assert [r.run_id for r in await bus.list_runs(other)] == [other]


async def test_clear_run_removes_stream_and_counter(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    bus = EventBus(backend)
    await bus.publish_many(run_id, tokens(run_id, 3))
    await bus.clear_run(run_id)
    raw = redis.Redis.from_url(url)
    try:
        assert raw.exists(f"stream:run:{run_id}", f"seq:run:{run_id}") == 0
    finally:
        raw.close()
    assert (await bus.publish(run_id, tokens(run_id, 1)[0])).sequence == 1


# -- round trips and replay cost -----------------------------------------------------------------


async def _commands_seen(server_url: str, action: object) -> list[str]:
    """Commands clients sent (not those run inside scripts) while ``action()`` ran."""
    client = aioredis.from_url(server_url)
    marker = aioredis.from_url(server_url)
    await marker.ping()  # its set-up commands happen before the monitor starts
    seen: list[str] = []
    async with client.monitor() as monitor:
        await asyncio.sleep(0.05)
        await action()  # type: ignore[operator]
        await marker.echo("monitor-end")
        while True:
            info = await asyncio.wait_for(monitor.next_command(), 5)
            command = info["command"]
            if "monitor-end" in command:
                break
            if info.get("client_type") != "lua":
                seen.append(command.split(" ", 1)[0].upper())
    await client.aclose()
    await marker.aclose()
    return seen


async def test_one_round_trip_per_publish_and_per_batch(
    private_redis: PrivateServer, run_id: str
) -> None:
    backend = RedisBackend(private_redis.url, stream_ttl_seconds=600, max_events_per_run=1000)
    bus = EventBus(backend)
    await bus.publish(run_id, tokens(run_id, 1)[0])  # connection set-up and script load

    async def one() -> None:
        await bus.publish(run_id, tokens(run_id, 1)[0])

    async def batch() -> None:
        await bus.publish_many(run_id, tokens(run_id, 200))

    # One packet each: a PING (it makes Redis send the Pub/Sub message before the reply) and
    # the script; nothing else crosses the network.
    assert await _commands_seen(private_redis.url, one) == ["PING", "EVALSHA"]
    assert await _commands_seen(private_redis.url, batch) == ["PING", "EVALSHA"]
    assert len(await bus.get_events(run_id)) == 202
    await bus.close()


async def test_concurrent_publishers_on_one_connection_each_get_their_own_reply(
    backend: RedisBackend, run_id: str
) -> None:
    # Every call pipelines on the one command connection; the replies come back in order and
    # each caller must get its own (its sequence is where its content was stored).
    bus = EventBus(backend)
    singles = [
        bus.publish(run_id, TokenEvent(run_id=run_id, content=f"one-{i}")) for i in range(150)
    ]
    batches = [
        bus.publish_many(
            run_id, [TokenEvent(run_id=run_id, content=f"batch-{b}-{i}") for i in range(10)]
        )
        for b in range(15)
    ]
    results = await asyncio.gather(*singles, *batches)
    returned = [e for r in results for e in (r if isinstance(r, list) else [r])]
    stored = {e.sequence: e.content for e in await bus.get_events(run_id)}  # type: ignore[attr-defined]
    assert sorted(stored) == list(range(1, 301))
    assert sorted(e.sequence for e in returned) == list(range(1, 301))
    assert all(stored[e.sequence] == e.content for e in returned)  # type: ignore[attr-defined]
    for r in results:  # a batch's events are stored consecutively, in its order
        if isinstance(r, list):
            assert [e.sequence for e in r] == list(range(r[0].sequence, r[0].sequence + 10))


async def test_a_flushed_script_is_loaded_again(private_redis: PrivateServer, run_id: str) -> None:
    bus = EventBus(RedisBackend(private_redis.url))
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="before"))
    admin = redis.Redis.from_url(private_redis.url)
    try:
        admin.script_flush()
        again = await bus.publish(run_id, TokenEvent(run_id=run_id, content="after"))
        assert again.sequence == 2
        assert [e.sequence for e in await bus.get_events(run_id)] == [1, 2]
    finally:
        admin.close()
        await bus.close()


async def test_a_publish_to_a_frozen_server_times_out_and_the_next_one_reconnects(
    private_redis: PrivateServer, run_id: str
) -> None:
    bus = EventBus(RedisBackend(private_redis.url, command_timeout=0.5))
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="first"))
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)  # alive but silent
    try:
        started = time.monotonic()
        with pytest.raises(BackendConnectionError, match="did not answer in time"):
            await bus.publish(run_id, TokenEvent(run_id=run_id, content="unanswered"))
        assert time.monotonic() - started < 5
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    last = await bus.publish(run_id, TokenEvent(run_id=run_id, content="last"))
    stored = await bus.get_events(run_id)
    # The unanswered script may have run once the server woke; nothing ran twice.
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert stored[-1].sequence == last.sequence and stored[-1].content == "last"  # type: ignore[attr-defined]
    await bus.close()


async def test_publishing_the_same_event_again_stores_it_once(
    backend: RedisBackend, run_id: str
) -> None:
    """What a retry after a timed-out publish does: the script recognises the batch by its
    last event's id and returns the sequences it got, storing nothing twice."""
    bus = EventBus(backend)
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="first"))
    event = TokenEvent(run_id=run_id, content="maybe stored")
    first = await bus.publish(run_id, event)
    again = await bus.publish(run_id, event)
    assert (first.sequence, again.sequence) == (2, 2)
    batch = tokens(run_id, 3)
    got = [e.sequence for e in await bus.publish_many(run_id, batch)]
    assert got == [e.sequence for e in await bus.publish_many(run_id, batch)] == [3, 4, 5]
    assert [e.sequence for e in await bus.get_events(run_id)] == [1, 2, 3, 4, 5]
    other = await bus.publish(run_id, TokenEvent(run_id=run_id, content="maybe stored"))
    assert other.sequence == 6  # same content, another event: stored


async def test_a_publish_retried_after_a_timeout_is_not_stored_twice(
    private_redis: PrivateServer, run_id: str
) -> None:
    bus = EventBus(RedisBackend(private_redis.url, command_timeout=0.5))
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="first"))
    event = TokenEvent(run_id=run_id, content="unanswered")
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(BackendConnectionError, match=r"publishing the same events again is"):
            await bus.publish(run_id, event)
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(0.3)  # the server wakes and may run the unanswered script
    await bus.publish(run_id, event)  # the retry
    contents = [e.content for e in await bus.get_events(run_id)]  # type: ignore[attr-defined]
    assert contents == ["first", "unanswered"]
    await bus.close()


async def test_a_retry_after_others_wrote_to_the_run_is_not_stored_twice(
    private_redis: PrivateServer, run_id: str
) -> None:
    """The unanswered batch was stored after all, then another writer appended: the retry
    finds the batch among the newest entries (not only the newest one) and stores nothing."""
    bus = EventBus(RedisBackend(private_redis.url, command_timeout=0.5))
    other = EventBus(RedisBackend(private_redis.url))
    await bus.publish(run_id, TokenEvent(run_id=run_id, content="first"))
    batch = [TokenEvent(run_id=run_id, content=f"unanswered {i}") for i in range(2)]
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(BackendConnectionError, match=r"publishing the same events again is"):
            await bus.publish_many(run_id, batch)
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(0.3)  # the server wakes and runs the unanswered script
    await other.publish_many(
        run_id, [TokenEvent(run_id=run_id, content=f"other {i}") for i in range(3)]
    )
    retried = await bus.publish_many(run_id, batch)  # the retry
    assert [e.sequence for e in retried] == [2, 3]  # the sequences the batch got the first time
    contents = [e.content for e in await bus.get_events(run_id)]  # type: ignore[attr-defined]
    assert contents == ["first", "unanswered 0", "unanswered 1", "other 0", "other 1", "other 2"]
    await other.close()
    await bus.close()


async def test_tail_replay_reads_only_the_tail(backend: RedisBackend, run_id: str) -> None:
    backend.max_events_per_run = 20_000
    bus = EventBus(backend)
    for start in range(0, 20_000, 1000):
        await backend.append(run_id, [e.to_dict() for e in tokens(run_id, 1000, start)])
    before = backend.entries_read
    tail = await bus.get_events(run_id, 19_951)
    assert [e.sequence for e in tail] == list(range(19_951, 20_001))
    assert backend.entries_read - before <= 60  # 50 asked for, a chunk's overshoot at most
    before = backend.entries_read
    assert len(await backend.get_events(run_id, 0)) == 20_000
    assert backend.entries_read - before == 20_000


# -- bad data and errors ---------------------------------------------------------------------


async def test_a_bad_entry_is_counted_once_and_never_as_an_event(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    raw = redis.Redis.from_url(url)
    key = f"stream:run:{run_id}"
    bus = EventBus(backend)
    try:
        await bus.publish_many(run_id, tokens(run_id, 3))
        raw.xadd(key, {"data": "not json", "sequence": "99", "type": "token"})
        raw.xadd(key, {"other": "field"})
        await bus.publish(run_id, CompleteEvent(run_id=run_id))
        for _ in range(3):  # replays and summaries read the bad entries again and again
            await bus.get_events(run_id)
            (summary,) = await bus.list_runs(run_id)
        assert backend.skipped_entries == 2
        assert (summary.event_count, summary.first_sequence, summary.last_sequence) == (4, 1, 4)
        assert summary.status == "complete"
        assert await bus.run_summary(run_id) == summary
        # a long run with garbage in the middle: counted by its numbered span
        await bus.publish_many(run_id, tokens(run_id, 40))
        (summary,) = await bus.list_runs(run_id)
        assert (summary.event_count, summary.last_sequence) == (44, 44)
        raw.delete(key)
        raw.xadd(key, {"data": "only garbage"})
        assert await bus.list_runs(run_id) == []
        assert await bus.run_summary(run_id) is None
    finally:
        raw.close()


async def test_a_key_of_another_kind_is_a_read_error_that_says_so(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    raw = redis.Redis.from_url(url)
    try:
        raw.set(f"stream:run:{run_id}", "not a stream")
        for call in (backend.get_events(run_id), backend.summary(run_id)):
            with pytest.raises(BackendReadError, match=r"holds a key of another kind"):
                await call
        with pytest.raises(BackendPublishError, match=r"holds a key of another kind"):
            await backend.append(run_id, [tokens(run_id, 1)[0].to_dict()])
    finally:
        raw.close()


async def test_entries_that_are_not_events_are_skipped_and_counted(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    raw = redis.Redis.from_url(url)
    key = f"stream:run:{run_id}"
    bus = EventBus(backend)
    try:
        await bus.publish(run_id, tokens(run_id, 1)[0])
        raw.xadd(key, {"data": "not json", "sequence": "2", "type": "token"})
        raw.xadd(key, {"data": b"\xff\xfe{", "sequence": "3", "type": "token"})
        raw.xadd(key, {"data": "[1, 2]", "sequence": "4", "type": "token"})
        raw.xadd(key, {"data": json.dumps({"run_id": run_id}), "sequence": "5"})
        raw.xadd(key, {"other": "field"})
        wrong_run = TokenEvent(run_id="someone-else", content="x", sequence=6).to_dict()
        raw.xadd(key, {"data": json.dumps(wrong_run), "sequence": "6", "type": "token"})
        await bus.publish(run_id, TokenEvent(run_id=run_id, content="ok", sequence=7))
        seen = [e async for e in bus.subscribe(run_id, 1, live=False)]
        assert [(e.type, e.sequence) for e in seen] == [("token", 1), ("gap", 0), ("token", 7)]
        assert backend.skipped_entries == 6
        assert backend.describe()["skipped_entries"] == 6

        got: list[int] = []
        first = asyncio.Event()

        async def follow() -> None:
            async for e in bus.subscribe(run_id, 7):
                got.append(e.sequence)
                first.set()
                if e.sequence == 8:
                    return

        task = asyncio.create_task(follow())
        await asyncio.wait_for(first.wait(), 10)
        raw.publish(f"events:run:{run_id}", "garbage {")
        raw.publish(f"events:run:{run_id}", json.dumps({"type": "progress", "run_id": run_id}))
        await bus.publish(run_id, tokens(run_id, 1)[0])
        await asyncio.wait_for(task, 10)
        assert got == [7, 8]
        assert backend.skipped_messages == 2
    finally:
        raw.close()


async def test_models_read_from_json_bytes_match_the_wire_dicts_entry_for_entry(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    """The bus reads models straight from each entry's JSON, choosing the class by the
    entry's ``type`` field; entries where that field, the JSON or the sequence disagree must
    come out exactly as the wire-dict path (``get_events``) makes them, or be skipped alike."""
    raw = redis.Redis.from_url(url)
    key = f"stream:run:{run_id}"

    def token(seq: int, **extra: object) -> dict[str, object]:
        return {**TokenEvent(run_id=run_id, content=f"c{seq}", sequence=seq).to_dict(), **extra}

    progress = {**token(2), "type": "progress", "step": "s", "progress": 0.5}
    del progress["content"]
    no_type = token(3)
    del no_type["type"]
    no_seq = token(4)
    del no_seq["sequence"]
    written: list[tuple[dict[str, object], dict[str, str]]] = [
        (progress, {"sequence": "2", "type": "token"}),  # the type field lies
        (no_type, {"sequence": "3", "type": "token"}),  # skipped: the JSON has no type
        (no_seq, {"sequence": "4", "type": "token"}),  # sequence filled from the field
        (token(5), {"sequence": "50", "type": "token"}),  # the JSON's sequence wins
        ({**token(6), "type": "custom:x", "extra": [1, {"a": None}]}, {"sequence": "6"}),
        ({**token(7), "type": "mystery"}, {"sequence": "7", "type": "mystery"}),
        (token(8), {"sequence": "8", "type": "mystery"}),  # a known type, field unknown
        ({**token(9), "type": ""}, {"sequence": "9", "type": ""}),  # skipped: empty type
        (token(10, note="\u00e9t\u00e9 \U0001f600"), {"type": "token", "sequence": "10"}),
        (token(11), {"type": "token", "x": "y", "sequence": "11"}),
        (token(12, sequence="12"), {"sequence": "12", "type": "token"}),  # a text sequence
    ]
    try:
        await EventBus(backend).publish(run_id, tokens(run_id, 1)[0])
        for data, fields in written:
            raw.xadd(key, {"data": json.dumps(data), **fields})
        dicts = await backend.get_events(run_id)
        skipped_by_dicts = backend.skipped_entries
        models = await EventBus(backend).get_events(run_id)
        assert backend.skipped_entries == skipped_by_dicts == 2  # each bad entry counted once
        assert [type(m) for m in models] == [type(parse_event(d)) for d in dicts]
        assert [m.to_dict() for m in models] == [parse_event(d).to_dict() for d in dicts]
        assert [m.sequence for m in models] == [1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
        assert [type(m).__name__ for m in models[1:7]] == [
            "ProgressEvent",
            "TokenEvent",
            "TokenEvent",
            "CustomEvent",
            "CustomEvent",
            "TokenEvent",
        ]
        kept = [d for d, _ in written if d.get("type")]
        kept[1] = {**kept[1], "sequence": 4}  # stored without a sequence: the field's
        kept[-1] = {**kept[-1], "sequence": 12}  # a text sequence: the field's
        assert dicts[1:] == [json.loads(json.dumps(d)) for d in kept]
    finally:
        raw.close()


async def test_live_messages_reach_followers_as_the_models_their_wire_dicts_make(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    """Followers get live models validated straight from the message bytes (the class guessed
    from the text); Dockrion's ``subscribe`` on the same backend gets wire dicts. A guess the
    text misleads (a nested "type" first, Dockrion's spacing) must not change the result."""
    raw = redis.Redis.from_url(url)
    bus = EventBus(backend)
    messages = [
        {
            "sequence": 2,
            "data": {"type": "token"},
            "type": "progress",
            "run_id": run_id,
            "step": "s",
            "progress": 0.5,
        },
        {"type": "custom:x", "run_id": run_id, "sequence": 3, "v": [1, {"type": "y"}]},
        {"type": "token", "run_id": run_id, "sequence": 4, "content": "t"},
        {"type": "complete", "run_id": run_id, "sequence": 5},
    ]
    for i, message in enumerate(messages):  # fixed, so two parses agree
        message.update(id=f"evt-{i}", timestamp="2026-01-02T03:04:05+00:00")
    models: list[object] = []
    dicts: list[dict[str, object]] = []

    async def follow() -> None:
        async for event in bus.subscribe(run_id, 1):
            models.append(event)
            if event.is_terminal:
                return

    async def dockrion_subscribe() -> None:
        async for event in backend.subscribe(f"run:{run_id}"):
            dicts.append(event)
            if event.get("type") == "complete":
                return

    try:
        await bus.publish(run_id, tokens(run_id, 1)[0])
        tasks = [asyncio.create_task(follow()), asyncio.create_task(dockrion_subscribe())]
        for _ in range(500):
            if backend.subscriber_count(run_id) == 2 and models:
                break
            await asyncio.sleep(0.01)
        for i, message in enumerate(messages):
            text = json.dumps(message) if i == 0 else json.dumps(message, separators=(",", ":"))
            raw.publish(f"events:run:{run_id}", text)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert dicts == messages
        assert [type(m).__name__ for m in models] == [
            "TokenEvent",
            "ProgressEvent",
            "CustomEvent",
            "TokenEvent",
            "CompleteEvent",
        ]
        assert [m.to_dict() for m in models[1:]] == [parse_event(d).to_dict() for d in dicts]
        assert backend.skipped_messages == 0
    finally:
        raw.close()


def _listener(reply: bytes) -> tuple[int, socket.socket]:
    """A TCP server that is not Redis: answers ``reply`` to anything, then hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1]), server


def _check_message(exc: BaseException, password: str, *phrases: str) -> str:
    text = str(exc)
    assert "\n" not in text
    assert password not in text and password not in repr(exc)
    assert "***@" in text
    for phrase in phrases:
        assert phrase in text, text
    return text


async def test_dockrions_health_check_and_stats(backend: RedisBackend) -> None:
    stats = backend.get_stats()
    assert {k: stats[k] for k in ("backend", "closed", "stream_ttl_seconds", "pool_size")} == {
        "backend": "redis",
        "closed": False,
        "stream_ttl_seconds": 600,
        "pool_size": 10,
    }
    assert await backend.health_check() is True
    down = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1)
    assert await down.health_check() is False
    assert down.get_stats()["connected"] is False
    await down.close()
    assert down.get_stats()["closed"] is True


async def test_connection_refused_is_one_readable_masked_message() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    backend = RedisBackend(url)
    with pytest.raises(BackendConnectionError) as info:
        await backend.ping()
    _check_message(info.value, "hunter2secret", "connection refused", "redis://***@127.0.0.1")
    with pytest.raises(BackendConnectionError) as info:
        await EventBus(backend).publish("r1", TokenEvent(run_id="r1", content="x"))
    _check_message(info.value, "hunter2secret", "connection refused")
    with pytest.raises(BackendConnectionError) as info:
        async for _ in backend.follow("r1"):
            pass
    _check_message(info.value, "hunter2secret", "connection refused")
    await backend.close()


async def test_wrong_password_is_one_readable_masked_message(run_id: str) -> None:
    server = PrivateServer(password="right-pw")
    server.start()
    try:
        url = f"redis://:wrong-pw-123@127.0.0.1:{server.port}/0"
        backend = RedisBackend(url)
        with pytest.raises(BackendConnectionError) as info:
            await backend.ping()
        _check_message(info.value, "wrong-pw-123", "rejected the credentials")
        await backend.close()
        good = RedisBackend(server.url)
        await good.ping()
        assert "right-pw" not in json.dumps(good.describe())
        await good.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"\x00\x01garbage\xff\r\n"],
    ids=["http", "garbage"],
)
async def test_a_port_that_is_not_redis_is_one_readable_masked_message(reply: bytes) -> None:
    port, server = _listener(reply)
    try:
        backend = RedisBackend(f"redis://:pw-not-shown@127.0.0.1:{port}/0", command_timeout=3)
        with pytest.raises(BackendConnectionError) as info:
            await backend.ping()
        _check_message(info.value, "pw-not-shown", "does not answer like Redis")
        await backend.close()
    finally:
        server.close()


def test_an_invalid_url_is_a_clear_masked_error() -> None:
    with pytest.raises(BackendConnectionError) as info:
        RedisBackend("http://:pw-x@localhost:6379")
    _check_message(info.value, "pw-x", "invalid Redis URL")


# -- URLs ---------------------------------------------------------------------------------------


async def test_database_number_user_and_password_in_the_url(run_id: str) -> None:
    server = PrivateServer(password="admin-pw")
    server.start()
    admin = redis.Redis(host="127.0.0.1", port=server.port, password="admin-pw")
    try:
        admin.acl_setuser(
            "nb", enabled=True, passwords=["+nb-pw"], keys=["*"], channels=["*"], commands=["+@all"]
        )
        url = f"redis://nb:nb-pw@127.0.0.1:{server.port}/3"
        backend = RedisBackend(url)
        assert backend.describe()["url"] == f"redis://nb:***@127.0.0.1:{server.port}/3"
        bus = EventBus(backend)
        await bus.publish(run_id, tokens(run_id, 1)[0])
        db3 = redis.Redis(host="127.0.0.1", port=server.port, password="admin-pw", db=3)
        assert db3.xlen(f"stream:run:{run_id}") == 1
        assert admin.exists(f"stream:run:{run_id}") == 0  # db 0 untouched
        db3.close()
        await bus.close()
    finally:
        admin.close()
        server.close()


async def follow_three_published(backend: RedisBackend, run_id: str) -> list[int]:
    """Follow a run, publish three events to it, and return the sequences the follower got."""
    bus = EventBus(backend)
    got: list[int] = []

    async def follow() -> None:
        async for e in bus.subscribe(run_id, 1):
            got.append(e.sequence)
            if e.sequence == 3:
                return

    task = asyncio.create_task(follow())
    await bus.publish_many(run_id, tokens(run_id, 3))
    await asyncio.wait_for(task, 10)
    await bus.close()
    return got


def test_unix_socket_url(run_id: str) -> None:
    binary = server_binary()
    require(binary is not None, "no Redis-compatible server binary")
    assert binary is not None
    folder = tempfile.mkdtemp(prefix="dnb-unix-")
    path = str(Path(folder) / "redis.sock")
    args = [binary, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    async def scenario() -> list[int]:
        return await follow_three_published(RedisBackend(f"unix://{path}?db=0"), run_id)

    try:
        deadline = time.monotonic() + 10
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run(scenario()) == [1, 2, 3]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_rediss_url_over_real_tls(run_id: str) -> None:
    """A TLS-enabled ``redis-server`` with a throw-away certificate for 127.0.0.1."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    require(binary is not None and openssl is not None, "needs redis-server (TLS) and openssl")
    assert binary is not None and openssl is not None
    folder = Path(tempfile.mkdtemp(prefix="dnb-tls-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"

    async def scenario() -> list[int]:
        backend = RedisBackend(url)
        for _ in range(200):  # until the server listens
            try:
                await backend.ping()
                break
            except BackendConnectionError:
                await asyncio.sleep(0.05)
        return await follow_three_published(backend, run_id)

    try:
        assert RedisBackend(url).new_connection().__class__.__name__ == "SSLConnection"
        assert asyncio.run(scenario()) == [1, 2, 3]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# -- followers --------------------------------------------------------------------------------


async def test_followers_joining_and_leaving_quickly_all_get_live_events(
    backend: RedisBackend, run_id: str
) -> None:
    bus = EventBus(backend)
    await bus.publish(run_id, tokens(run_id, 1)[0])
    for round_ in range(15):
        # one follower leaves right as the next joins: the channel must stay subscribed
        async def first_then_leave() -> None:
            async for _ in bus.subscribe(run_id, 1):
                return

        await first_then_leave()
        target = round_ + 2
        got: list[int] = []

        async def follow(until: int = target, got: list[int] = got) -> None:
            async for e in bus.subscribe(run_id, until):
                got.append(e.sequence)
                return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        await bus.publish(run_id, tokens(run_id, 1)[0])
        await asyncio.wait_for(task, 5)
        assert got == [target]


async def test_an_event_stored_after_the_followers_replay_still_reaches_it(
    backend: RedisBackend, url: str, run_id: str
) -> None:
    """Dockrion publishes, then stores: its last event may be published just before a
    follower subscribes and stored just after the follower read the stream."""
    bus = EventBus(backend)
    await bus.publish_many(run_id, tokens(run_id, 2))
    got: list[int] = []
    replayed = asyncio.Event()

    async def follow() -> None:
        async for e in bus.subscribe(run_id, 1):
            got.append(e.sequence)
            if e.sequence == 2:
                replayed.set()
            if e.sequence == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(replayed.wait(), 10)
    late = CompleteEvent(run_id=run_id, sequence=3).to_dict()
    raw = aioredis.from_url(url)
    await raw.xadd(
        f"stream:run:{run_id}", {"data": json.dumps(late), "sequence": "3", "type": "complete"}
    )
    await raw.aclose()
    await asyncio.wait_for(task, 10)
    assert got == [1, 2, 3]


async def test_one_pubsub_connection_serves_many_followers(
    private_redis: PrivateServer,
) -> None:
    backend = RedisBackend(private_redis.url)
    bus = EventBus(backend)
    runs = [f"m-{i}" for i in range(5)]
    followers = [(rid, []) for rid in runs for _ in range(2)]  # two followers per run

    async def follow(rid: str, got: list[int]) -> None:
        async for e in bus.subscribe(rid, 1):
            got.append(e.sequence)
            if e.sequence == 3:
                return

    tasks = [asyncio.create_task(follow(rid, got)) for rid, got in followers]
    raw = redis.Redis.from_url(private_redis.url)
    channels = [f"events:run:{r}" for r in runs]
    deadline = time.monotonic() + 10
    while raw.execute_command("PUBSUB", "NUMSUB", *channels)[1::2] != [1] * 5:
        assert time.monotonic() < deadline, "followers did not subscribe"
        await asyncio.sleep(0.01)
    pubsub_clients = raw.client_list(_type="pubsub")
    assert len(pubsub_clients) == 1 and pubsub_clients[0]["sub"] == "5"
    for rid in runs:
        await bus.publish_many(rid, tokens(rid, 3))
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(got == [1, 2, 3] for _, got in followers)
    assert backend.pubsub_connects == 1
    raw.close()
    await bus.close()


async def test_the_pubsub_connection_goes_when_the_last_follower_leaves(
    private_redis: PrivateServer,
) -> None:
    backend = RedisBackend(private_redis.url)
    bus = EventBus(backend)
    raw = redis.Redis.from_url(private_redis.url)

    async def follow_to(rid: str, last: int) -> list[int]:
        got: list[int] = []
        async for e in bus.subscribe(rid, 1):
            got.append(e.sequence)
            if e.sequence == last:
                return got
        return got

    async def pubsub_clients(expected: int) -> None:
        # A connection that unsubscribed is a normal client until it closes: count both.
        def ours() -> list[dict[str, str]]:
            return [
                c
                for c in raw.client_list()
                if c["cmd"] in ("subscribe", "unsubscribe") or c.get("sub") not in (None, "0")
            ]

        deadline = time.monotonic() + 10
        while len(ours()) != expected:
            assert time.monotonic() < deadline, f"expected {expected} Pub/Sub connection(s)"
            await asyncio.sleep(0.01)

    try:
        for round_, rid in enumerate(("idle-a", "idle-b"), start=1):
            task = asyncio.create_task(follow_to(rid, 3))
            await pubsub_clients(1)
            await bus.publish_many(rid, tokens(rid, 3))
            assert await asyncio.wait_for(task, 10) == [1, 2, 3]
            await pubsub_clients(0)  # nobody follows anything: the connection is let go
            assert backend.pubsub_connects == round_
    finally:
        raw.close()
        await bus.close()


async def test_an_acl_user_follows_the_runs_it_may_and_is_told_of_the_rest(
    private_redis: PrivateServer,
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser(
        "viewer",
        enabled=True,
        passwords=["+viewer-pw"],
        keys=["*"],
        channels=["events:run:ok-*"],
        commands=["+@all"],
    )
    url = f"redis://viewer:viewer-pw@127.0.0.1:{private_redis.port}/0"
    bus = EventBus(RedisBackend(url, command_timeout=5.0))
    try:
        got: list[int] = []

        async def follow() -> None:
            async for e in bus.subscribe("ok-run", 1):
                got.append(e.sequence)
                if e.sequence == 2:
                    return

        task = asyncio.create_task(follow())
        deadline = time.monotonic() + 10
        while admin.execute_command("PUBSUB", "NUMSUB", "events:run:ok-run")[1] != 1:
            assert time.monotonic() < deadline, "the permitted follower did not subscribe"
            await asyncio.sleep(0.01)
        await bus.publish_many("ok-run", tokens("ok-run", 2))
        await asyncio.wait_for(task, 10)
        assert got == [1, 2]

        with pytest.raises(BackendSubscribeError) as info:
            async for _ in bus.subscribe("secret-run", 1):
                pass
        assert "refused a subscription" in str(info.value)
        assert "viewer-pw" not in str(info.value) and "redis://viewer:***@" in str(info.value)
    finally:
        admin.close()
        await bus.close()


# -- fallback -----------------------------------------------------------------------------------


def test_without_the_redis_library_backend_redis_falls_back_to_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis / redis.asyncio fail
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = build_backend({"backend": "redis", "redis": {"url": "redis://:pw@h:6379/0"}})
    assert isinstance(backend, InMemoryBackend)
    assert backend.fallback_reason and "redis" in backend.fallback_reason
    assert "pw" not in backend.fallback_reason
    assert any(issubclass(w.category, BackendFallbackWarning) for w in caught)
    assert backend.describe()["fallback_reason"] == backend.fallback_reason
