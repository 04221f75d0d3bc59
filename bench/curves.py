"""Scale curves: how publish cost, replay time and memory grow with a run's size and the run count.

``python -m bench.curves`` measures both sides in one process (order alternating per repeat),
Dockrion's logging switched off with ``logging.disable`` while it runs and events built inside
the timed loop on both sides (the strict variant of the bench's publish rows), and writes
``curves.md`` (table, machine, command) and ``curves.png`` (log-log, one panel per metric).

Memory is bytes per stored event under tracemalloc, measured in a fill of its own (tracemalloc
slows allocation, so no timed figure comes from a traced fill). On Redis, publishing every
event one by one would take minutes, so runs are written by the fast path and only the last
``REDIS_SAMPLE`` events are published one by one and timed; the server's memory is not
Python's, so Redis has no memory figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ceiling, scenarios
from .report import load_average, machine
from .sides import DOCKRION, OURS, BenchConfig, Side, content

HERE = Path(__file__).resolve().parent
SIDES = (OURS, DOCKRION)
# The paragraph ``python -m bench`` puts in RESULTS.md, linking the files this module writes.
RESULTS_SECTION = """## Scale curves

How publish cost (µs per event), replay time (whole run and last 100) and memory (bytes per
stored event, tracemalloc) grow with events per run (1,000 to 100,000) and with the number of
runs (1 to 10,000 runs of 10 events, so both axes end at 100,000 stored events), on the memory
backend and on Redis, both sides in one process, Dockrion's logging off and events built in the
timed loop: table in [curves.md](curves.md), log-log plot in [curves.png](curves.png). Made by
`python -m bench.curves` (about 2 minutes; `--quick` for small sizes, `--output-dir` to write
elsewhere, `--no-redis` for the memory backend only), separately from `python -m bench`."""
REDIS_SAMPLE = 1000  # events timed one by one per Redis point
TAIL = 100
READS = 3  # replay reads per fill


@dataclass(frozen=True)
class Plan:
    """The points of both axes; ``per_run`` events in each run of the runs axis."""

    events: tuple[int, ...]
    runs: tuple[int, ...]
    per_run: int
    repeats: int  # timing repeats for points of <= 10,000 events in all; larger ones get 1
    redis_sample: int = REDIS_SAMPLE


# 10 events per run: the last point of each axis holds 100,000 events (one run, or 10,000 runs),
# and the whole run stays under ~3 minutes on 2 shared cores (100 per run took ~5).
FULL = Plan(
    events=(1_000, 3_000, 10_000, 30_000, 100_000),
    runs=(1, 10, 100, 1_000, 10_000),
    per_run=10,
    repeats=3,
)
QUICK = Plan(events=(1_000, 3_000, 10_000), runs=(1, 10, 100), per_run=10, repeats=1)
TINY = Plan(events=(200, 400), runs=(1, 3), per_run=20, repeats=1, redis_sample=50)


@dataclass
class Point:
    """One side on one backend at one size: medians of the timing repeats."""

    axis: str  # "events" (events in one run) or "runs" (runs of ``per_run`` events)
    size: int
    impl: str
    kind: str
    publish_us: float
    replay_whole_ms: float
    replay_tail_ms: float | None  # None when the run has no more than TAIL events
    bytes_per_event: float | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)


@contextlib.contextmanager
def logging_off() -> Iterator[None]:
    """Dockrion logs a debug record per publish and a warning per dropped event; a user who
    measures it switches logging off, so the curves do too (ours logs nothing per event)."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def make_event(impl: str) -> Callable[[str, int], Any]:
    """A builder of the ``i``-th token event, called inside the timed loop as agent code does."""
    if impl == OURS:
        from dockrion_nb.events import TokenEvent

        return lambda run_id, i: TokenEvent(run_id=run_id, content=content(i))
    from dockrion_events.models import TokenEvent as DToken

    return lambda run_id, i: DToken(run_id=run_id, sequence=i + 1, content=content(i))


async def publish_loop(side: Side, run_ids: list[str], per_run: int, start: int = 0) -> float:
    """Publish ``per_run`` events to each run in turn, building each one in the loop; seconds."""
    build = make_event(side.impl)
    publish = side.bus.publish
    gc.collect()
    t0 = time.perf_counter()
    for run_id in run_ids:
        for i in range(start, start + per_run):
            await publish(run_id, build(run_id, i))
    return time.perf_counter() - t0


