"""The live view's history in headless Chromium: attempts (a run re-run under the same id),
time travel over a finished run (scrubber, replay at the original pace), and the saved view a
notebook opened without a kernel shows (the ``snapshot`` trait)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from browser_harness import (
    create_view,
    default_state,
    root_selector,
    save_shot,
    wait_for_records,
)
from playwright.sync_api import expect
from test_widget_browser import batch, browser, ev, full_run, page, push, text, texts

from dockrion_nb.events import BaseEvent
from dockrion_nb.widget import build_snapshot

__all__ = ["browser", "page"]  # the fixtures, shared with test_widget_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def two_attempts() -> list[BaseEvent]:
    """A cell run twice under one run id: the first attempt never ended."""
    return [
        ev(1, "started", 0, agent_name="bot"),
        ev(2, "progress", 10, step="search", progress=0.4),
        ev(3, "token", 20, content="first try"),
        ev(4, "started", 5000, agent_name="bot"),
        ev(5, "token", 5100, content="second"),
        ev(6, "token", 5110, content=" try"),
        ev(7, "complete", 5200, output={"answer": 2}),
    ]


def test_a_rerun_shows_as_attempts_with_the_latest_by_default(page: Any) -> None:
    mid = create_view(page, default_state())
    push(page, mid, batch(two_attempts()))
    wait_for_records(page, mid, 7)
    root = root_selector(mid)
    assert page.is_visible(f"{root} .drnb-attempts")
    assert texts(page, mid, ".drnb-attempt") == ["1", "2 (latest)", "all"]
    assert text(page, mid, ".drnb-attempt-info") == "attempt 2 of 2: 4 events"
    assert text(page, mid, ".drnb-token-text") == "second try"
    assert text(page, mid, ".drnb-badge") == "complete"
    assert text(page, mid, ".drnb-count") == "4 of 7 events"
    assert text(page, mid, ".drnb-elapsed") == "elapsed 200 ms"  # counted from its own start
    assert page.locator(f"{root} .drnb-progress-row").count() == 0

    save_shot(page.locator(root), "attempts.png")
    # the first attempt: its own output; it never ended, so it reads as interrupted
    page.click(f'{root} .drnb-attempt[data-attempt="1"]')
    page.wait_for_function(
        "sel => document.querySelector(sel).textContent === 'first try'",
        arg=f"{root} .drnb-token-text",
    )
    assert text(page, mid, ".drnb-badge") == "interrupted"
    assert texts(page, mid, ".drnb-progress-pct") == ["stopped 40%"]

    # all attempts: the log marks where the second one begins
    page.click(f'{root} .drnb-attempt[data-attempt="all"]')
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '7'", arg=root)
    marked = page.locator(f"{root} .drnb-row.drnb-attempt-start")
    assert marked.count() == 2
    assert marked.nth(1).get_attribute("data-attempt") == "2"
    assert marked.nth(1).locator(".drnb-attempt-tag").text_content() == "attempt 2"
    assert text(page, mid, ".drnb-badge") == "complete"


def test_a_live_rerun_switches_to_the_new_attempt_unless_one_is_pinned(page: Any) -> None:
    live = create_view(page, default_state(status="running"))
    pinned = create_view(page, default_state(status="running"))
    for mid in (live, pinned):
        push(page, mid, batch(two_attempts()))
        wait_for_records(page, mid, 7)
    page.click(f'{root_selector(pinned)} .drnb-attempt[data-attempt="1"]')
    third = [ev(8, "started", 9000), ev(9, "token", 9100, content="third")]
    for mid in (live, pinned):
        push(page, mid, batch(third, prev=7))
        wait_for_records(page, mid, 9)
    assert text(page, live, ".drnb-token-text") == "third"
    assert text(page, live, ".drnb-badge") == "running"
    assert text(page, pinned, ".drnb-token-text") == "first try"
    assert texts(page, live, ".drnb-attempt") == ["1", "2", "3 (latest)", "all"]


# -- time travel ---------------------------------------------------------------------------------


def scrub(page: Any, root: str, value: int) -> None:
    page.eval_on_selector(
        f"{root} .drnb-travel-range",
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }",
        value,
    )


def test_the_scrubber_shows_the_run_as_it_stood_at_event_n_or_time_t(page: Any) -> None:
    mid = create_view(page, default_state(connection="live"))
    events = full_run()
    push(page, mid, batch(events[:-1]))
    wait_for_records(page, mid, 14)
    root = root_selector(mid)
    assert not page.is_visible(f"{root} .drnb-travel")  # still running: nothing to travel
    push(page, mid, batch(events[-1:], prev=14))
    wait_for_records(page, mid, 15)
    assert page.is_visible(f"{root} .drnb-travel")
    assert page.get_attribute(f"{root} .drnb-travel-range", "max") == "15"

    # at event 8: two tokens, one step, the run still running
    scrub(page, root, 8)
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '8'", arg=root)
    assert text(page, mid, ".drnb-token-text") == "Hello wide"
    assert text(page, mid, ".drnb-badge") == "running"
    assert text(page, mid, ".drnb-count") == "8 of 15 events"
    assert texts(page, mid, ".drnb-step-name") == ["retrieve"]
    assert text(page, mid, ".drnb-travel-label").startswith("event 8 of 15 · +0.610s")
    assert page.locator(f"{root} .drnb-row").count() == 8
    # the generate step is at 50% and running as it stood then
    assert texts(page, mid, ".drnb-running-name") == ["generate"]
    save_shot(page.locator(root), "time-travel.png")

    # by time: 410 ms after the start, the first four events had happened
    page.click(f"{root} .drnb-travel-mode")
    assert text(page, mid, ".drnb-travel-mode") == "by time"
    assert page.get_attribute(f"{root} .drnb-travel-range", "max") == "1300"
    scrub(page, root, 410)
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '4'", arg=root)
    assert texts(page, mid, ".drnb-progress-pct") == ["100%"]
    assert page.locator(f"{root} .drnb-token-text").is_hidden()

    # "end" goes back to the whole run
    page.click(f"{root} .drnb-travel-end")
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '15'", arg=root)
    assert text(page, mid, ".drnb-badge") == "complete"
    assert text(page, mid, ".drnb-token-text") == "Hello wide world."


def test_replay_at_original_pace_reanimates_the_run(page: Any) -> None:
    # 40 events over 10 seconds
    events = [ev(1, "started", 0)]
    events += [ev(2 + i, "token", 250 * (i + 1), content=f"w{i} ") for i in range(38)]
    events.append(ev(40, "complete", 10_000))
    mid = create_view(page, default_state(connection="closed"))
    push(page, mid, batch(events))
    wait_for_records(page, mid, 40)
    root = root_selector(mid)
    sample = """([sel, speed]) => new Promise((resolve) => {
      const root = document.querySelector(sel);
      const view = root.__drnbView;
      const seen = [];
      const t0 = performance.now();
      view.play(speed);
      const tick = () => {
        seen.push(Number(root.dataset.shown));
        if (view.playing) requestAnimationFrame(tick);
        else requestAnimationFrame(() => requestAnimationFrame(() => resolve(
          {seen, ms: performance.now() - t0, end: Number(root.dataset.shown)})));
      };
      requestAnimationFrame(tick);
    })"""
    fast = page.evaluate(sample, [root, 10])
    seen = fast["seen"]
    assert seen == sorted(seen)  # it only moves forward
    assert seen[0] <= 8 and len({s for s in seen if 8 < s < 40}) >= 3  # through the middle
    assert fast["end"] == 40 and text(page, mid, ".drnb-badge") == "complete"
    assert fast["ms"] >= 10_000 / 10 * 0.8  # paced by the events' timestamps, not instant
    # 2x from the middle of the run: the scrubber's position is where it starts
    scrub(page, root, 20)
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '20'", arg=root)
    half = page.evaluate(sample, [root, 2])
    assert half["seen"][0] >= 19 and half["end"] == 40
    assert half["ms"] >= (10_000 - 250 * 19) / 2 * 0.8
    # the speed buttons start and stop it
    page.click(f'{root} .drnb-play[data-speed="1"]')
    assert page.evaluate("sel => !!document.querySelector(sel).__drnbView.playing", root)
    page.click(f'{root} .drnb-play[data-speed="1"]')
    assert page.evaluate("sel => document.querySelector(sel).__drnbView.playing", root) is None


# -- a saved notebook, no kernel -------------------------------------------------------------------


def test_a_saved_view_without_a_kernel_shows_the_final_snapshot(page: Any) -> None:
    events = full_run()
    snapshot = build_snapshot(events)
    # as a reopened notebook: the model comes from saved state, no message ever arrives
    mid = create_view(
        page, default_state(status="complete", connection="closed", sent_upto=15, snapshot=snapshot)
    )
    wait_for_records(page, mid, 15)
    assert text(page, mid, ".drnb-badge") == "complete"
    assert text(page, mid, ".drnb-token-text") == "Hello wide world."
    assert texts(page, mid, ".drnb-step-name") == ["retrieve", "generate"]
    assert text(page, mid, ".drnb-note") == "saved view: 15 events"


def test_a_large_run_keeps_its_last_events_in_the_snapshot() -> None:
    events = [ev(1, "started", 0, agent_name="bot")]
    events += [ev(2 + i, "custom:blob", i, text="x" * 500) for i in range(2000)]
    events.append(ev(2002, "complete", 3000))
    snap = build_snapshot(events, limit=50_000)
    kept = snap["events"]
    assert kept[0]["type"] == "started" and kept[-1]["type"] == "complete"
    assert 50 < len(kept) < 120
    assert snap["note"] == f"saved view: the last {len(kept)} of 2002 events"


def test_a_long_token_run_keeps_its_last_tokens_in_the_snapshot() -> None:
    """100,000 tokens merge into one entry far over the budget: the snapshot keeps the
    run's last tokens (numbered and timed from the first one kept), not the whole run."""
    n = 100_000
    events = [ev(1, "started", 0, agent_name="bot")]
    events += [ev(2 + i, "token", 10 + i, content=f"w{i} ") for i in range(n)]
    events.append(ev(n + 2, "complete", n + 20))
    snap = build_snapshot(events, limit=50_000)
    started, tokens, complete = snap["events"]
    assert (started["type"], tokens["type"], complete["type"]) == ("started", "token", "complete")
    assert len(json.dumps(snap["events"])) < 50_000 + 1_000
    kept = len(tokens["parts"])
    assert 1_000 < kept < n
    assert tokens["parts"][-1] == f"w{n - 1} " and tokens["parts"][0] == f"w{n - kept} "
    assert tokens["sequence"] == 2 + n - kept and tokens["dt"][0] == 0
    first_kept = next(e for e in events if e.sequence == tokens["sequence"])
    assert tokens["timestamp"] == first_kept.timestamp.isoformat()
    assert snap["note"] == f"saved view: the last {kept + 2} of {n + 2} events"


