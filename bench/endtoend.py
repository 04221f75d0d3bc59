"""End-to-end rows: ``StreamContext.emit_token`` in agent code to the event in a subscriber's hand.

Both sides, under the strict conditions (each event built by the context's own call, logging
switched off with ``logging.disable``), with one subscriber of the run on the bus's loop:

- in the bus's loop: ``await ctx.emit_token(...)`` ``n`` times;
- from a thread: a plain thread calls ``ctx.sync_emit_token(...)`` ``n`` times while the bus and
  the subscriber run on the loop of the thread that started it (the notebook engine's shape).
  Ours hands events to the bus's loop through the context's outbox (``loop=`` tells it which
  loop); Dockrion's ``sync_emit_token`` runs ``asyncio.run(bus.publish(...))`` on the calling
  thread for each event, which is what its sync API does when that thread has no loop.

Throughput is events over the time from the first emit to the last event received (or the end
of emitting, when a subscriber stops receiving); latency is from just before the emit call to
the subscriber's receipt, matched by sequence (ours numbered by the bus in emission order,
Dockrion's by its context).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import threading
import time
from typing import Any

from .scenarios import Counter, Delivery, Latency, logging_off, profiled
from .sides import OURS, Side, content


def context(side: Side, run_id: str, loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """The side's own ``StreamContext`` on its bus; ours told which loop the bus lives on."""
    if side.impl == OURS:
        from dockrion_nb import StreamContext

        return StreamContext(run_id, side.bus, loop=loop)
    from dockrion_events import StreamContext as DContext

    return DContext(run_id, side.bus)


async def _wait_subscribed(side: Side, run_id: str, counter: Counter) -> None:
    if counter.counts:
        await side.wait_subscribed(run_id, len(counter.counts))


async def emit_in_loop(
    side: Side, run_id: str, n: int, *, settle: float = 0.5, prof: cProfile.Profile | None = None
) -> Delivery:
    """``await ctx.emit_token`` ``n`` times on the bus's loop, one subscriber."""
    ctx = context(side, run_id)
    counter = Counter(1, n)
    counter.start(lambda: side.subscribe(run_id))
    try:
        await _wait_subscribed(side, run_id, counter)
        gc.collect()
        with profiled(prof), logging_off(True):
            t0 = time.perf_counter()
            for i in range(n):
                await ctx.emit_token(content(i))
            t_emit = time.perf_counter() - t0
            await counter.settle(settle, 120.0)
    finally:
        await counter.stop()
    end = max([t0 + t_emit, *counter.last_at])
    return Delivery(n, t_emit, end - t0, [c / n for c in counter.counts])


async def emit_from_thread(
    side: Side, run_id: str, n: int, *, settle: float = 0.5, prof: cProfile.Profile | None = None
) -> Delivery:
    """A thread calls ``ctx.sync_emit_token`` ``n`` times; the subscriber runs on this loop.
    ``prof`` profiles the agent's thread (what an emit costs the caller)."""
    loop = asyncio.get_running_loop()
    ctx = context(side, run_id, loop)
    counter = Counter(1, n)
    counter.start(lambda: side.subscribe(run_id))
    t0 = t_end = 0.0

    def agent() -> None:
        nonlocal t0, t_end
        emit = ctx.sync_emit_token
        with profiled(prof):
            t0 = time.perf_counter()
            for i in range(n):
                emit(content(i))
            t_end = time.perf_counter()

    try:
        await _wait_subscribed(side, run_id, counter)
        gc.collect()
        with logging_off(True):
            await _in_thread(agent)
            await counter.settle(settle, 120.0)
    finally:
        await counter.stop()
        await _close(ctx)
    end = max([t_end, *counter.last_at])
    return Delivery(n, t_end - t0, end - t0, [c / n for c in counter.counts])


async def thread_latency(
    side: Side,
    run_id: str,
    n: int,
    rate: float,
    *,
    settle: float = 0.5,
    prof: cProfile.Profile | None = None,
) -> Latency:
    """A thread emits ``n`` tokens at ``rate``/s with ``sync_emit_token``; from just before
    each call to the subscriber's receipt, and how long each call kept the thread. ``prof``
    profiles the bus's loop (hand-off, publish, delivery), not the pacing thread."""
    loop = asyncio.get_running_loop()
    ctx = context(side, run_id, loop)
    sent = [0.0] * n
    calls = [0.0] * n
    arrived: dict[int, float] = {}

    def stamp(event: Any) -> None:
        arrived[int(event.sequence)] = time.perf_counter()

    counter = Counter(1, n)
    counter.start(lambda: side.subscribe(run_id), stamp)

    def agent() -> None:
        emit = ctx.sync_emit_token
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                # a real sleep (it releases the GIL): a spinning thread would hold the bus's
                # loop off for a whole switch interval (5 ms)
                time.sleep(delay)
            sent[i] = time.perf_counter()
            emit(content(i))
            calls[i] = (time.perf_counter() - sent[i]) * 1000

    try:
        await _wait_subscribed(side, run_id, counter)
        gc.collect()
        with profiled(prof), logging_off(True):
            await _in_thread(agent)
            await counter.settle(settle, 30.0)
    finally:
        await counter.stop()
        await _close(ctx)
    samples = [(arrived[i + 1] - sent[i]) * 1000 for i in range(n) if i + 1 in arrived]
    return Latency(n, samples, calls)


async def _close(ctx: Any) -> None:
    """Close a context that has an outbox of its own (ours; Dockrion's has none)."""
    close = getattr(ctx, "close", None)
    if close is not None:
        await asyncio.to_thread(close)


async def _in_thread(fn: Any) -> None:
    """Run ``fn`` on a new plain thread (not an executor's: agent code owns its threads) and
    wait for it without blocking this loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    failure: list[BaseException] = []

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised on the loop
            failure.append(exc)
        finally:
            loop.call_soon_threadsafe(finished)

    thread = threading.Thread(target=body, name="bench-agent", daemon=True)
    thread.start()
    await done
    thread.join()
    if failure:
        raise failure[0]
