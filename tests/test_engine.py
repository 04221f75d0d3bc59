"""The engine: a private loop on a daemon thread, backend switching, shutdown at exit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from dockrion_nb.backends import BackendClosedError, InMemoryBackend
from dockrion_nb.config import ConfigError, StreamingConfig
from dockrion_nb.engine import Engine, backend_location, get_engine, reset_engine
from dockrion_nb.events import StartedEvent


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="test-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def test_run_executes_on_the_engine_thread_and_returns_the_result(engine: Engine) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert engine.run(where()) == "test-engine"


def test_run_from_the_engine_thread_is_refused_instead_of_deadlocking(engine: Engine) -> None:
    async def nested() -> None:
        async def inner() -> int:
            return 1

        engine.run(inner())

    with pytest.raises(RuntimeError, match="engine thread"):
        engine.run(nested())


async def test_arun_awaits_engine_work_from_another_loop(engine: Engine) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert await engine.arun(where()) == "test-engine"


def test_run_timeout_names_the_limit(engine: Engine) -> None:
    with pytest.raises(TimeoutError, match=r"0\.05 s"):
        engine.run(asyncio.sleep(5), timeout=0.05)


def test_default_backend_is_memory_and_bus_is_reachable_from_the_engine_thread(
    engine: Engine,
) -> None:
    async def from_inside() -> str:
        return engine.bus.backend_name

    assert engine.run(from_inside()) == "memory"
    assert engine.describe()["backend"] == "memory"
    assert engine.location() == "memory (this process)"


def test_switching_backend_closes_the_old_one_and_ends_its_subscriptions(engine: Engine) -> None:
    old_bus = engine.bus
    old_backend = old_bus.backend
    started = threading.Event()

    async def subscriber() -> str:
        started.set()
        async for _ in old_bus.subscribe("sw-1"):
            pass
        return "ended"

    fut = engine.spawn(subscriber())
    assert started.wait(5)
    switched = []
    engine.on_switch(switched.append)
    new_bus = engine.use({"backend": "memory", "max_events_per_run": 50})
    assert new_bus is engine.bus and new_bus is not old_bus
    assert switched == [new_bus]
    # The subscription was cancelled; it does not hang on the old backend.
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(5)
    with pytest.raises(BackendClosedError):
        engine.run(old_backend.publish("run:x", {"type": "started"}))
    assert engine.describe()["max_events_per_run"] == 50


def test_tasks_spawned_after_a_switch_survive_it(engine: Engine) -> None:
    engine.use(StreamingConfig())
    gate = asyncio.Event()

    async def waits() -> str:
        await gate.wait()
        return "done"

    fut = engine.spawn(waits())
    engine.use(StreamingConfig())  # cancels this task: it was spawned under the old backend
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(5)
    fut2 = engine.spawn(waits())
    engine.loop.call_soon_threadsafe(gate.set)
    assert fut2.result(5) == "done"


def test_a_failed_switch_keeps_the_old_backend(engine: Engine) -> None:
    bus = engine.bus
    engine.run(bus.publish("keep-1", StartedEvent(run_id="keep-1")))
    with pytest.raises(ConfigError, match="stream_ttl_seconds"):
        engine.use({"backend": "redis", "redis": {"url": "redis://x", "stream_ttl_seconds": 1}})
    assert engine.bus is bus
    assert [e.type for e in engine.run(bus.get_events("keep-1"))] == ["started"]


def test_use_accepts_a_backend_object(engine: Engine) -> None:
    backend = InMemoryBackend(max_events_per_run=20)
    bus = engine.use(backend)
    assert bus.backend is backend


def test_context_publishes_through_the_engine_loop_from_this_thread(engine: Engine) -> None:
    ctx = engine.context("ctx-1", agent_name="a")
    assert ctx.sync_emit_started()
    assert ctx.sync_emit_token("hi")
    events = engine.run(engine.bus.get_events("ctx-1"))
    assert [(e.type, e.sequence) for e in events] == [("started", 1), ("token", 2)]


def test_shutdown_closes_the_backend_and_stops_the_thread() -> None:
    eng = Engine(name="shut")
    backend = eng.bus.backend
    eng.shutdown()
    assert eng.closed
    assert not eng._thread.is_alive()
    with pytest.raises(BackendClosedError):
        asyncio.run(backend.publish("run:x", {"type": "started"}))
    with pytest.raises(RuntimeError, match="shut down"):
        eng.run(asyncio.sleep(0))


def test_get_engine_is_shared_and_reset_starts_a_fresh_one() -> None:
    first = get_engine()
    assert get_engine() is first
    reset_engine()
    assert first.closed
    second = get_engine()
    assert second is not first and not second.closed
    reset_engine()


def test_interpreter_exit_closes_the_backend_on_the_engine_thread(tmp_path: object) -> None:
    """The kernel-exit hook: atexit runs while the daemon thread is still alive."""
    script = textwrap.dedent(
        """
        import threading
        from dockrion_nb.backends import InMemoryBackend
        from dockrion_nb.engine import get_engine

        class Noisy(InMemoryBackend):
            async def close(self):
                print("closed on", threading.current_thread().name, flush=True)
                await super().close()

        get_engine().use(Noisy())
        print("exiting", flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["exiting", "closed on dockrion-nb-engine"]


def test_backend_location_masks_passwords() -> None:
    where = backend_location({"backend": "redis", "url": "redis://:hunter2@h:6379/0"})
    assert where == "redis at redis://***@h:6379/0"
    assert "hunter2" not in where