async def replay(
    side: Side, run_id: str, total: int, reads: int = READS
) -> tuple[float, float | None]:
    """Median of ``reads`` reads of the whole run and of its last ``TAIL`` events (reads are
    cheap beside a fill, and one read of a small run is mostly noise)."""
    first = 1 if side.impl == OURS else 0
    wholes, tails = [], []
    for _ in range(reads):
        wholes.append(await scenarios.timed_read(side, run_id, first, total))
        if total > TAIL:
            tails.append(await scenarios.timed_read(side, run_id, total - TAIL + 1, TAIL))
    return statistics.median(wholes), statistics.median(tails) if tails else None


async def traced_bytes(side: Side, run_ids: list[str], per_run: int) -> float:
    """Bytes Python holds per stored event after filling a fresh bus (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with side:
            await publish_loop(side, run_ids, per_run)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / (len(run_ids) * per_run)


class Curves:
    def __init__(self, plan: Plan, redis_url: str | None, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.redis_url = redis_url
        self.log = log
        self.config = BenchConfig(max_events_per_run=max(100_000, *plan.events))
        self.marker = f"curves-{uuid.uuid4().hex[:8]}"
        self.points: list[Point] = []
        self.server = "not used"
        self.raw: Any = None
        self._seq = 0

    def rid(self, what: str) -> str:
        self._seq += 1
        return f"{self.marker}-{what}-{self._seq}"

    def side(self, impl: str, kind: str) -> Side:
        return Side(impl, kind, self.config, self.redis_url if kind == "redis" else None)

    def repeats(self, events: int) -> int:
        return self.plan.repeats if events <= 10_000 else 1

    async def run(self) -> list[Point]:
        with logging_off():
            for n in self.plan.events:
                await self.memory_point("events", n, 1, n)
            for r in self.plan.runs:
                await self.memory_point("runs", r, r, self.plan.per_run)
            if self.redis_url:
                import redis.asyncio as aioredis

                self.raw = aioredis.from_url(self.redis_url)
                try:
                    self.server = await ceiling.server_version(self.raw)
                    for n in self.plan.events:
                        await self.redis_point("events", n, 1, n)
                    for r in self.plan.runs:
                        await self.redis_point("runs", r, r, self.plan.per_run)
                finally:
                    await ceiling.delete_run_keys(self.raw, self.marker)
                    await self.raw.aclose()
        return self.points

    async def memory_point(self, axis: str, size: int, runs: int, per_run: int) -> None:
        total = runs * per_run
        times: dict[str, dict[str, list[float]]] = {
            impl: {"publish": [], "whole": [], "tail": []} for impl in SIDES
        }
        for r in range(self.repeats(total)):
            for impl in SIDES[r % 2 :] + SIDES[: r % 2]:
                self.log(f"memory {axis}={size:,}: {impl}, repeat {r + 1}")
                run_ids = [self.rid(f"m{k}") for k in range(runs)]
                async with self.side(impl, "memory") as side:
                    times[impl]["publish"].append(await publish_loop(side, run_ids, per_run))
                    # replay a run from the middle of the store (the last one for one run)
                    whole, tail = await replay(side, run_ids[len(run_ids) // 2], per_run)
                    times[impl]["whole"].append(whole)
                    if tail is not None:
                        times[impl]["tail"].append(tail)
        order = SIDES if size % 2 else SIDES[::-1]
        traced = {}
        for impl in order:
            self.log(f"memory {axis}={size:,}: {impl}, tracemalloc")
            run_ids = [self.rid(f"t{k}") for k in range(runs)]
            traced[impl] = await traced_bytes(self.side(impl, "memory"), run_ids, per_run)
        for impl in SIDES:
            t = times[impl]
            self.points.append(
                Point(
                    axis,
                    size,
                    impl,
                    "memory",
                    publish_us=statistics.median(t["publish"]) / total * 1e6,
                    replay_whole_ms=statistics.median(t["whole"]) * 1e3,
                    replay_tail_ms=statistics.median(t["tail"]) * 1e3 if t["tail"] else None,
                    bytes_per_event=traced[impl],
                    samples=t,
                )
            )

    async def redis_point(self, axis: str, size: int, runs: int, per_run: int) -> None:
        """Fill by the fast path, then time the last ``redis_sample`` events one by one (the
        last of one run, or all events of the last runs) and replay a run from the middle."""
        total = runs * per_run
        timed_runs = max(1, min(runs, self.plan.redis_sample // per_run))
        sample = min(self.plan.redis_sample, per_run) if runs == 1 else per_run
        times: dict[str, dict[str, list[float]]] = {
            impl: {"publish": [], "whole": [], "tail": []} for impl in SIDES
        }
        for r in range(self.repeats(total)):
            for impl in SIDES[r % 2 :] + SIDES[: r % 2]:
                self.log(f"redis {axis}={size:,}: {impl}, repeat {r + 1}")
                # one prefix per fill, so one keyspace scan deletes all its runs
                prefix = f"{self.rid('r')}-k"
                run_ids = [f"{prefix}{k}" for k in range(runs)]
                try:
                    async with self.side(impl, "redis") as side:
                        fill = per_run - sample
                        for k, run_id in enumerate(run_ids):
                            full = k < runs - timed_runs
                            if full or fill:
                                n = per_run if full else fill
                                await scenarios.populate(side, run_id, n, self.raw)
                        seconds = await publish_loop(
                            side, run_ids[runs - timed_runs :], sample, start=per_run - sample
                        )
                        times[impl]["publish"].append(seconds / (timed_runs * sample))
                        whole, tail = await replay(side, run_ids[runs // 2], per_run)
                        times[impl]["whole"].append(whole)
                        if tail is not None:
                            times[impl]["tail"].append(tail)
                finally:
                    await ceiling.delete_run_keys(self.raw, prefix)
        for impl in SIDES:
            t = times[impl]
            self.points.append(
                Point(
                    axis,
                    size,
                    impl,
                    "redis",
                    publish_us=statistics.median(t["publish"]) * 1e6,
                    replay_whole_ms=statistics.median(t["whole"]) * 1e3,
                    replay_tail_ms=statistics.median(t["tail"]) * 1e3 if t["tail"] else None,
                    samples=t,
                )
            )


# -- output ---------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}g}" if value < 1000 else f"{value:,.0f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    """Dockrion / ours: > 1 means ours costs less."""
    if ours is None or theirs is None or ours <= 0:
        return "—"
    return f"{theirs / ours:.2f}x"


TABLE_HEADER = (
    "| axis | size | backend | publish µs/event ours | Dockrion | ratio "
    "| replay whole ms ours | Dockrion | ratio | replay last 100 ms ours | Dockrion | ratio "
    "| bytes/event ours | Dockrion | ratio |"
)


def table(points: list[Point], per_run: int) -> str:
    by = {(p.axis, p.size, p.kind, p.impl): p for p in points}
    keys = sorted(
        {(p.kind, p.axis, p.size) for p in points}, key=lambda k: (k[0] == "redis", k[1], k[2])
    )
    lines = [TABLE_HEADER, "|" + "---|" * 15]
    for kind, axis, size in keys:
        o, d = by[(axis, size, kind, OURS)], by[(axis, size, kind, DOCKRION)]
        label = (
            f"{size:,} events in 1 run"
            if axis == "events"
            else (f"{size:,} run(s) of {per_run} events")
        )
        cells = [
            "events per run" if axis == "events" else "runs",
            label,
            kind,
            _num(o.publish_us),
            _num(d.publish_us),
            _ratio(o.publish_us, d.publish_us),
            _num(o.replay_whole_ms),
            _num(d.replay_whole_ms),
            _ratio(o.replay_whole_ms, d.replay_whole_ms),
            _num(o.replay_tail_ms),
            _num(d.replay_tail_ms),
            _ratio(o.replay_tail_ms, d.replay_tail_ms),
            _num(o.bytes_per_event),
            _num(d.bytes_per_event),
            _ratio(o.bytes_per_event, d.bytes_per_event),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(
    points: list[Point], plan: Plan, info: dict[str, str], command: str, seconds: float
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return f"""# Scale curves: dockrion-nb vs Dockrion 0.0.3