# -- a view its host draws again ------------------------------------------------------------------


def busy_attempts() -> list[BaseEvent]:
    """Two attempts; the first is long enough to scroll both the log and the output."""
    out = [
        ev(1, "started", 0, agent_name="bot"),
        ev(2, "checkpoint", 5, name="state", data={"docs": 3}),
    ]
    out += [ev(3 + i, "score", 10 + i, value=i) for i in range(30)]
    out += [ev(33 + i, "token", 100 + i, content=f"word{i} ") for i in range(600)]
    n = len(out)
    out += [
        ev(n + 1, "started", 5000, agent_name="bot"),
        ev(n + 2, "token", 5100, content="second"),
        ev(n + 3, "complete", 5200, output={"answer": 2}),
    ]
    return out


UI_STATE_JS = """sel => {
  const root = document.querySelector(sel);
  const q = (s) => root.querySelector(s);
  return {
    view: root.__drnbView.constructor.name,
    attempt: [...root.querySelectorAll('.drnb-attempt.drnb-on')].map(b => b.dataset.attempt),
    travel: root.dataset.travel, mode: q('.drnb-travel-mode').textContent,
    off: [...root.querySelectorAll('.drnb-chip.drnb-off')].map(c => c.dataset.type),
    search: q('.drnb-search').value, logInfo: q('.drnb-log-info').textContent,
    follow: root.dataset.follow, followBtn: q('.drnb-follow').textContent,
    logTop: q('.drnb-viewport').scrollTop,
    selected: q('.drnb-row.drnb-selected .drnb-seq')?.textContent ?? null,
    detail: q('.drnb-detail').classList.contains('drnb-open')
      ? q('.drnb-detail-title').textContent : '',
    mono: q('.drnb-token-text').classList.contains('drnb-mono'),
    tokTop: q('.drnb-token-text').scrollTop,
    tokFollowShown: !q('.drnb-token-follow').hidden,
    opened: [...root.querySelectorAll('details.drnb-object')].filter(d => d.open)
      .map(d => d.dataset.seq),
  };
}"""


