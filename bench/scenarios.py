"""One coroutine per measurement; each runs the same code against whichever ``Side`` it gets.

Every function returns plain figures; the runner pairs them into table rows. Runs are bounded:
publishing stops after ``n`` events, and subscribers are waited for until they have everything
or have received nothing new for ``settle`` seconds (Dockrion's drop events, so "everything"
may never come), capped at ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import ceiling
from .sides import BenchConfig, Side


@contextlib.contextmanager
def profiled(prof: cProfile.Profile | None) -> Any:
    """Profile only the timed part of a scenario (not setup, not building events)."""
    if prof is None:
        yield
        return
    prof.enable()
    try:
        yield
    finally:
        prof.disable()


@contextlib.contextmanager
def logging_off(strict: bool) -> Any:
    """``logging.disable(logging.CRITICAL)`` for the timed part of a strict row, as a user
    would silence Dockrion's per-event warnings; the previous level comes back after."""
    if not strict:
        yield
        return
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)


@dataclass
class Delivery:
    """Throughput of publishing ``n`` events and what each subscriber received."""

    n: int
    publish_seconds: float
    end_to_end_seconds: float
    delivered: list[float] = field(default_factory=list)  # per subscriber, fraction of n

    @property
    def publish_rate(self) -> float:
        return self.n / self.publish_seconds

    @property
    def end_to_end_rate(self) -> float:
        return self.n / self.end_to_end_seconds

    @property
    def delivered_min(self) -> float | None:
        return min(self.delivered) if self.delivered else None

    @property
    def delivered_max(self) -> float | None:
        return max(self.delivered) if self.delivered else None


@dataclass
class Latency:
    """Publish-call-to-receipt times, and how long the publish call itself took."""

    sent: int
    samples_ms: list[float]
    calls_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        return percentile(self.samples_ms, p)

    @property
    def received(self) -> float:
        return len(self.samples_ms) / self.sent if self.sent else 0.0

    @classmethod
    def pooled(cls, runs: list[Latency]) -> Latency:
        """Several repeats as one (percentiles pool every sample)."""
        return cls(
            sum(x.sent for x in runs),
            [v for x in runs for v in x.samples_ms],
            [v for x in runs for v in x.calls_ms],
        )


def percentile(values: list[float], p: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    return data[min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))]


