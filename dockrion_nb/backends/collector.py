"""Pausing Python's garbage collector over bulk model building.

Building thousands of models (a replay read from Redis, or rebuilt from the memory backend's
compact records) allocates a dict or list per event, which sets off full collector passes:
about a third of a 100,000-event replay. Nothing built there is garbage, so the passes wait
until the batch is done.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off for the block, and back on afterwards only if it was on. Other tasks
    that run meanwhile (a Redis read awaits the server) only find it paused for that long."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
