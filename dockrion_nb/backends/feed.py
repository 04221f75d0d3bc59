"""A subscriber's bounded feed: what the memory backend's subscribers and the Redis hub's
followers both queue their events in."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    """Items for one reader, in order. Offering is an append (and a wake-up only while the
    reader waits), about a third of an ``asyncio.Queue``'s cost per event. Past ``limit`` items
    it drops and marks itself ``behind``: once drained, the reader catches up from the store."""

    __slots__ = ("behind", "items", "limit", "waiter")

    def __init__(self, limit: int) -> None:
        self.items: deque[T] = deque()
        self.limit = limit
        self.waiter: asyncio.Future[None] | None = None
        self.behind = False

    def offer(self, item: T) -> int:
        """Queue ``item`` (or mark the feed behind); how many items are queued now."""
        items = self.items
        queued = len(items)
        if self.behind:
            return queued
        if queued >= self.limit:
            self.behind = True  # drop now; the store fills in what was missed
        else:
            items.append(item)
            queued += 1
        waiter = self.waiter  # ``wake``, inline: this runs once per event and subscriber
        if waiter is not None:
            self.waiter = None  # woken once: later offers before the reader runs skip this
            if not waiter.done():
                waiter.set_result(None)
        return queued

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the next ``offer`` or ``wake``."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self.waiter is waiter:
                self.waiter = None
