"""Bytes per stored event: ``python -m bench.footprint SIDE KIND N MODE`` in a fresh process.

``SIDE`` is ``ours`` or ``dockrion``, ``KIND`` ``token`` or ``checkpoint``, ``MODE``
``tracemalloc`` (bytes Python allocated and still holds) or ``rss`` (the process's resident
set, read from ``/proc/self/status``). Each figure comes from a process of its own, so what an
earlier fill freed cannot be reused by the next and tracemalloc's own tables stay out of the
RSS figure. The process imports both packages, publishes a warm-up run of 1,000 events and
clears it (caches, lazy imports), takes the baseline, then publishes ``N`` events to one run of
its memory backend (``max_events_per_run`` = N, no subscriber), each built in the loop as agent
code builds it (ours without a sequence, Dockrion's numbered as its StreamContext does),
collects garbage and takes the figure again. Prints ``{"bytes_per_event": ..., "top": [...]}``
as JSON; ``top`` (tracemalloc only) names the source lines that allocated what is held.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from .sides import DOCKRION, OURS, BenchConfig, Side, content

WARMUP = 1_000


def rss_bytes() -> int:
    """Resident set size now (VmRSS), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def checkpoint_data(i: int) -> dict[str, Any]:
    """A small checkpoint payload, different for every event, the same on both sides."""
    return {"node": content(i).strip() or "step", "attempt": i % 3, "ok": i % 7 != 0}


def builder(impl: str, kind: str) -> Callable[[str, int], Any]:
    """The ``i``-th event of ``kind`` as agent code builds it."""
    if impl == OURS:
        from dockrion_nb.events import CheckpointEvent, TokenEvent

        if kind == "token":
            return lambda run_id, i: TokenEvent(run_id=run_id, content=content(i))
        return lambda run_id, i: CheckpointEvent(
            run_id=run_id, name="state", data=checkpoint_data(i)
        )
    from dockrion_events.models import CheckpointEvent as DCheckpoint
    from dockrion_events.models import TokenEvent as DToken

    if kind == "token":
        return lambda run_id, i: DToken(run_id=run_id, sequence=i + 1, content=content(i))
    return lambda run_id, i: DCheckpoint(
        run_id=run_id, sequence=i + 1, name="state", data=checkpoint_data(i)
    )


async def fill(side: Side, run_id: str, n: int, build: Callable[[str, int], Any]) -> None:
    publish = side.bus.publish
    for i in range(n):
        await publish(run_id, build(run_id, i))


async def measure(impl: str, kind: str, n: int, mode: str) -> dict[str, Any]:
    """Bytes held per stored event after ``n`` events of ``kind`` were published, and (with
    tracemalloc) the lines that allocated them."""
    logging.disable(logging.CRITICAL)  # Dockrion logs a record per publish
    build = builder(impl, kind)
    side = Side(impl, "memory", BenchConfig(max_events_per_run=max(n, WARMUP)))
    async with side:
        await fill(side, "footprint-warmup", WARMUP, build)
        await side.bus.clear_run("footprint-warmup")
        if impl == DOCKRION:  # its clear_run leaves the run's (now empty) list behind
            side.backend._events.pop("footprint-warmup", None)
        gc.collect()
        if mode == "tracemalloc":
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        else:
            before = rss_bytes()
        await fill(side, "footprint-run", n, build)
        gc.collect()
        top: list[str] = []
        if mode == "tracemalloc":
            after = tracemalloc.get_traced_memory()[0]
            top = top_sites(tracemalloc.take_snapshot(), n)
            tracemalloc.stop()
        else:
            after = rss_bytes()
        stored = await side.bus.get_events("footprint-run", 0)
        if len(stored) != n:
            raise RuntimeError(f"{impl}: {len(stored)} events stored, expected {n}")
    return {"bytes_per_event": (after - before) / n, "top": top}


def top_sites(snapshot: tracemalloc.Snapshot, n: int, limit: int = 8) -> list[str]:
    """The source lines holding the most memory, as bytes per stored event."""
    stats = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    out = []
    for stat in stats.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        where = "/".join(frame.filename.split("/")[-2:])
        out.append(f"{stat.size / n:6.1f} B/event in {stat.count:,} blocks: {where}:{frame.lineno}")
    return out


def main(argv: list[str]) -> int:
    impl, kind, n, mode = argv[0], argv[1], int(argv[2]), argv[3]
    if impl not in (OURS, DOCKRION) or kind not in ("token", "checkpoint"):
        raise SystemExit("usage: python -m bench.footprint ours|dockrion token|checkpoint N MODE")
    if mode not in ("tracemalloc", "rss"):
        raise SystemExit(f"MODE is tracemalloc or rss, not {mode!r}")
    print(json.dumps(asyncio.run(measure(impl, kind, n, mode))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