class Counter:
    """Subscriber tasks that count what they receive and stamp when it arrived."""

    def __init__(self, n_subs: int, expected: int) -> None:
        self.counts = [0] * n_subs
        self.last_at = [0.0] * n_subs
        self.expected = expected
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, make: Callable[[], Any], on_event: Callable[[Any], None] | None = None) -> None:
        for k in range(len(self.counts)):
            self.tasks.append(asyncio.create_task(self._consume(k, make, on_event)))

    async def _consume(
        self, k: int, make: Callable[[], Any], on_event: Callable[[Any], None] | None
    ) -> None:
        async with contextlib.aclosing(make()) as source:
            async for event in source:
                self.counts[k] += 1
                self.last_at[k] = time.perf_counter()
                if on_event is not None:
                    on_event(event)
                if self.counts[k] >= self.expected:
                    return

    async def settle(self, settle: float, limit: float) -> None:
        """Until every subscriber has ``expected`` events or nothing arrived for ``settle`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        seen = -1
        quiet_since = loop.time()
        while loop.time() < deadline:
            if all(t.done() for t in self.tasks):
                break
            total = sum(self.counts)
            if total != seen:
                seen, quiet_since = total, loop.time()
            elif loop.time() - quiet_since >= settle:
                break
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                raise r


async def publish_throughput(
    side: Side,
    run_id: str,
    n: int,
    n_subs: int,
    *,
    batch: int | None = None,
    raw: Any = None,
    settle: float = 0.5,
    limit: float = 120.0,
    prof: cProfile.Profile | None = None,
    strict: bool = False,
) -> Delivery:
    """Publish ``n`` events (one by one, or ``batch`` at a time) with ``n_subs`` subscribers
    attached; publish rate, end-to-end rate and per-subscriber delivery. Kind: events built
    before the clock. Strict: each built inside the timed loop, logging disabled meanwhile."""
    events = [] if strict else side.events(run_id, n)
    make = side.builder()
    publish = side.bus.publish  # both buses' own call, no wrapper of ours in the timed loop
    counter = Counter(n_subs, n)
    counter.start(lambda: side.subscribe(run_id))
    try:
        if n_subs:
            await side.wait_subscribed(run_id, n_subs, raw)
        gc.collect()
        with profiled(prof), logging_off(strict):
            t0 = time.perf_counter()
            if batch and strict:
                for k in range(0, n, batch):
                    chunk = [make(run_id, i) for i in range(k, min(n, k + batch))]
                    await side.publish_batch(run_id, chunk)
            elif batch:
                for k in range(0, n, batch):
                    await side.publish_batch(run_id, events[k : k + batch])
            elif strict:
                for i in range(n):
                    await publish(run_id, make(run_id, i))
            else:
                for event in events:
                    await publish(run_id, event)
            t_pub = time.perf_counter() - t0
            await counter.settle(settle, limit)
    finally:
        await counter.stop()
    end = max([t0 + t_pub, *counter.last_at])
    return Delivery(n, t_pub, end - t0, [c / n for c in counter.counts])


async def paced_latency(
    side: Side,
    run_id: str,
    n: int,
    rate: float,
    *,
    raw: Any = None,
    settle: float = 0.5,
    prof: cProfile.Profile | None = None,
) -> Latency:
    """One subscriber; publish ``n`` events at ``rate``/s; publish-call to receipt, per event."""
    events = side.events(run_id, n)
    sent = [0.0] * n
    calls = [0.0] * n
    arrived: dict[int, float] = {}

    def stamp(event: Any) -> None:
        arrived[int(event.sequence)] = time.perf_counter()

    counter = Counter(1, n)
    counter.start(lambda: side.subscribe(run_id), stamp)
    try:
        await side.wait_subscribed(run_id, 1, raw)
        gc.collect()
        with profiled(prof):
            t0 = time.perf_counter()
            for i, event in enumerate(events):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[i] = time.perf_counter()
                await side.publish(run_id, event)
                calls[i] = (time.perf_counter() - sent[i]) * 1000
            await counter.settle(settle, 30.0)
    finally:
        await counter.stop()
    samples = [(arrived[i + 1] - sent[i]) * 1000 for i in range(n) if i + 1 in arrived]
    return Latency(n, samples, calls)


async def raw_paced_latency(
    client: Any, run_id: str, n: int, rate: float, cfg: BenchConfig
) -> Latency:
    """The ceiling for latency: raw XADD+EXPIRE+PUBLISH per event, a raw Pub/Sub listener."""
    dicts = ceiling.wire_dicts(run_id, n)
    sub = ceiling.RawSubscriber(client, run_id, n, times=True)
    await sub.start()
    sent = [0.0] * n
    try:
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        for i, d in enumerate(dicts):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            await ceiling.pipelined_publish(client, run_id, [d], cfg, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.done.wait(), 10)
    finally:
        await sub.stop()
    arrivals = sub.arrivals or {}
    return Latency(n, [(arrivals[i + 1] - sent[i]) * 1000 for i in range(n) if i + 1 in arrivals])


async def raw_publish(
    client: Any, run_id: str, n: int, n_subs: int, batch: int, cfg: BenchConfig
) -> Delivery:
    """The ceiling for publishing: raw pipelines, ``batch`` events per round trip, with
    ``n_subs`` raw Pub/Sub listeners attached."""
    dicts = ceiling.wire_dicts(run_id, n)
    subs = [ceiling.RawSubscriber(client, run_id, n) for _ in range(n_subs)]
    for s in subs:
        await s.start()
    try:
        await asyncio.sleep(0.05 if subs else 0)
        gc.collect()
        t0 = time.perf_counter()
        elapsed = await ceiling.pipelined_publish(client, run_id, dicts, cfg, batch)
        for s in subs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.done.wait(), 60)
    finally:
        for s in subs:
            await s.stop()
    end = max([t0 + elapsed, *(s.last_at for s in subs)])
    return Delivery(n, elapsed, end - t0, [s.count / n for s in subs])


async def populate(side: Side, run_id: str, n: int, raw: Any = None) -> None:
    """Fill a run with ``n`` events through the side's own write path; Dockrion's Redis stream
    is written with raw pipelined XADD in exactly the fields its ``store_event`` writes (its
    own publish would need about a minute for 100,000 events)."""
    step = 1000
    if side.impl == "dockrion" and side.kind == "redis":
        await ceiling.fill_stream(raw, run_id, n, side.config)
        return
    for k in range(0, n, step):
        events = side.events(run_id, min(step, n - k), start=k)
        if side.impl == "ours":
            await side.bus.publish_many(run_id, events)
        else:
            for event in events:
                await side.bus.publish(run_id, event)


async def timed_read(
    side: Side,
    run_id: str,
    from_sequence: int,
    expect: int,
    prof: cProfile.Profile | None = None,
) -> float:
    gc.collect()
    with profiled(prof):
        t0 = time.perf_counter()
        got = await side.get_events(run_id, from_sequence)
        elapsed = time.perf_counter() - t0
    if len(got) != expect:
        raise RuntimeError(f"{side.label}: replay returned {len(got)} events, expected {expect}")
    return elapsed


async def raw_read(client: Any, run_id: str, tail: int | None, chunk: int = 1000) -> float:
    """The ceiling for replay: XREVRANGE COUNT ``tail``, or the whole stream with XRANGE in
    chunks of ``chunk`` (faster from redis-py than one huge reply); no JSON, no models."""
    key = ceiling.stream_key(run_id)
    t0 = time.perf_counter()
    if tail is not None:
        await client.xrevrange(key, "+", "-", count=tail)
        return time.perf_counter() - t0
    start: bytes | str = "-"
    while True:
        entries = await client.xrange(key, min=start, max="+", count=chunk)
        if len(entries) < chunk:
            return time.perf_counter() - t0
        last = entries[-1][0]
        start = b"(" + (last if isinstance(last, bytes) else str(last).encode())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sequences_in_stream(entries: list[tuple[Any, dict[Any, Any]]]) -> list[int]:
    """The ``sequence`` of each stream entry (the field, else the JSON in ``data``)."""
    out = []
    for _id, fields in entries:
        f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        seq = f.get("sequence")
        if seq is None and "data" in f:
            seq = json.loads(f["data"]).get("sequence")
        out.append(int(seq or 0))
    return out
