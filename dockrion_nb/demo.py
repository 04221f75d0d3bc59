"""The demo agent: a made-up run with realistic timing, for ``dockrion-nb demo``.

It exercises every common event type (steps, a tool call, progress, a checkpoint, streamed
tokens, complete or error) so a user can see the views work before wiring a real agent.
"""

from __future__ import annotations

import asyncio
import math
import random
import time

from .context import StreamContext
from .events import BaseEvent

DEMO_QUESTION = "Which river runs through the most countries?"
DEMO_ANSWER = (
    "The Danube flows through ten countries: Germany, Austria, Slovakia, Hungary, Croatia, "
    "Serbia, Romania, Bulgaria, Moldova and Ukraine, more than any other river."
)


async def simulate_agent(
    ctx: StreamContext,
    *,
    speed: float = 1.0,
    fail: bool = False,
    seed: int | None = None,
) -> BaseEvent | None:
    """A made-up agent run with realistic timing (about 3 s at ``speed`` 1): started, a plan
    step, a tool call, progress, a checkpoint, a streamed answer and complete, or an error
    after the tool call when ``fail``. Returns the terminal event."""
    rng = random.Random(seed)
    t0 = time.perf_counter()

    async def pause(seconds: float) -> None:
        if speed > 0 and math.isfinite(speed):
            await asyncio.sleep(seconds * rng.uniform(0.7, 1.3) / speed)

    await ctx.emit_started(agent_name="demo-researcher", framework="dockrion-nb demo")
    await ctx.emit_progress("plan", 0.05, "reading the question")
    async with ctx.step("plan", input_keys=["question"], output_keys=["queries"]):
        await pause(0.4)
    await ctx.emit("custom:tool_call", tool="search", query="rivers by number of countries")
    await ctx.emit_progress("search", 0.25, "searching 3 sources")
    async with ctx.step("search", input_keys=["queries"], output_keys=["documents"]):
        await pause(0.8)
        await ctx.emit_heartbeat()
        await pause(0.4)
    if fail:
        return await ctx.emit_error(
            "search tool timed out after 3 attempts",
            "TOOL_TIMEOUT",
            {"tool": "search", "attempts": 3, "timeout_seconds": 10},
        )
    await ctx.emit_progress("search", 0.5, "3 documents found")
    await ctx.checkpoint(
        "documents", {"count": 3, "top": "List of rivers of Europe", "scores": [0.92, 0.87, 0.55]}
    )
    await ctx.emit_progress("answer", 0.6, "writing the answer")
    words = DEMO_ANSWER.split(" ")
    async with ctx.step("answer", input_keys=["documents"], output_keys=["answer"]):
        for i, word in enumerate(words):
            last = i == len(words) - 1
            await ctx.emit_token(word if i == 0 else " " + word, "stop" if last else None)
            await pause(0.06)
    await ctx.emit_progress("answer", 1.0, "done")
    return await ctx.emit_complete(
        {"answer": DEMO_ANSWER, "question": DEMO_QUESTION, "tokens": len(words)},
        round(time.perf_counter() - t0, 3),
    )
