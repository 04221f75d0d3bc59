"""What tracing costs an OpenAI / Anthropic SDK stream: ``python -m bench.llm_clients``.

The real SDK clients read a chat completion (or a Messages stream) of ``--tokens`` tokens from
a loopback server (``tests/sse_server.py``, no gating, in a child process so it does not share
this process's GIL, as a real API would not), once plain and once instrumented into a run on
a private engine (memory backend, or Redis with ``--redis URL``). Printed per case, medians
of ``--repeat`` runs:

- ``plain_ms`` / ``traced_ms``: from ``create()`` to the stream's end;
- ``per_token_us``: the difference divided by the tokens (what publishing each token costs
  the reading thread: each token is published before the SDK reads the next);
- ``first_token_plain_ms`` / ``first_token_traced_ms``: from ``create()`` to the first text.

And ``sync_emit_token_us``: one ``ctx.sync_emit_token`` from a plain thread on the same
engine, the floor that ``per_token_us`` is to be read against.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import anthropic  # noqa: E402
import openai  # noqa: E402
from sse_server import serve_repeating  # noqa: E402

from dockrion_nb.engine import Engine  # noqa: E402
from dockrion_nb.integrations.instrument import instrument  # noqa: E402

USER = [{"role": "user", "content": "hi"}]
RUNS: list[str] = []  # every run the bench wrote, cleared at the end


def _run_id() -> str:
    RUNS.append(f"bench-llm-{uuid.uuid4().hex[:8]}")
    return RUNS[-1]


def _tokens(n: int) -> list[str]:
    return [f"t{i} " for i in range(n)]


class ChildServer:
    def __init__(self, kind: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        urls = ctx.Queue()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=serve_repeating, args=(kind, _tokens(n), urls, self._stop), daemon=True
        )
        self._process.start()
        self.url: str = urls.get(timeout=60)

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def _read_openai(client: Any) -> float | None:
    first = None
    start = time.perf_counter()
    for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    return first


def _read_anthropic(client: Any) -> float | None:
    first = None
    start = time.perf_counter()
    for event in client.messages.create(model="m", max_tokens=9, messages=USER, stream=True):
        if first is None and event.type == "content_block_delta":
            first = time.perf_counter() - start
    return first


async def _read_async_openai(client: Any) -> float | None:
    first = None
    start = time.perf_counter()
    async with client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
    return first


def _case(
    n_tokens: int,
    read: Callable[[Any], float | None],
    make: Callable[[], Any],
    engine: Engine,
    repeat: int,
) -> dict[str, float]:
    plain: list[float] = []
    traced: list[float] = []
    first_plain: list[float] = []
    first_traced: list[float] = []
    for _ in range(repeat):
        for instrumented in (False, True):
            client = make()
            if instrumented:
                instrument(client, engine.context(_run_id()))
            start = time.perf_counter()
            first = read(client)
            elapsed = time.perf_counter() - start
            (traced if instrumented else plain).append(elapsed)
            (first_traced if instrumented else first_plain).append(first or 0.0)
    p, t = statistics.median(plain), statistics.median(traced)
    return {
        "plain_ms": round(p * 1000, 1),
        "traced_ms": round(t * 1000, 1),
        "per_token_us": round((t - p) / n_tokens * 1e6, 1),
        "first_token_plain_ms": round(statistics.median(first_plain) * 1000, 2),
        "first_token_traced_ms": round(statistics.median(first_traced) * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_clients", description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis", metavar="URL", help="publish to this Redis, not memory")
    args = parser.parse_args(argv)
    engine = Engine(name="bench-llm")
    openai_server = ChildServer("openai", args.tokens)
    anthropic_server = ChildServer("anthropic", args.tokens)
    try:
        if args.redis:
            engine.use({"backend": "redis", "redis": {"url": args.redis}})
        gpt, claude, n = openai_server.url + "/v1", anthropic_server.url, args.tokens
        cases: dict[str, dict[str, float]] = {
            "openai sync chat stream": _case(
                n,
                _read_openai,
                lambda: openai.OpenAI(base_url=gpt, api_key="sk", max_retries=0),
                engine,
                args.repeat,
            ),
            "openai async chat stream": _case(
                n,
                lambda c: asyncio.run(_read_async_openai(c)),
                lambda: openai.AsyncOpenAI(base_url=gpt, api_key="sk", max_retries=0),
                engine,
                args.repeat,
            ),
            "anthropic sync messages stream": _case(
                n,
                _read_anthropic,
                lambda: anthropic.Anthropic(base_url=claude, api_key="sk", max_retries=0),
                engine,
                args.repeat,
            ),
        }
        ctx = engine.context(_run_id())
        start = time.perf_counter()
        for _ in range(n):
            ctx.sync_emit_token("t")
        emit_us = round((time.perf_counter() - start) / n * 1e6, 1)
    finally:
        for run_id in RUNS:
            engine.run(engine.bus.clear_run(run_id))
        openai_server.close()
        anthropic_server.close()
        engine.shutdown()
    backend = "redis" if args.redis else "memory"
    print(f"{args.tokens} tokens per stream, median of {args.repeat}, backend {backend}")
    print(f"  sync_emit_token_us {emit_us}")
    for name, figures in cases.items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