def test_a_view_drawn_again_by_its_host_comes_back_as_the_user_left_it(page: Any) -> None:
    """JupyterLab makes a new view when the output's static HTML is refreshed at the run's end;
    everything the user set lives in the widget's store, so the new view looks the same."""
    events = busy_attempts()
    mid = create_view(page, default_state(connection="closed", status="complete"))
    push(page, mid, batch(events))
    wait_for_records(page, mid, len(events))
    root = root_selector(mid)
    # the user: the first attempt, at its event 400 (by time), tokens hidden, a search, the log
    # paused and scrolled, an event opened, the output in monospace and scrolled up, the
    # checkpoint opened
    page.click(f'{root} .drnb-attempt[data-attempt="1"]')
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '632'", arg=root)
    scrub(page, root, 400)
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '400'", arg=root)
    page.click(f"{root} .drnb-travel-mode")
    page.click(f'{root} .drnb-chip[data-type="token"]')
    page.fill(f"{root} .drnb-search", "score")
    # the filtered log is drawn (following, at its end) before the user scrolls it up
    expect(page.locator(f"{root} .drnb-log-info")).to_have_text("30 of 400")
    page.eval_on_selector(f"{root} .drnb-viewport", "el => { el.scrollTop = 110; }")
    page.wait_for_function("sel => document.querySelector(sel).dataset.follow === '0'", arg=root)
    page.click(f'{root} .drnb-row[data-index="7"]')  # in view: no scrolling to it
    page.click(f"{root} .drnb-mono-toggle")
    page.eval_on_selector(f"{root} .drnb-token-text", "el => { el.scrollTop = 50; }")
    expect(page.locator(f"{root} .drnb-token-follow")).to_be_visible()
    page.click(f'{root} details.drnb-object[data-seq="2"] summary')
    # the details element's toggle event (which keeps the opened entry) is queued, not immediate
    page.wait_for_function("id => (H.view(id).store.ui?.open ?? []).length === 1", arg=mid)
    before = page.evaluate(UI_STATE_JS, root)
    assert before["attempt"] == ["1"] and before["travel"] == "400" and before["mode"] == "by time"
    assert before["off"] == ["token"] and before["logInfo"] == "30 of 400"
    assert before["follow"] == "0" and before["logTop"] == 110 and before["tokTop"] == 50
    assert before["selected"] and before["detail"] == f"#{before['selected']} custom:score"
    assert before["mono"] and before["tokFollowShown"] and before["opened"] == ["2"]

    page.evaluate("id => { H.view(id).tag = 'old'; }", mid)
    page.evaluate("id => H.rerender(id, 0)", mid)
    page.wait_for_function(
        "([id, sel]) => document.querySelector(sel) && H.models.get(id).views[0].replaced",
        arg=[mid, root],
    )
    assert page.evaluate("id => H.view(id).tag", mid) is None  # a new view, in the same place
    page.wait_for_function(
        "sel => document.querySelector(sel).querySelector('.drnb-viewport').scrollTop === 110",
        arg=root,
        timeout=5000,
    )
    assert page.evaluate(UI_STATE_JS, root) == before


