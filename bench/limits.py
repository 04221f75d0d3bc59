"""What limits a row that misses its target: per-call costs measured now, in plain words.

The profile says where the time went; these notes put it next to the figures that bound it
(what one serialisation or one model parse costs on this machine, in this run).
"""

from __future__ import annotations

import json
import timeit
from typing import Any

from .report import Row


def micro_costs(number: int = 20_000) -> dict[str, float]:
    """Microseconds per call of the steps both buses share or differ in."""
    from dockrion_events.models import TokenEvent as DToken
    from dockrion_events.models import parse_event as dparse

    from dockrion_nb.events import TokenEvent, parse_event, with_sequence

    run_id = "bench-0123abcd-redis-replay-42"
    ours = TokenEvent(run_id=run_id, content=" invoice")
    theirs = DToken(run_id=run_id, sequence=1, content=" invoice")
    wire = {**ours.to_dict(), "sequence": 1}
    text = json.dumps(wire)

    def us(fn: Any) -> float:
        return timeit.timeit(fn, number=number) / number * 1e6

    return {
        "ours_to_dict": us(ours.to_dict),
        "dockrion_to_dict": us(theirs.to_dict),
        "ours_copy": us(lambda: with_sequence(ours, 2)),
        "ours_parse": us(lambda: parse_event(wire)),
        "dockrion_parse": us(lambda: dparse(wire)),
        "json_loads": us(lambda: json.loads(text)),
        "ours_build": us(lambda: TokenEvent(run_id=run_id, content=" invoice")),
        "dockrion_build": us(lambda: DToken(run_id=run_id, sequence=1, content=" invoice")),
    }


def explain(row: Row, costs: dict[str, float]) -> str:
    """A short account of what bounds ``row``; empty when there is nothing specific to say."""
    c = costs
    key = row.key
    target = row.target.min_ratio if row.target and row.target.min_ratio else None
    if key in ("1a", "1b") and row.dockrion and target:
        theirs = 1e6 / row.dockrion
        text = (
            f"Dockrion's publish costs {theirs:.2f} µs per event here; the target needs ours "
            f"under {theirs / target:.2f} µs. Dockrion serialises every event to its wire dict "
            f"(pydantic `model_dump`, {c['dockrion_to_dict']:.2f} µs); ours stores the model "
            "itself in the memory backend (the wire dict is made only for Dockrion's protocol) "
            f"and sets the assigned sequence on a cheap copy ({c['ours_copy']:.2f} µs), so what "
            "remains is the bus and backend bookkeeping: run-id check, sequence, the run's log, "
            "and each subscriber's asyncio.Queue."
        )
        if key == "1b":
            text += (
                " With a subscriber, Dockrion's 100-slot queue fills and every later event "
                "is dropped (one log record each), so its publisher does almost no delivery "
                "work; ours hands every event to the subscriber, which runs in the same loop, "
                "so this row times publishing and delivering together (the asyncio share below)."
            )
        return text
    if key in ("1d", "1e", "1f") and row.dockrion and target:
        theirs = 1e6 / row.dockrion
        text = (
            f"Strict: Dockrion's build + publish costs {theirs:.2f} µs per event here; the "
            f"target needs ours under {theirs / target:.2f} µs. Building one token event costs "
            f"ours {c['ours_build']:.2f} µs (filled in directly: an id from a block, a UTC "
            f"timestamp, the model's four slots) and Dockrion {c['dockrion_build']:.2f} µs "
            "(pydantic validation, uuid4). What ours adds: the run-id and content checks, "
            "the sequence (set in place: the loop's event is held by no one else; a copy, "
            f"{c['ours_copy']:.2f} µs, when the caller keeps it), the compact record the "
            "store keeps, and handing the event to each subscriber, whose task runs in the "
            "same loop and takes every event."
        )
        if key == "1f":
            text += (
                " With 10 subscribers ours delivers every event ten times; Dockrion's queues "
                "are full after 100 events, so it delivers 0.5% and its publisher only "
                "catches QueueFull (its warning is off here)."
            )
        return text
    if key in ("3c", "3d"):
        return (
            "Dockrion PUBLISHes first (the first of its three round trips) and stores after, so "
            "its subscriber hears an event one plain PUBLISH round trip after the call starts, "
            "before the event is stored. Ours sends one server-side script that numbers, stores "
            "(XADD, EXPIRE, counter) and publishes (about 28 µs on the server against about "
            "1 µs for a plain PUBLISH); both our connections are read in the socket's callback "
            "(no redis-py reader task), so what remains is that script time and one event-loop "
            "step to the follower's task. The publish-call times below show the round trips; "
            "the profile is mostly the pacing sleeps."
        )
    if key in ("4d",) and row.dockrion:
        return (
            f"Both sides read every entry and parse it: JSON ({c['json_loads']:.2f} µs) and a "
            f"pydantic model (ours {c['ours_parse']:.2f} µs with its run-id and timestamp "
            f"validators, Dockrion {c['dockrion_parse']:.2f} µs). The target needs ours under "
            f"{row.dockrion / (target or 1):.0f} ms; the raw read alone (no JSON, no models) "
            f"takes {row.ceiling or float('nan'):.0f} ms, and allocating 100,000 models "
            "triggers full garbage-collector passes on both sides."
        )
    return ""
