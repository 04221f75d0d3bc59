"""One publisher process for the two-process row: ``python -m bench.publisher SIDE RUN N``.

Connects to ``$BENCH_REDIS_URL`` (not an argument, so a password never shows in ``ps``),
prints ``ready``, waits for ``go`` on stdin, publishes ``N`` token events to run ``RUN`` the way
an agent would (each side's ``StreamContext.emit_token``; ``raw`` is the pipelined
XADD+EXPIRE+PUBLISH ceiling) and prints its elapsed seconds as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from .sides import DOCKRION, OURS, BenchConfig, Side, content


async def publish(side_name: str, url: str, run_id: str, n: int) -> float:
    cfg = BenchConfig()
    if side_name == "raw":
        import redis.asyncio as aioredis

        from . import ceiling

        client: Any = aioredis.from_url(url)
        await client.ping()
        dicts = ceiling.wire_dicts(run_id, n)
        _ready()
        t0 = time.perf_counter()
        await ceiling.pipelined_publish(client, run_id, dicts, cfg, 1)
        elapsed = time.perf_counter() - t0
        await client.aclose()
        return elapsed
    side = await Side(side_name, "redis", cfg, url).open()
    try:
        if side_name == OURS:
            from dockrion_nb import StreamContext

            ctx: Any = StreamContext(run_id, side.bus)
        else:
            from dockrion_events import StreamContext as DContext

            ctx = DContext(run_id, side.bus)
        _ready()
        t0 = time.perf_counter()
        for i in range(n):
            await ctx.emit_token(content(i))
        return time.perf_counter() - t0
    finally:
        await side.close()


def _ready() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go' on stdin")


def main(argv: list[str]) -> int:
    side_name, run_id, n = argv[0], argv[1], int(argv[2])
    url = os.environ["BENCH_REDIS_URL"]
    if side_name not in (OURS, DOCKRION, "raw"):
        raise SystemExit(f"unknown side {side_name!r}")
    elapsed = asyncio.run(publish(side_name, url, run_id, n))
    print(json.dumps({"elapsed": elapsed, "n": n}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
