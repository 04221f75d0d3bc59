"""The two implementations behind one small interface, with the same payloads and config.

``Side`` wraps an event bus (ours or Dockrion 0.0.3's) on one backend kind (memory or Redis) so
that every scenario runs the identical code path against both. Events are built before the
clock starts (ours without a sequence, which the bus assigns; Dockrion's numbered 1..n as its
``StreamContext`` would), so the kind rows time the bus, not model construction; the strict
rows build each event inside the timed loop with ``Side.builder``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

OURS = "ours"
DOCKRION = "dockrion"

# Token-like payloads, the same for every side; lengths vary like an LLM's tokens.
_TOKENS = (
    " the| agent| reads| an| invoice|,| checks| each| line| item| against| the| purchase| order"
    "| and| flags| mismatches|.| Total|:| 1|2|3|4|.|56| EUR|\n| Step| 3| of| 7| done| —| calling"
    '| tool| `lookup_vendor`| with| {"id":| 42}| ok'
)
WORDS = tuple(_TOKENS.split("|"))


def content(i: int) -> str:
    return WORDS[i % len(WORDS)]


@dataclass(frozen=True)
class BenchConfig:
    """The backend settings both sides get (the replay row needs >= 100,000 events)."""

    max_events_per_run: int = 100_000
    stream_ttl_seconds: int = 3600
    connection_pool_size: int = 128  # Dockrion opens one connection per subscriber


_silenced = False


def silence_dockrion_logs() -> None:
    """Dockrion's loggers print JSON lines to stdout (one warning per dropped event); send them
    to /dev/null so the table stays readable. Formatting still happens, as it would in use."""
    global _silenced
    if _silenced:
        return
    import dockrion_events
    import dockrion_events.backends.memory
    import dockrion_events.backends.redis  # noqa: F401

    sink = open(os.devnull, "w")  # noqa: SIM115  (lives for the process)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("dockrion.") and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                # exactly Dockrion's handlers: never a subclass such as pytest's log capture
                if type(handler) is logging.StreamHandler:
                    handler.setStream(sink)
    _silenced = True


def ours_redis_available() -> str | None:
    """None when our Redis backend imports, else why not."""
    try:
        from dockrion_nb.backends.redis import RedisBackend  # noqa: F401
    except Exception as exc:
        return f"dockrion_nb.backends.redis not importable ({type(exc).__name__}: {exc})"
    return None


class Side:
    """One implementation on one backend kind; ``open()`` builds a fresh bus."""

    def __init__(self, impl: str, kind: str, config: BenchConfig, url: str | None = None) -> None:
        if kind == "redis" and not url:
            raise ValueError("a Redis side needs a url")
        self.impl = impl
        self.kind = kind
        self.config = config
        self.url = url
        self.bus: Any = None
        self.backend: Any = None

    @property
    def label(self) -> str:
        return f"{self.impl}/{self.kind}"

    async def open(self) -> Side:
        cfg = self.config
        if self.impl == OURS:
            from dockrion_nb import EventBus, InMemoryBackend

            if self.kind == "memory":
                self.backend = InMemoryBackend(max_events_per_run=cfg.max_events_per_run)
            else:
                from dockrion_nb.backends.redis import RedisBackend

                self.backend = RedisBackend(
                    url=self.url,
                    stream_ttl_seconds=cfg.stream_ttl_seconds,
                    max_events_per_run=cfg.max_events_per_run,
                    connection_pool_size=cfg.connection_pool_size,
                )
                await self.backend.ping()
            self.bus = EventBus(self.backend)
        else:
            silence_dockrion_logs()
            from dockrion_events import EventBus as DEventBus
            from dockrion_events.backends.memory import InMemoryBackend as DMemory

            if self.kind == "memory":
                self.backend = DMemory(max_events_per_run=cfg.max_events_per_run)
            else:
                from dockrion_events.backends.redis import RedisBackend as DRedis

                self.backend = DRedis(
                    url=self.url or "",
                    stream_ttl_seconds=cfg.stream_ttl_seconds,
                    max_events_per_run=cfg.max_events_per_run,
                    connection_pool_size=cfg.connection_pool_size,
                )
                if not await self.backend.health_check():
                    raise RuntimeError("Dockrion's RedisBackend cannot reach the server")
            self.bus = DEventBus(self.backend)
        return self

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()
        self.bus = self.backend = None

    async def __aenter__(self) -> Side:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- events -------------------------------------------------------------------------------

    def events(self, run_id: str, n: int, start: int = 0) -> list[Any]:
        """``n`` token events, built now so the clock does not time model construction."""
        make = self.builder()
        return [make(run_id, i) for i in range(start, start + n)]

    def builder(self) -> Callable[[str, int], Any]:
        """``make(run_id, i)``: token event ``i`` as agent code builds it (ours without a
        sequence, which the bus assigns; Dockrion's numbered as its ``StreamContext`` numbers
        them), with the model class looked up once, for timed loops (agent code does not
        import per token either)."""
        if self.impl == OURS:
            from dockrion_nb.events import TokenEvent

            return lambda run_id, i: TokenEvent(run_id=run_id, content=content(i))
        from dockrion_events.models import TokenEvent as DToken

        return lambda run_id, i: DToken(run_id=run_id, sequence=i + 1, content=content(i))

    async def publish(self, run_id: str, event: Any) -> None:
        await self.bus.publish(run_id, event)

    async def publish_batch(self, run_id: str, events: Sequence[Any]) -> None:
        """Ours: ``publish_many``; Dockrion has none, so its batch is a loop of ``publish``."""
        if self.impl == OURS:
            await self.bus.publish_many(run_id, events)
        else:
            for event in events:
                await self.bus.publish(run_id, event)

    def subscribe(self, run_id: str) -> AsyncIterator[Any]:
        """Everything from the first event on (ours) / live events from now on (Dockrion)."""
        if self.impl == OURS:
            return self.bus.subscribe(run_id, from_sequence=1)  # type: ignore[no-any-return]
        return self.bus.subscribe(run_id)  # type: ignore[no-any-return]

    async def get_events(self, run_id: str, from_sequence: int) -> list[Any]:
        return await self.bus.get_events(run_id, from_sequence)  # type: ignore[no-any-return]

    async def wait_subscribed(self, run_id: str, n: int, raw: Any = None) -> None:
        """Until ``n`` subscribers are attached and (on Redis) confirmed by the server."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while loop.time() < deadline:
            if await self._subscribed(run_id, raw) >= n:
                return
            await asyncio.sleep(0.005)
        raise RuntimeError(f"{self.label}: {n} subscribers did not attach within 10 s")

    async def _subscribed(self, run_id: str, raw: Any) -> int:
        if self.impl == OURS:
            # Ours multiplexes a process's followers over one connection: count them locally.
            return int(self.backend.subscriber_count(run_id))
        if self.kind == "memory":
            return int(self.backend.get_subscriber_count(f"run:{run_id}"))
        counts = await raw.pubsub_numsub(f"events:run:{run_id}")
        return int(counts[0][1]) if counts else 0
