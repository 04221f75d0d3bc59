"""The Redis ceiling: what redis-py's asyncio client reaches with raw pipelined commands.

Same payloads and wire format as the buses (stream ``stream:run:{id}`` with fields ``data``,
``sequence``, ``type``; channel ``events:run:{id}``), JSON encoding included, no models, no
sequence logic. It bounds what any Python publisher can do on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .sides import BenchConfig, content


def stream_key(run_id: str) -> str:
    return f"stream:run:{run_id}"


def channel_key(run_id: str) -> str:
    return f"events:run:{run_id}"


def wire_dicts(run_id: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Event dicts in Dockrion's wire format, numbered ``start+1 ..``."""
    from dockrion_nb.events import TokenEvent

    out = []
    for i in range(start, start + n):
        d = TokenEvent(run_id=run_id, content=content(i)).to_dict()
        d["sequence"] = i + 1
        out.append(d)
    return out


def _add(pipe: Any, run_id: str, d: dict[str, Any], cfg: BenchConfig, publish: bool) -> None:
    data = json.dumps(d, default=str)
    pipe.xadd(
        stream_key(run_id),
        {"data": data, "sequence": str(d["sequence"]), "type": d["type"]},
        maxlen=cfg.max_events_per_run,
        approximate=True,
    )
    if publish:
        pipe.publish(channel_key(run_id), data)


async def pipelined_publish(
    client: Any, run_id: str, dicts: list[dict[str, Any]], cfg: BenchConfig, batch: int
) -> float:
    """Publish ``dicts`` with XADD + PUBLISH per event and one EXPIRE per round trip, ``batch``
    events per round trip; returns the elapsed seconds."""
    t0 = time.perf_counter()
    for k in range(0, len(dicts), batch):
        pipe = client.pipeline(transaction=False)
        for d in dicts[k : k + batch]:
            _add(pipe, run_id, d, cfg, publish=True)
        pipe.expire(stream_key(run_id), cfg.stream_ttl_seconds)
        await pipe.execute()
    return time.perf_counter() - t0


async def fill_stream(client: Any, run_id: str, n: int, cfg: BenchConfig) -> None:
    """Write ``n`` events as Dockrion's ``store_event`` would (same fields), 1,000 per trip."""
    step = 1000
    for k in range(0, n, step):
        pipe = client.pipeline(transaction=False)
        for d in wire_dicts(run_id, min(step, n - k), start=k):
            _add(pipe, run_id, d, cfg, publish=False)
        pipe.expire(stream_key(run_id), cfg.stream_ttl_seconds)
        await pipe.execute()


class RawSubscriber:
    """A raw Pub/Sub listener that counts messages and keeps arrival times by sequence."""

    def __init__(self, client: Any, run_id: str, expected: int, times: bool = False) -> None:
        self.client = client
        self.run_id = run_id
        self.expected = expected
        self.count = 0
        self.last_at = 0.0
        self.arrivals: dict[int, float] | None = {} if times else None
        self.done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(channel_key(self.run_id))
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.count < self.expected:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None or msg.get("type") != "message":
                continue
            self.count += 1
            self.last_at = time.perf_counter()
            if self.arrivals is not None:
                self.arrivals[int(json.loads(msg["data"])["sequence"])] = self.last_at
        self.done.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.pubsub.unsubscribe()
        await self.pubsub.aclose()


async def server_version(client: Any) -> str:
    info = await client.info("server")
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


async def delete_run_keys(client: Any, marker: str) -> int:
    """Delete every key whose name contains ``marker`` (the bench's unique run-id prefix)."""
    deleted = 0
    async for key in client.scan_iter(match=f"*{marker}*", count=1000):
        deleted += await client.delete(key)
    return deleted
