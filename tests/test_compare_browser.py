"""Comparing runs in headless Chromium: a real ``CompareView`` (its comm carried to the page)
drawn by the shipped front end: the metrics table, outputs side by side, waterfalls on one time
axis and the diff of the final outputs; untrusted text stays text."""

from __future__ import annotations

from typing import Any

import pytest
from browser_harness import ForwardingCompareView, create_view, pump_outbox, save_shot
from test_widget_browser import PAYLOADS, browser, page

from dockrion_nb.engine import Engine

__all__ = ["browser", "page"]  # the fixtures, shared with test_widget_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def publish(engine: Engine, run_id: str, steps: list[tuple[str, int]], words: list[str]) -> None:
    ctx = engine.context(run_id, agent_name="bot")
    ctx.sync_emit_started()
    for name, ms in steps:
        ctx.sync_emit_step(name, ms, [], [])
    for w in words:
        ctx.sync_emit_token(w)
    ctx.sync_emit_complete({"words": len(words)})


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
        publish(engine, a, [("retrieve", 400), ("answer", 900)], ["The ", "cat ", "sat."])
        publish(engine, b, [("retrieve", 200)], ["The ", "dog ", "sat ", "down."])
        _, view = compare_in_page(page, engine, [a, b])
        heads = page.locator(".drnb-compare .drnb-cmp-run").all_text_contents()
        assert heads == [a, b]
        assert cell(page, "status") == ["complete", "complete"]
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