def test_a_replay_at_pace_goes_on_in_a_view_drawn_again(page: Any) -> None:
    events = [ev(1, "started", 0)]
    events += [ev(2 + i, "token", 500 * (i + 1), content=f"w{i} ") for i in range(38)]
    events.append(ev(40, "complete", 20_000))
    mid = create_view(page, default_state(connection="closed", status="complete"))
    push(page, mid, batch(events))
    wait_for_records(page, mid, 40)
    root = root_selector(mid)
    scrub(page, root, 10)
    page.wait_for_function("sel => document.querySelector(sel).dataset.shown === '10'", arg=root)
    page.click(f'{root} .drnb-play[data-speed="2"]')
    page.wait_for_function(
        "sel => Number(document.querySelector(sel).dataset.shown) > 10", arg=root
    )
    page.evaluate("id => H.rerender(id, 0)", mid)
    page.wait_for_function("id => H.models.get(id).views[0].replaced", arg=mid)
    playing = page.evaluate("sel => document.querySelector(sel).__drnbView.playing?.speed", root)
    assert playing == 2
    assert page.get_attribute(f'{root} .drnb-play[data-speed="2"]', "class").count("drnb-on")
    shown = int(page.get_attribute(root, "data-shown") or 0)
    assert 10 < shown < 40  # it goes on from where it was, not from the start or the end
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.shown) > n", arg=[root, shown]
    )