`{command}`, {when}, {seconds:.0f} s. Both sides measured in this one process, order
alternating per repeat; ratio = Dockrion / ours (> 1: ours costs less).
Plot: [curves.png](curves.png).

## Machine

| | |
|---|---|
{machine_rows}

## Results

{table(points, plan.per_run)}

## How it is measured

- Token events (the bench's word list), one publisher, no subscriber; each event is built inside
  the timed loop (`TokenEvent(...)` then `await bus.publish(...)`), on both sides. Dockrion's
  logging is off (`logging.disable(logging.CRITICAL)`) for the whole measurement, as a user who
  times it would do; ours logs nothing per event. Both backends keep up to
  {max(100_000, *plan.events):,} events per run.
- publish µs/event, memory: the whole fill timed, divided by the events published. Runs axis:
  {plan.per_run} events to each run in turn, runs one after another.
- replay: `get_events` of one run (parsed models on both sides): the whole run, and the last
  {TAIL} events (`from_sequence` = total - {TAIL - 1}). Runs axis: a run from the middle of the
  store (its whole run is {plan.per_run} events, so it has no separate last-{TAIL} figure).
- Medians of {plan.repeats} repeats (fills) for points of up to 10,000 events in all, one
  above; each replay figure is the median of {READS} reads of a fill.
- bytes/event: `tracemalloc` current size after a fresh bus is filled (models, the run's log,
  the bus's bookkeeping, after `gc.collect()`), divided by the events stored; in a separate
  fill, never in a timed one. Memory backend only.
- Redis: each run is written by each side's fast path (ours `publish_many`, Dockrion raw
  pipelined XADD in the fields its `store_event` writes), then {plan.redis_sample:,} events are
  published one by one and timed, built in the loop: the last ones of the one run (events
  axis), or every event of the last runs (runs axis); replay as above. Keys use a unique
  prefix and are deleted after each fill. The server's memory is not Python's, so Redis has
  no bytes/event figure.
"""


def plot(points: list[Point], path: Path) -> None:
    """Log-log panels: publish, replay (whole solid, last 100 dashed), memory; one row per axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (
        ("publish_us", "publish, µs per event"),
        ("replay", "replay, ms (solid: whole run; dashed: last 100)"),
        ("bytes_per_event", "memory, bytes per stored event"),
    )
    axes_names = (("events", "events in one run"), ("runs", "runs (same events in each)"))
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5), squeeze=False)
    colours = {OURS: "tab:blue", DOCKRION: "tab:orange"}
    names = {OURS: "dockrion-nb", DOCKRION: "Dockrion 0.0.3"}
    for row, (axis, xlabel) in enumerate(axes_names):
        for col, (metric, title) in enumerate(metrics):
            ax = grid[row][col]
            for impl in SIDES:
                for kind, marker in (("memory", "o"), ("redis", "s")):
                    pts = sorted(
                        (p for p in points if p.axis == axis and p.impl == impl and p.kind == kind),
                        key=lambda p: p.size,
                    )
                    if not pts:
                        continue
                    label = f"{names[impl]} {kind}"
                    xs = [p.size for p in pts]
                    style = {
                        "color": colours[impl],
                        "marker": marker,
                        "linestyle": "-" if kind == "memory" else ":",
                    }
                    if metric == "replay":
                        ax.plot(xs, [p.replay_whole_ms for p in pts], label=label, **style)
                        tails = [(p.size, p.replay_tail_ms) for p in pts if p.replay_tail_ms]
                        if tails:
                            ax.plot(
                                *zip(*tails, strict=True),
                                color=colours[impl],
                                marker=marker,
                                linestyle="--",
                                alpha=0.7,
                            )
                    else:
                        ys = [getattr(p, metric) for p in pts]
                        if any(y is None for y in ys):
                            continue
                        ax.plot(xs, ys, label=label, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle("Scale curves: dockrion-nb vs Dockrion 0.0.3 (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Result:
    points: list[Point]
    markdown: str
    table_path: Path
    plot_path: Path


def run_curves(
    plan: Plan,
    output_dir: Path,
    redis_url: str | None,
    command: str,
    log: Callable[[str], None] | None = None,
) -> Result:
    started = time.monotonic()
    load_before = load_average()
    curves = Curves(plan, redis_url, log or (lambda s: print(s, file=sys.stderr, flush=True)))
    points = asyncio.run(curves.run())
    info = machine(curves.server, load_before)
    md = markdown(points, plan, info, command, time.monotonic() - started)
    output_dir.mkdir(parents=True, exist_ok=True)
    table_path, plot_path = output_dir / "curves.md", output_dir / "curves.png"
    table_path.write_text(md)
    plot(points, plot_path)
    return Result(points, md, table_path, plot_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (1k-10k, 1-100 runs)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where curves.md and curves.png go (default: bench/; with --quick a new temporary "
        "directory, so a quick run never overwrites the committed curves)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for the Redis curves (keys use a unique prefix, deleted after)",
    )
    parser.add_argument("--no-redis", action="store_true", help="memory backend only")
    args = parser.parse_args(argv)
    flags = [f for f, on in (("--quick", args.quick), ("--no-redis", args.no_redis)) if on]
    command = " ".join(["python -m bench.curves", *flags])
    output_dir = args.output_dir or (
        Path(tempfile.mkdtemp(prefix="bench-curves-")) if args.quick else HERE
    )
    result = run_curves(
        QUICK if args.quick else FULL,
        output_dir,
        None if args.no_redis else args.redis_url,
        command,
    )
    print(table(result.points, (QUICK if args.quick else FULL).per_run))
    print(f"\nwrote {result.table_path} and {result.plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
