"""Comparing runs in headless Chromium: a real ``CompareView`` (its comm carried to the page)
drawn by the shipped front end: the metrics table (latency, time to first token, tokens/s),
outputs side by side, waterfalls on one time axis and the diff of the final outputs, for stored
runs and for a run compared while it streams; untrusted text stays text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browser_harness import ForwardingCompareView, create_view, pump_outbox, save_shot
from test_widget_browser import PAYLOADS, browser, page

from dockrion_nb.engine import Engine
from dockrion_nb.events import BaseEvent, make_event

__all__ = ["browser", "page"]  # the fixtures, shared with test_widget_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def timed_run(
    run_id: str,
    steps: list[tuple[str, int]],
    words: list[str],
    *,
    first_token_ms: int = 0,
    gap_ms: int = 10,
    latency: float | None = None,
) -> list[BaseEvent]:
    """A run with fixed timestamps: ``started`` at 0, the steps one after the other, the first
    token ``first_token_ms`` after the start and one every ``gap_ms``, ``complete`` 10 ms after
    the last token (with ``latency`` as its latency_seconds)."""

    def at(ms: int) -> datetime:
        return T0 + timedelta(milliseconds=ms)

    events = [make_event("started", run_id, timestamp=at(0), agent_name="bot")]
    end = 0
    for name, ms in steps:
        end += ms
        fields = {"node_name": name, "duration_ms": ms, "input_keys": [], "output_keys": []}
        events.append(make_event("step", run_id, timestamp=at(end), **fields))
    start = max(end, first_token_ms)
    for i, word in enumerate(words):
        events.append(make_event("token", run_id, timestamp=at(start + i * gap_ms), content=word))
    done = start + (len(words) - 1) * gap_ms + 10
    complete = {"output": {"words": len(words)}, "latency_seconds": latency}
    events.append(make_event("complete", run_id, timestamp=at(done), **complete))
    return events


def publish(engine: Engine, run_id: str, steps: list[tuple[str, int]], words: list[str]) -> None:
    engine.run(engine.bus.publish_many(run_id, timed_run(run_id, steps, words)))


def compare_in_page(page: Any, engine: Engine, run_ids: list[str]) -> tuple[int, Any]:
    view = ForwardingCompareView(run_ids, engine=engine)
    view.wait(10)
    mid = create_view(page, view.initial)
    total = sum(len(view.events(r)) for r in run_ids)
    pump_outbox(
        page,
        mid,
        view,
        until=lambda: (
            page.evaluate(
                "(id) => Number(H.models.get(id).views[0].el.querySelector('.drnb-root')"
                ".dataset.events)",
                mid,
            )
            >= total
        ),
    )
    return mid, view


def cell(page: Any, metric: str) -> list[str]:
    return [
        str(t)
        for t in page.locator(f'.drnb-compare tr[data-metric="{metric}"] td').all_text_contents()
    ]


def test_two_stored_runs_side_by_side_with_a_diff(page: Any) -> None:
    engine = Engine(name="compare-browser")  # a private memory backend: fixed names are safe
    try:
        a, b = "baseline", "candidate"
        # a: steps until 1.3 s, tokens from 1.4 s every 50 ms, latency reported (1.51 s);
        # b: tokens from 250 ms every 25 ms, no latency reported (its span: 335 ms)
        first = timed_run(
            a,
            [("retrieve", 400), ("answer", 900)],
            ["The ", "cat ", "sat."],
            first_token_ms=1400,
            gap_ms=50,
            latency=1.51,
        )
        second = timed_run(
            b, [("retrieve", 200)], ["The ", "dog ", "sat ", "down."], first_token_ms=250, gap_ms=25
        )
        engine.run(engine.bus.publish_many(a, first))
        engine.run(engine.bus.publish_many(b, second))
        _, view = compare_in_page(page, engine, [a, b])
        heads = page.locator(".drnb-compare .drnb-cmp-run").all_text_contents()
        assert heads == [a, b]
        assert cell(page, "status") == ["complete", "complete"]
        assert cell(page, "latency") == ["1.51 s", "335 ms"]
        assert cell(page, "ttft") == ["1.40 s", "250 ms"]
        assert cell(page, "rate") == ["20.0", "40.0"]
        assert cell(page, "tokens") == ["3", "4"]
        assert cell(page, "steps") == ["2", "1"]
        assert cell(page, "errors") == ["none", "none"]
        outputs = page.locator(".drnb-compare .drnb-cmp-output").all_text_contents()
        assert outputs == ["The cat sat.", "The dog sat down."]
        # waterfalls on one axis: the same duration draws the same width in both runs
        widths = page.eval_on_selector_all(
            ".drnb-cmp-step-group .drnb-step-bar", "els => els.map(e => parseFloat(e.style.width))"
        )
        assert len(widths) == 3 and widths[0] == pytest.approx(2 * widths[2], rel=0.05)
        # the diff marks what changed, word by word: the kept words plus the deleted ones
        # spell the first output, the kept plus the inserted the second
        sides = page.eval_on_selector(
            ".drnb-cmp-diff .drnb-diff-text",
            """el => { let a = "", b = "";
              for (const n of el.childNodes) {
                if (n.nodeName === "DEL") a += n.textContent;
                else if (n.nodeName === "INS") b += n.textContent;
                else { a += n.textContent; b += n.textContent; }
              }
              return [a, b]; }""",
        )
        assert sides == ["The cat sat.", "The dog sat down."]
        assert "cat" in page.locator(".drnb-cmp-diff del").all_text_contents()
        assert "dog" in page.locator(".drnb-cmp-diff ins").all_text_contents()
        shot = save_shot(page.locator(".drnb-compare"), "compare.png")
        assert 5_000 < shot.stat().st_size < 300_000
        view.close()
    finally:
        engine.shutdown()


def test_compared_runs_render_untrusted_text_as_text(page: Any, run_id: str) -> None:
    engine = Engine(name="compare-xss")
    try:
        a, b = f"{run_id}-a", f"{run_id}-b"
        publish(engine, a, [(PAYLOADS[0], 5)], [PAYLOADS[1]])
        ctx = engine.context(b)
        ctx.sync_emit_started()
        ctx.sync_emit_token(PAYLOADS[2])
        ctx.sync_emit_error(PAYLOADS[3], code=PAYLOADS[0])
        _, view = compare_in_page(page, engine, [a, b])
        page.wait_for_timeout(200)
        assert page.evaluate("() => window.__pwned") is None
        for tag in ("img", "script", "svg", "iframe"):
            assert page.locator(f".drnb-compare {tag}").count() == 0, tag
        outputs = page.locator(".drnb-compare .drnb-cmp-output").all_text_contents()
        assert outputs == [PAYLOADS[1], PAYLOADS[2]]
        assert cell(page, "errors")[1] == f"{PAYLOADS[0]}: {PAYLOADS[3]}"
        assert (
            page.locator(".drnb-cmp-step-group .drnb-step-name").first.text_content()
            == (PAYLOADS[0])
        )
        view.close()
    finally:
        engine.shutdown()


def test_a_live_run_is_compared_in_the_page_as_it_streams(page: Any) -> None:
    engine = Engine(name="compare-live-browser")  # a private memory backend
    try:
        a, b = "stored", "streaming"
        words = ["The ", "dog ", "sat ", "down."]
        publish(engine, a, [("retrieve", 200)], ["The ", "cat ", "sat."])
        live = timed_run(b, [("plan", 100)], words, first_token_ms=300, gap_ms=100, latency=0.75)
        view = ForwardingCompareView([a, b], engine=engine)  # b has no events yet
        mid = create_view(page, view.initial)

        def shown(run: int) -> int:
            return int(
                page.evaluate(
                    "([id, i]) => H.view(id).cs.stores[i]?.records.length ?? 0", [mid, run]
                )
            )

        pump_outbox(page, mid, view, until=lambda: shown(0) == 6)
        assert cell(page, "status") == ["complete", "waiting"]
        # b streams: started, its step and two tokens so far
        engine.run(engine.bus.publish_many(b, live[:4]))
        pump_outbox(page, mid, view, until=lambda: shown(1) == 4)
        assert cell(page, "status") == ["complete", "running"]
        assert cell(page, "tokens") == ["3", "2"]
        assert cell(page, "ttft") == ["200 ms", "300 ms"]
        assert cell(page, "latency")[1] == "\u2013"  # not over yet
        outputs = page.locator(".drnb-compare .drnb-cmp-output").all_text_contents()
        assert outputs == ["The cat sat.", "The dog "]
        # the rest of b, then its end
        engine.run(engine.bus.publish_many(b, live[4:]))
        pump_outbox(page, mid, view, until=lambda: shown(1) == len(live))
        page.wait_for_function(
            "() => document.querySelector('.drnb-compare tr[data-metric=\"status\"] td:last-child')"
            ".textContent === 'complete'"
        )
        assert cell(page, "status") == ["complete", "complete"]
        assert cell(page, "latency") == ["230 ms", "750 ms"]
        assert cell(page, "rate") == ["100.0", "10.0"]
        outputs = page.locator(".drnb-compare .drnb-cmp-output").all_text_contents()
        assert outputs == ["The cat sat.", "The dog sat down."]
        assert page.locator(".drnb-cmp-diff ins").all_text_contents() == ["dog", "sat down."]
        assert view.wait(10) == ["complete", "complete"]
        view.close()
    finally:
        engine.shutdown()
