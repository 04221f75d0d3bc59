"""Sync emits hand events to the bus's loop without waiting, in order, and lose none.

Agent code emitting from its own threads (framework callbacks, SDK stream readers, span
processors) must not wait for the backend per event; what it may rely on instead: order,
refusals at the call, terminal events that wait, failures that are reported, bounded memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from servers import PrivateServer

from dockrion_nb import outbox as outbox_module
from dockrion_nb.backends.redis import RedisBackend
from dockrion_nb.engine import Engine
from dockrion_nb.events import EventContentError, new_event_id
from dockrion_nb.outbox import OutboxError


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="outbox-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def contents(engine: Engine, run_id: str) -> list[str]:
    return [getattr(e, "content", e.type) for e in engine.run(engine.bus.get_events(run_id))]


def test_events_from_many_threads_and_awaits_keep_each_emitters_order(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)

    def produce(name: str) -> None:
        for i in range(300):
            ctx.sync_emit_token(f"{name}{i}")

    threads = [threading.Thread(target=produce, args=(n,)) for n in "abc"]
    for th in threads:
        th.start()

    async def awaited() -> None:
        for i in range(50):
            await ctx.emit_token(f"z{i}")

    asyncio.run(awaited())  # another loop than the bus's: carried there, in order
    for th in threads:
        th.join()
    ctx.sync_emit_complete()
    got = contents(engine, run_id)
    assert got[-1] == "complete" and len(got) == 3 * 300 + 50 + 1
    for name, count in (("a", 300), ("b", 300), ("c", 300), ("z", 50)):
        mine = [c for c in got if c.startswith(name) and c != "complete"]
        assert mine == [f"{name}{i}" for i in range(count)]
    sequences = [e.sequence for e in engine.run(engine.bus.get_events(run_id))]
    assert sequences == list(range(1, len(got) + 1))


def test_a_terminal_sync_emit_returns_once_the_whole_run_is_stored(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)
    bus = engine.bus
    for i in range(900):  # the memory backend keeps 1000 events per run
        ctx.sync_emit_token(str(i))
    ctx.sync_emit_complete()
    # read on the loop directly (no read-after-write flush on the way): all there already
    stored = engine.submit(bus.get_events(run_id)).result(10)
    assert len(stored) == 901 and stored[-1].type == "complete"
    assert not ctx.pending


def test_a_refused_event_is_an_error_at_the_call_and_the_run_goes_on(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_token("before")
    with pytest.raises(EventContentError, match=r"checkpoint data\.o: set is not JSON"):
        ctx.sync_checkpoint("n", {"o": {1}})
    ctx.sync_emit_token("after")
    ctx.sync_emit_complete()
    assert contents(engine, run_id) == ["before", "after", "complete"]


def test_agent_code_never_waits_for_a_frozen_server_and_nothing_is_lost(
    private_redis: PrivateServer, run_id: str, engine: Engine
) -> None:
    engine.use(RedisBackend(private_redis.url, command_timeout=0.5))
    ctx = engine.context(run_id)
    ctx.sync_emit_token("t0")
    ctx.sync_flush()
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        for i in range(1, 200):
            ctx.sync_emit_token(f"t{i}")
        took = time.monotonic() - started
    finally:
        time.sleep(0.3)
        private_redis.proc.send_signal(signal.SIGCONT)
    assert took < 0.5, f"200 emits took {took:.2f} s against a frozen server"
    ctx.sync_emit_complete()  # waits: the batches are retried once the server answers
    got = contents(engine, run_id)
    assert got == [f"t{i}" for i in range(200)] + ["complete"]


def test_a_failure_of_queued_events_is_reported_once_by_the_next_sync_call(
    engine: Engine, run_id: str
) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_token("stored")
    ctx.sync_flush()
    engine.run(engine.bus.close())  # the backend goes away under the run
    ctx.sync_emit_token("lost")  # queued; its batch fails on the loop
    with pytest.raises(OutboxError, match=rf"1 event of run {run_id} could not be published"):
        ctx.sync_flush()
    ctx.sync_flush()  # reported once


def test_a_producer_far_ahead_of_the_bus_waits_instead_of_filling_memory(
    private_redis: PrivateServer, run_id: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "HIGH_WATER", 50)
    engine.use(RedisBackend(private_redis.url, command_timeout=2.0))
    ctx = engine.context(run_id)
    ctx.sync_emit_token("warm")
    ctx.sync_flush()
    assert private_redis.proc is not None
    done = threading.Event()

    def produce() -> None:
        for i in range(200):
            ctx.sync_emit_token(f"t{i}")
        done.set()

    private_redis.proc.send_signal(signal.SIGSTOP)
    producer = threading.Thread(target=produce)
    try:
        producer.start()
        assert not done.wait(0.5), "the producer ran 200 events ahead of a frozen server"
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert done.wait(20)
    producer.join()
    ctx.sync_emit_complete()
    assert contents(engine, run_id)[1:] == [f"t{i}" for i in range(200)] + ["complete"]


def test_an_event_emitted_while_the_drain_lingers_is_stored_without_waiting_for_the_linger(
    engine: Engine, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The drain waits LINGER on an empty queue before it ends, so that steady emits travel in
    # batches; an emit in that window must wake it, not wait for the window to close (it held
    # each event of a 1,000/s producer for up to a millisecond, more than the latency budget).
    monkeypatch.setattr(outbox_module, "LINGER", 60.0)
    ctx = engine.context(run_id)
    ctx.sync_emit_token("first")  # its drain then lingers for a minute
    time.sleep(0.05)
    ctx.sync_emit_token("second")
    ctx.sync_flush(timeout=10)
    assert contents(engine, run_id) == ["first", "second"]


def test_event_ids_taken_from_many_threads_at_once_never_repeat() -> None:
    # ids are made in blocks and handed out one by one: no two threads may get the same one
    ids: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def take(mine: list[str]) -> None:
        start.wait()
        mine.extend(new_event_id() for _ in range(5000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in ids]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    every = [i for mine in ids for i in mine]
    assert len(set(every)) == len(every) == 40_000


def test_event_ids_differ_across_a_fork_and_ignore_random_seed() -> None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(writer, new_event_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(reader, 64).decode()
    assert child != new_event_id()
    random.seed(7)
    first = new_event_id()
    random.seed(7)
    assert new_event_id() != first
