"""The kernel-side engine: one private asyncio loop on a daemon thread.

A notebook cell that blocks (an agent running for a minute) blocks the kernel's own loop, so
anything scheduled there stalls until the cell ends. The engine's loop keeps running: backend
I/O, subscriptions and widget updates happen here, and comm messages sent from this thread reach
the browser while the cell still runs. This is the one place where sync code meets async code;
every backend object is created on and used from this loop only.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from .backends import build_backend
from .backends.base import BackendConnectionError, BackendError, EventBackend, RunLogBackend
from .bus import EventBus
from .config import ConfigError, StreamingConfig
from .context import StreamContext
from .filters import EventsFilter
from .redaction import mask_url, masked_logger, scrub

log = masked_logger("dockrion_nb.engine")
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
FOLLOWER_SETTLE = 5.0
"""Seconds a traced run that ends waits, at most, for this process's live views of it."""


class Settling:
    """What a live view of a run gives the engine: ``settled`` is set once the view has taken
    in the run's end and sent its last state. A plain object, so views are held weakly."""

    def __init__(self, run_id: str, settled: threading.Event) -> None:
        self.run_id = run_id
        self.settled = settled


class Engine:
    """Owns the loop, the active backend and the tasks that read from it."""

    def __init__(self, name: str = "dockrion-nb-engine") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        self._bus: EventBus | None = None
        self._config: StreamingConfig | None = None
        # task -> the backend generation it was spawned under; a switch ends older ones only.
        self._tasks: dict[asyncio.Task[Any], int] = {}
        self._generation = 0
        self._switch_listeners: list[Callable[[EventBus], Any]] = []
        # Contexts handed out, for ``run``'s read-after-write (weakly: they end with their run).
        self._contexts: weakref.WeakSet[StreamContext] = weakref.WeakSet()
        # Live views' settling marks (weakly: a view that is dropped stops counting).
        self._followers: weakref.WeakSet[Settling] = weakref.WeakSet()
        self._lock = threading.RLock()
        self._closed = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    # -- running coroutines ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def in_engine_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the engine loop from any thread."""
        if self._closed:
            coro.close()
            raise RuntimeError("the dockrion-nb engine is shut down")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = DEFAULT_TIMEOUT) -> T:
        """Run ``coro`` on the engine loop and wait for its result (sync callers).

        Events that this engine's contexts emitted and have not stored yet are stored first,
        so a read after a write (``sync_emit_token`` then ``replay``) sees the write."""
        if self.in_engine_thread:
            coro.close()
            raise RuntimeError("Engine.run() called from the engine thread; await it instead")
        for ctx in list(self._contexts):
            if ctx.pending:
                with contextlib.suppress(Exception):  # the emitter hears of its failures
                    ctx.sync_flush(timeout, report=False)
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"the engine did not answer within {timeout} s") from None

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the engine loop from another loop (async callers)."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start a long-lived task (a subscription) that ends when the backend is switched."""
        generation = self._generation

        async def tracked() -> Any:
            task = asyncio.current_task()
            assert task is not None
            if generation != self._generation:
                # The backend it was meant for was switched out before it started.
                coro.close()
                raise asyncio.CancelledError
            self._tasks[task] = generation
            try:
                return await coro
            finally:
                self._tasks.pop(task, None)

        return self.submit(tracked())

    # -- the backend ----------------------------------------------------------------------------

    @property
    def config(self) -> StreamingConfig:
        return self._config or StreamingConfig()

    @property
    def bus(self) -> EventBus:
        """The active bus; the memory backend until ``use`` chooses another.

        Safe from any thread, the engine's included (no lock is held while waiting on the loop).
        """
        bus = self._bus
        if bus is not None:
            return bus
        with self._lock:
            if self._bus is None:
                if self._closed:
                    raise RuntimeError("the dockrion-nb engine is shut down")
                # The memory backend needs no I/O to build, so no trip to the loop.
                self._bus = EventBus(build_backend(StreamingConfig()))
                self._config = StreamingConfig()
            return self._bus

    @property
    def backend(self) -> EventBackend:
        return self.bus.backend

    def describe(self) -> dict[str, Any]:
        """The active backend's settings, fit to show (passwords masked)."""
        backend = self.bus.backend
        if isinstance(backend, RunLogBackend):
            return backend.describe()
        return {"backend": type(backend).__name__}

    def location(self) -> str:
        """One phrase naming the active backend, e.g. ``redis at redis://***@host:6379/0``."""
        return backend_location(self.describe())

    def use(
        self,
        config: StreamingConfig | Mapping[str, Any] | EventBackend | None = None,
        *,
        ping: bool = True,
    ) -> EventBus:
        """Switch to the backend ``config`` asks for (or to a backend object).

        The new backend is built and pinged first; only then is the old one closed, with every
        subscription the engine runs on it, so a failed switch leaves the old backend working.
        Raises ``ConfigError`` for a bad configuration and ``BackendConnectionError`` (password
        masked) when the new backend cannot be reached.
        """
        if isinstance(config, StreamingConfig | Mapping) or config is None:
            cfg = (
                config
                if isinstance(config, StreamingConfig)
                else StreamingConfig.from_mapping(config)
            )
            new_bus = self.run(self._build(cfg, ping))
        else:
            cfg = None
            new_bus = EventBus(config)
        with self._lock:
            if self._closed:
                raise RuntimeError("the dockrion-nb engine is shut down")
            old, self._bus, self._config = self._bus, new_bus, cfg
            self._generation += 1
            generation = self._generation
        if old is not None:
            self.run(self._retire(old, generation))
        for listener in list(self._switch_listeners):
            try:
                listener(new_bus)
            except Exception:
                log.exception("backend switch listener %r failed", listener)
        return new_bus

    async def _build(self, cfg: StreamingConfig, ping: bool) -> EventBus:
        backend = build_backend(cfg)
        if ping:
            try:
                await backend.ping()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await backend.close()
                if isinstance(exc, BackendError | ConfigError) or not isinstance(exc, Exception):
                    raise
                where = backend_location(backend.describe())
                raise BackendConnectionError(
                    scrub(f"cannot reach {where}: {exc}", _url_of(cfg)),
                    backend=backend.name,
                ) from None
        return EventBus(backend)

    async def _retire(self, bus: EventBus, generation: int | None) -> None:
        """Close ``bus`` and end the tasks spawned before ``generation`` (all when None)."""
        doomed = [t for t, g in self._tasks.items() if generation is None or g < generation]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.wait(doomed, timeout=2.0)
        with contextlib.suppress(Exception):
            await bus.close()
        if generation is None:  # the loop stops next: end what is left (drains, timers)
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            if rest:
                await asyncio.wait(rest, timeout=2.0)

    def on_switch(self, listener: Callable[[EventBus], Any]) -> Callable[[], None]:
        """Call ``listener(new_bus)`` after each backend switch; returns an unregister function."""
        self._switch_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._switch_listeners.remove(listener)

        return remove

    def add_follower(self, follower: Settling) -> None:
        """A live view of ``follower.run_id`` in this process (see ``settle_followers``)."""
        with self._lock:
            self._followers.add(follower)

    def settle_followers(self, run_id: str, timeout: float = FOLLOWER_SETTLE) -> None:
        """Wait, at most ``timeout`` seconds, until every live view of ``run_id`` in this process
        has shown the run's end. Called when a traced run (a ``%%publish`` cell) ends, so the
        views' last state goes out while the cell still runs: a front end that records
        messages per running cell (nbclient, so nbconvert) then saves the final view, and a
        user sees ``complete`` by the time the cell finishes."""
        if self.in_engine_thread:
            return  # the views are fed from here: waiting would stop them
        with self._lock:
            waiting = [f.settled for f in self._followers if f.run_id == run_id]
        deadline = time.monotonic() + timeout
        for settled in waiting:
            settled.wait(max(0.0, deadline - time.monotonic()))

    def context(
        self,
        run_id: str,
        *,
        agent_name: str | None = None,
        framework: str | None = None,
        events_filter: EventsFilter | str | list[str] | None = None,
    ) -> StreamContext:
        """A ``StreamContext`` whose calls are carried to the engine loop from any thread; its
        custom events are typed ``custom:<name>``."""
        ctx = StreamContext(
            run_id,
            self.bus,
            agent_name=agent_name,
            framework=framework,
            events_filter=events_filter,
            prefix_custom=True,
            loop=self._loop,
        )
        self._contexts.add(ctx)
        return ctx

    # -- shutdown ---------------------------------------------------------------------------------

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close the backend, end every subscription and stop the loop (at kernel exit)."""
        with self._lock:
            if self._closed:
                return
            bus, self._bus = self._bus, None
            if bus is not None and self._loop.is_running() and not self.in_engine_thread:
                with contextlib.suppress(Exception):
                    self.run(self._retire(bus, None), timeout)
            self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _url_of(cfg: StreamingConfig) -> str:
    if cfg.redis is None:
        return ""
    try:
        return cfg.redis.resolved_url()
    except ConfigError:
        return cfg.redis.url


def backend_location(info: Mapping[str, Any]) -> str:
    """Where runs live, for messages: ``redis at redis://***@host:6379/0``, ``memory (...)``."""
    name = str(info.get("backend", "backend"))
    url = info.get("url")
    if url:
        return f"{name} at {mask_url(str(url))}"
    if name == "memory":
        return "memory (this process)"
    return name


_engine: Engine | None = None
_engine_lock = threading.Lock()


def _shutdown_at_exit() -> None:
    """Kernel (interpreter) exit: close the backend while the engine thread still runs.

    ``atexit`` handlers run before daemon threads are stopped, so Redis connections are closed
    properly instead of being dropped mid-command.
    """
    engine = _engine
    if engine is not None:
        engine.shutdown(timeout=3.0)


atexit.register(_shutdown_at_exit)


def get_engine() -> Engine:
    """The process's engine, started on first use and shut down at interpreter exit."""
    global _engine
    with _engine_lock:
        if _engine is None or _engine.closed:
            _engine = Engine()
        return _engine


def reset_engine() -> None:
    """Shut the engine down (tests and ``%unload_ext``); the next use starts a fresh one."""
    global _engine
    with _engine_lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.shutdown()


__all__ = ["BackendConnectionError", "Engine", "backend_location", "get_engine", "reset_engine"]
