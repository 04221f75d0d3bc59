"""What OpenTelemetry spans in and out cost: ``python -m bench.otel_bench [--spans N]``.

``SpanEventProcessor`` runs in the instrumented code's thread, so its cost is paid by the
agent: each span start and end publishes one event and waits for the engine to store it.
Figures (microseconds per span, start and end included; spans per second for the export):

- ``bare_us_per_span``: a ``TracerProvider`` with no processor (the SDK's own cost);
- ``memory_us_per_span`` / ``redis_us_per_span``: with ``SpanEventProcessor`` writing every
  span to one run on the memory backend, or on Redis (``--redis-url`` or ``REDIS_URL``);
- ``export_spans_per_s``: ``export_run`` of a run of that many steps to an in-memory exporter.

Medians of ``--repeats`` runs. Not part of ``python -m bench``'s table (it compares us with
Dockrion, which has no OpenTelemetry side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dockrion_nb.engine import Engine
from dockrion_nb.integrations.otel import SpanEventProcessor
from dockrion_nb.integrations.otel_export import export_run
from dockrion_nb.integrations.steps import StepTracker


def _spans(provider: TracerProvider, n: int) -> float:
    """Seconds per span for ``n`` spans, each a child of one open root."""
    tracer = provider.get_tracer("bench.otel")
    with tracer.start_as_current_span("root"):
        t0 = time.perf_counter()
        for i in range(n):
            with tracer.start_as_current_span("step", attributes={"i": i, "kind": "bench"}):
                pass
        return (time.perf_counter() - t0) / n


def spans_in(n: int, backend: dict[str, Any] | None) -> float:
    """Microseconds per span; ``backend`` None means no processor at all."""
    provider = TracerProvider()
    engine: Engine | None = None
    run_id = f"bench-otel-{uuid.uuid4().hex[:8]}"
    try:
        if backend is not None:
            engine = Engine(name="bench-otel")
            engine.use(backend)
            provider.add_span_processor(SpanEventProcessor(engine.context(run_id)))
        return _spans(provider, n) * 1e6
    finally:
        provider.shutdown()
        if engine is not None:
            engine.run(engine.bus.clear_run(run_id))
            engine.shutdown()


def spans_out(n: int) -> float:
    """Spans per second exporting a run of ``n`` steps."""
    engine = Engine(name="bench-otel-export")
    engine.use({"backend": "memory", "max_events_per_run": 100_000})
    run_id = f"bench-export-{uuid.uuid4().hex[:8]}"
    try:
        ctx = engine.context(run_id, agent_name="bench")
        ctx.sync_emit_started()
        tracker = StepTracker(ctx)
        for i in range(n):
            tracker.start(f"s{i}", "step", parent_id=None if i == 0 else "s0")
            if i:
                tracker.end(f"s{i}")
        tracker.end("s0")
        ctx.sync_emit_complete()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        t0 = time.perf_counter()
        exported = export_run(run_id, provider, engine=engine)
        took = time.perf_counter() - t0
        provider.shutdown()
        return exported.span_count / took
    finally:
        engine.shutdown()


def run(n: int = 2_000, repeats: int = 3, redis_url: str | None = None) -> dict[str, float]:
    memory = {"backend": "memory", "max_events_per_run": 100_000}
    sides: dict[str, dict[str, Any] | None] = {"bare": None, "memory": memory}
    if redis_url:
        sides["redis"] = {
            "backend": "redis",
            "redis": {"url": redis_url, "max_events_per_run": 100_000},
        }
    out: dict[str, float] = {}
    for name, backend in sides.items():
        out[f"{name}_us_per_span"] = statistics.median(spans_in(n, backend) for _ in range(repeats))
    out["export_spans_per_s"] = statistics.median(spans_out(n) for _ in range(repeats))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otel_bench", description=__doc__)
    parser.add_argument("--spans", type=int, default=2_000, help="spans per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args(argv)
    for key, value in run(args.spans, args.repeats, args.redis_url).items():
        print(f"{key:24} {value:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
