"""Joining replay and live delivery with no gap and no duplicate.

Used by the bus for backends that only speak Dockrion's protocol and by the Redis backend. The
live source must already be subscribed when this starts; events it delivers while the replay is
read are deduplicated by sequence, and a jump in sequence is filled from the store, which is
the authority: a live event the store never holds is not delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from ..events import BaseEvent, as_wire
from .base import EventDict, StoredEvent, gap_event

Fetch = Callable[[int], Awaitable[list[EventDict]] | Awaitable[list[BaseEvent]]]


def sequence_of(event: StoredEvent) -> int:
    """The sequence of a stored event (wire dict or model); 0 when it has none."""
    if not isinstance(event, dict):
        return event.sequence
    seq = event.get("sequence")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


CONFIRM_DELAYS = (0.02, 0.08, 0.3)
"""Seconds between looks at the store for a live event that came ahead of it: a writer that
publishes before it stores (Dockrion does) stores it a moment later."""


class Joiner:
    """State of one subscriber: the next sequence it expects.

    A live event numbered past the next expected one is trusted only once the store holds it:
    the store's events are delivered instead, and a message the store never holds (a stray
    writer, a bug) is skipped and counted in ``unconfirmed``, never delivered. Delivering it
    would make the real events below its number look like repeats and silence the follower.
    """

    def __init__(
        self,
        run_id: str,
        from_sequence: int,
        fetch: Fetch,
        on_unconfirmed: Callable[[StoredEvent], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.next_sequence = max(1, from_sequence)
        self._fetch = fetch
        self.unconfirmed = 0
        self._on_unconfirmed = on_unconfirmed

    async def fill(self, before: int | None = None) -> AsyncIterator[StoredEvent]:
        """Stored events from ``next_sequence`` (up to ``before``), with a gap event where the
        store no longer has what was asked for."""
        for event in await self._fetch(self.next_sequence):
            seq = sequence_of(event)
            if seq < self.next_sequence:
                continue
            if before is not None and seq >= before:
                break
            if seq > self.next_sequence:
                yield gap_event(self.run_id, self.next_sequence, seq - 1, "no longer stored")
            yield event
            self.next_sequence = seq + 1

    async def accept(self, event: StoredEvent) -> AsyncIterator[StoredEvent]:
        """A live event: drop it if already seen, fill the gap before it if there is one."""
        if (event.get("type") if isinstance(event, dict) else event.type) == "gap":
            async for stored in self.fill():
                yield stored
            return
        seq = sequence_of(event)
        if seq == 0:  # written without a sequence by someone else: pass it on
            yield event
            return
        if seq < self.next_sequence:
            return
        if seq == self.next_sequence:
            yield event
            self.next_sequence = seq + 1
            return
        # Ahead of what this subscriber has: deliver what the store holds, this event's copy
        # included once it is there (a gap event where the store lacks earlier ones).
        async for stored in self.fill():
            yield stored
        for delay in CONFIRM_DELAYS:
            if seq < self.next_sequence:
                return
            await asyncio.sleep(delay)
            async for stored in self.fill():
                yield stored
        if seq >= self.next_sequence:
            self.unconfirmed += 1
            if self._on_unconfirmed is not None:
                self._on_unconfirmed(event)


async def join_replay_and_live(
    run_id: str, from_sequence: int, fetch: Fetch, live: AsyncIterator[EventDict] | None
) -> AsyncIterator[EventDict]:
    """Replay from the store, then ``live`` (already subscribed), each sequence once."""
    joiner = Joiner(run_id, from_sequence, fetch)
    async for event in joiner.fill():
        yield event if isinstance(event, dict) else as_wire(event)  # always a dict here
    if live is None:
        return
    async for event in live:
        async for out in joiner.accept(event):
            yield out if isinstance(out, dict) else as_wire(out)
