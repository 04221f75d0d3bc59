"""The widget's front end in real headless Chromium, against a small fake anywidget model.

Messages are built by the real Python encoder (``encode_events``) or by a real ``RunView``
whose comm traffic is carried to the page (``ForwardingRunView``), so the wire format under
test is the one the kernel sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browser_harness import (
    ForwardingRunView,
    browser_context,
    chromium_available,
    create_view,
    default_state,
    open_harness,
    pump_outbox,
    root_selector,
    save_shot,
    serve_harness,
    wait_for_records,
)
from conftest import require
from playwright.sync_api import expect

from dockrion_nb.engine import Engine
from dockrion_nb.events import BaseEvent, make_event
from dockrion_nb.widget import encode_events

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[Any, str]]:
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    with serve_harness() as url, browser_context() as context:
        yield context, url


@pytest.fixture
def page(browser: tuple[Any, str]) -> Iterator[Any]:
    """A fresh harness page; the test fails on any console or page error."""
    context, url = browser
    pg = context.new_page()
    try:
        errors = open_harness(pg, url)
        yield pg
        assert errors == []
    finally:
        pg.close()


def ev(seq: int, type_: str, ms: float, run_id: str = "run-x", **fields: Any) -> BaseEvent:
    return make_event(
        type_, run_id, sequence=seq, timestamp=T0 + timedelta(milliseconds=ms), **fields
    )


def batch(events: list[BaseEvent], prev: int = 0) -> dict[str, Any]:
    last = max([prev, *(e.sequence for e in events)])
    return {"kind": "events", "prev": prev, "last": last, "events": encode_events(events)}


def push(page: Any, model_id: int, *msgs: dict[str, Any]) -> None:
    page.evaluate("([id, msgs]) => H.push(id, msgs)", [model_id, list(msgs)])


def text(page: Any, model_id: int, css: str, view: int = 0) -> str:
    return str(page.text_content(f"{root_selector(model_id, view)} {css}"))


def texts(page: Any, model_id: int, css: str) -> list[str]:
    return [str(t) for t in page.locator(f"{root_selector(model_id)} {css}").all_text_contents()]


def full_run() -> list[BaseEvent]:
    """Every event type but error/cancelled, in a plausible agent run."""
    out = [
        ev(1, "started", 0, agent_name="planner", framework="langgraph"),
        ev(2, "progress", 10, step="retrieve", progress=0.3, message="fetching"),
        ev(
            3,
            "step",
            400,
            node_name="retrieve",
            duration_ms=390,
            input_keys=["q"],
            output_keys=["docs"],
        ),
        ev(4, "progress", 410, step="retrieve", progress=1.0, message="done"),
        ev(5, "progress", 420, step="generate", progress=0.5, message="writing"),
        ev(6, "heartbeat", 500),
    ]
    words = ["Hello", " wide", " world", "."]
    for i, w in enumerate(words):
        out.append(
            ev(
                7 + i,
                "token",
                600 + i * 10,
                content=w,
                finish_reason="stop" if i == len(words) - 1 else None,
            )
        )
    out += [
        ev(11, "checkpoint", 700, name="state", data={"docs": 3, "nested": {"k": [1, 2]}}),
        ev(12, "heartbeat", 800),
        ev(
            13,
            "step",
            1200,
            node_name="generate",
            duration_ms=700,
            input_keys=["docs"],
            output_keys=["answer"],
        ),
        ev(14, "fraud_check", 1250, score=0.25, verdict="ok"),
        ev(15, "complete", 1300, output={"answer": "Hello wide world."}, latency_seconds=1.3),
    ]
    return out


# -- rendering ---------------------------------------------------------------------------------


def test_every_event_type_renders(page: Any) -> None:
    mid = create_view(page, default_state(connection="live"))
    push(page, mid, batch(full_run()))
    wait_for_records(page, mid, 15)
    root = root_selector(mid)

    assert text(page, mid, ".drnb-run") == "run-x"
    assert text(page, mid, ".drnb-badge") == "complete"
    assert text(page, mid, ".drnb-count") == "15 events"
    assert text(page, mid, ".drnb-latency") == "latency 1.30 s"
    assert text(page, mid, ".drnb-elapsed") == "elapsed 1.30 s"
    assert text(page, mid, ".drnb-agent") == "planner · langgraph"
    assert text(page, mid, ".drnb-backend") == "backend: memory"
    assert text(page, mid, ".drnb-conn") == "live"
    # tokens joined into text, with the finish reason
    assert text(page, mid, ".drnb-token-text") == "Hello wide world."
    assert text(page, mid, ".drnb-finish") == "finish: stop"
    # one progress bar per step, with its latest message
    assert texts(page, mid, ".drnb-progress-step") == ["retrieve", "generate"]
    # "generate" stopped reporting at 50%, but its step ended and the run completed: done
    assert texts(page, mid, ".drnb-progress-pct") == ["100%", "done"]
    assert texts(page, mid, ".drnb-progress-msg") == ["done", "writing"]
    widths = page.eval_on_selector_all(f"{root} .drnb-fill", "els => els.map(e => e.style.width)")
    assert widths == ["100%", "100%"]
    titles = page.eval_on_selector_all(f"{root} .drnb-progress-row", "els => els.map(e => e.title)")
    assert titles == ["", "last reported 50%"]
    # waterfall: durations, keys, and bars placed on the run's time axis
    assert texts(page, mid, ".drnb-step-name") == ["retrieve", "generate"]
    assert texts(page, mid, ".drnb-step-dur") == ["390 ms", "700 ms"]
    assert texts(page, mid, ".drnb-step-keys") == ["in: q  out: docs", "in: docs  out: answer"]
    lefts = page.eval_on_selector_all(
        f"{root} .drnb-step-bar", "els => els.map(e => parseFloat(e.style.left))"
    )
    assert lefts[0] < lefts[1]
    # checkpoints, custom events and the output: collapsible JSON, filled when opened
    labels = texts(page, mid, ".drnb-object-label")
    assert labels == ["checkpoint state", "custom:fraud_check", "output (complete)"]
    first = page.locator(f"{root} details.drnb-object").first
    assert first.locator("pre").text_content() == ""
    first.locator("summary").click()
    expect(first.locator("pre")).to_contain_text('"nested": {')
    custom = page.locator(f"{root} details.drnb-object").nth(1)
    custom.locator("summary").click()
    expect(custom.locator("pre")).to_contain_text('"score": 0.25')
    # heartbeats: a pulse in the header, rows only in the log
    assert text(page, mid, ".drnb-pulse-text").startswith("2 heartbeats")
    assert page.locator(f"{root} .drnb-pulse.drnb-beat").count() == 1
    # the event log: sequence, relative time, type, summary
    row = page.locator(f'{root} .drnb-row[data-type="step"]').first
    assert [str(s) for s in row.locator("span").all_text_contents()] == [
        "3",
        "+0.400s",
        "step",
        "retrieve 390 ms [q] → [docs]",
    ]
    chips = texts(page, mid, ".drnb-chip")
    assert "token 4" in chips and "heartbeat 2" in chips and "custom:fraud_check 1" in chips
    # panels without data stay hidden
    assert page.locator(f"{root} .drnb-boxes .drnb-box").count() == 0


def test_error_and_cancelled_runs_show_prominent_boxes(page: Any) -> None:
    err = create_view(page, default_state("run-err"))
    push(
        page,
        err,
        batch(
            [
                ev(1, "started", 0, run_id="run-err"),
                ev(
                    2,
                    "error",
                    50,
                    run_id="run-err",
                    error="tool exploded",
                    code="TOOL_FAILED",
                    details={
                        "traceback": "Traceback (most recent call last):\n  boom",
                        "tool": "search",
                    },
                ),
            ]
        ),
    )
    wait_for_records(page, err, 2)
    assert text(page, err, ".drnb-badge") == "error"
    assert text(page, err, ".drnb-box-error .drnb-box-title") == "Error TOOL_FAILED"
    assert text(page, err, ".drnb-box-error .drnb-box-message") == "tool exploded"
    assert text(page, err, ".drnb-box-error .drnb-traceback").endswith("last):\n  boom")
    assert '"tool": "search"' in text(page, err, ".drnb-box-error .drnb-json")
    assert text(page, err, ".drnb-latency") == ""

    can = create_view(page, default_state("run-c"))
    push(
        page,
        can,
        batch(
            [
                ev(1, "started", 0, run_id="run-c"),
                ev(2, "cancelled", 9, run_id="run-c", reason="user stop"),
            ]
        ),
    )
    wait_for_records(page, can, 2)
    assert text(page, can, ".drnb-badge") == "cancelled"
    assert text(page, can, ".drnb-box-cancelled .drnb-box-message") == "user stop"

    gap = create_view(page, default_state("run-g"))
    gap_event = make_event("gap", "run-g", from_sequence=1, to_sequence=5, reason="trimmed")
    push(page, gap, batch([gap_event, ev(6, "token", 0, run_id="run-g", content="x")]))
    wait_for_records(page, gap, 2)
    assert text(page, gap, ".drnb-box-gap .drnb-box-message") == "missed 1..5: trimmed"
    assert texts(page, gap, ".drnb-row .drnb-type") == ["gap", "token"]


def test_header_shows_the_recorded_run_status_as_text(page: Any) -> None:
    mid = create_view(page, default_state("run-s"))
    push(page, mid, batch([ev(1, "started", 0, run_id="run-s")]))
    wait_for_records(page, mid, 1)
    assert page.is_hidden(f"{root_selector(mid)} .drnb-run-status")  # no record: nothing shown
    page.evaluate("([id, c]) => H.set(id, c)", [mid, {"run_status": "<b>running</b>"}])
    expect(page.locator(f"{root_selector(mid)} .drnb-run-status")).to_have_text(
        "run: <b>running</b>"
    )
    page.evaluate("([id, c]) => H.set(id, c)", [mid, {"run_status": "completed"}])
    expect(page.locator(f"{root_selector(mid)} .drnb-run-status")).to_have_text("run: completed")


# -- log controls ------------------------------------------------------------------------------


def test_filter_search_pause_and_expand(page: Any) -> None:
    mid = create_view(page, default_state())
    events = full_run()[:-1]  # still running
    events += [ev(15 + i, "custom:note", 1300 + i, text=f"note {i}") for i in range(30)]
    events.append(ev(45, "custom:note", 1400, text="the needle"))
    push(page, mid, batch(events))
    wait_for_records(page, mid, 45)
    root = root_selector(mid)
    info = f"{root} .drnb-log-info"

    # filter chips hide a type, and show it again
    page.click(f'{root} .drnb-chip[data-type="custom:note"]')
    assert page.text_content(info) == "14 of 45"
    assert page.locator(f'{root} .drnb-row[data-type="custom:note"]').count() == 0
    page.click(f'{root} .drnb-chip[data-type="token"]')
    assert page.text_content(info) == "10 of 45"
    page.click(f'{root} .drnb-chip[data-type="custom:note"]')
    page.click(f'{root} .drnb-chip[data-type="token"]')
    assert page.text_content(info) == "45"

    # text search over summaries and fields
    page.fill(f"{root} .drnb-search", "NEEDLE")
    assert page.text_content(info) == "1 of 45"
    assert texts(page, mid, ".drnb-row .drnb-seq") == ["45"]
    page.fill(f"{root} .drnb-search", "")
    assert page.text_content(info) == "45"

    # auto-follow keeps the newest row in view; pause stops it, resume scrolls back down
    viewport = f"{root} .drnb-viewport"
    at_bottom = "el => Math.abs(el.scrollTop + el.clientHeight - el.scrollHeight) <= 1"
    assert page.eval_on_selector(viewport, at_bottom)
    page.click(f"{root} .drnb-follow")
    assert text(page, mid, ".drnb-follow") == "resume"
    page.eval_on_selector(viewport, "el => { el.scrollTop = 0; }")
    push(
        page, mid, batch([ev(46 + i, "custom:note", 1500, text="more") for i in range(20)], prev=45)
    )
    wait_for_records(page, mid, 65)
    assert page.eval_on_selector(viewport, "el => el.scrollTop") == 0
    assert texts(page, mid, ".drnb-row .drnb-seq")[0] == "1"
    page.click(f"{root} .drnb-follow")
    assert text(page, mid, ".drnb-follow") == "pause"
    assert page.eval_on_selector(viewport, at_bottom)
    assert "65" in texts(page, mid, ".drnb-row .drnb-seq")
    # scrolling up by hand pauses auto-follow too
    page.eval_on_selector(viewport, "el => { el.scrollTop = 0; }")
    page.wait_for_function(
        "sel => document.querySelector(sel).textContent === 'resume'",
        arg=f"{root} .drnb-follow",
    )

    # click to expand the full event; click again to close
    detail = f"{root} .drnb-detail"
    assert not page.is_visible(detail)
    page.locator(f'{root} .drnb-row[data-type="checkpoint"]').click()
    assert page.is_visible(detail)
    assert text(page, mid, ".drnb-detail-title") == "#11 checkpoint"
    body = text(page, mid, ".drnb-detail .drnb-json")
    assert '"name": "state"' in body and '"sequence": 11' in body and '"timestamp"' in body
    assert page.locator(f"{root} .drnb-row.drnb-selected").count() == 1
    page.locator(f'{root} .drnb-row[data-type="checkpoint"]').click()
    assert not page.is_visible(detail)
    # a merged token expands to its own event again
    page.locator(f'{root} .drnb-row[data-type="token"]').nth(1).click()
    body = text(page, mid, ".drnb-detail .drnb-json")
    assert '"content": " wide"' in body and '"sequence": 8' in body


def test_monospace_toggle(page: Any) -> None:
    mid = create_view(page, default_state())
    push(page, mid, batch(full_run()))
    wait_for_records(page, mid, 15)
    tok = f"{root_selector(mid)} .drnb-token-text"
    assert "drnb-mono" not in str(page.get_attribute(tok, "class"))
    page.click(f"{root_selector(mid)} .drnb-mono-toggle")
    assert "drnb-mono" in str(page.get_attribute(tok, "class"))
    family = page.eval_on_selector(tok, "el => getComputedStyle(el).fontFamily")
    assert "mono" in family.lower()


# -- the store ---------------------------------------------------------------------------------


def test_second_and_late_views_show_every_event(page: Any) -> None:
    mid = create_view(page, default_state(), views=1)
    push(page, mid, batch(full_run()[:8]))
    push(page, mid, batch(full_run()[8:], prev=8))
    wait_for_records(page, mid, 15)
    late = page.evaluate("(id) => H.render(id)", mid)  # a view created after the messages
    assert late == 1
    page.wait_for_function(
        "sel => Number(document.querySelector(sel).dataset.events) === 15",
        arg=root_selector(mid, 1),
    )
    assert text(page, mid, ".drnb-token-text", view=1) == "Hello wide world."
    assert text(page, mid, ".drnb-badge", view=1) == "complete"
    # duplicates (a replay overlapping live batches) are dropped by sequence
    push(
        page,
        mid,
        {
            "kind": "replay",
            "after": 0,
            "last": 15,
            "more": False,
            "events": encode_events(full_run()),
        },
    )
    assert page.evaluate("(id) => H.records(id)", mid) == 15
    assert page.evaluate("(id) => H.sent(id).length", mid) == 0  # nothing missing: no request


def test_reloaded_page_asks_the_kernel_and_fills_in_order(page: Any) -> None:
    events = full_run()
    # a page that loads after the kernel sent 15 events: the store asks for them
    mid = create_view(page, default_state(sent_upto=12, status="running"))
    assert page.evaluate("(id) => H.sent(id)", mid) == [{"kind": "replay", "after": 0}]
    page.evaluate("(id) => H.sent(id).splice(0)", mid)
    # meanwhile a live batch arrives (past the hole): shown, but the hole is known
    push(page, mid, batch(events[12:], prev=12))
    wait_for_records(page, mid, 3)
    assert "earlier events are missing" in text(page, mid, ".drnb-note")
    # the kernel answers in chunks, pull style
    push(
        page,
        mid,
        {
            "kind": "replay",
            "after": 0,
            "last": 6,
            "more": True,
            "events": encode_events(events[:6]),
        },
    )
    assert page.evaluate("(id) => H.sent(id).splice(0)", mid) == [{"kind": "replay", "after": 6}]
    push(
        page,
        mid,
        {
            "kind": "replay",
            "after": 6,
            "last": 12,
            "more": False,
            "events": encode_events(events[6:12]),
        },
    )
    wait_for_records(page, mid, 15)
    assert page.evaluate("(id) => H.sent(id).splice(0)", mid) == []
    seqs = texts(page, mid, ".drnb-row .drnb-seq")
    assert seqs == [str(i) for i in range(1, 16)]
    assert text(page, mid, ".drnb-token-text") == "Hello wide world."
    assert text(page, mid, ".drnb-note") == ""


def test_real_runview_replay_on_reload_through_the_kernel_side(page: Any, run_id: str) -> None:
    """A real RunView answers a late page's replay requests (the pull path, Python included)."""
    engine = Engine(name="browser-test-engine")
    try:
        ctx = engine.context(run_id)
        ctx.sync_emit_started()
        for i in range(120):
            ctx.sync_emit_token(f"w{i} ")
        ctx.sync_emit_complete()
        view = ForwardingRunView(run_id, engine=engine)
        assert view.wait(10) == "complete"
        # the page loads only now: its model starts from the current state, no messages
        state = {n: getattr(view, n) for n in default_state()}
        assert state["sent_upto"] == 122
        while not view.outbox.empty():
            view.outbox.get_nowait()
        mid = create_view(page, state)
        pump_outbox(
            page,
            mid,
            view,
            until=lambda: page.evaluate("(id) => H.records(id)", mid) == 122,
        )
        wait_for_records(page, mid, 122)
        assert text(page, mid, ".drnb-badge") == "complete"
        assert text(page, mid, ".drnb-token-text") == "".join(f"w{i} " for i in range(120))
        view.close()
    finally:
        engine.shutdown()


def test_max_events_bounds_the_store(page: Any) -> None:
    mid = create_view(page, default_state(max_events=100))
    events = [ev(i, "custom:n", i) for i in range(1, 1001)]
    for k in range(0, 1000, 200):
        push(page, mid, batch(events[k : k + 200], prev=k))
    page.wait_for_function(
        "sel => document.querySelector(sel).textContent.includes('1000 events')",
        arg=f"{root_selector(mid)} .drnb-count",
    )
    kept = page.evaluate("(id) => H.records(id)", mid)
    assert 100 <= kept <= 100 + 64
    assert texts(page, mid, ".drnb-row .drnb-seq")[-1] == "1000"


# -- scale --------------------------------------------------------------------------------------


def mixed_events(n: int, run_id: str = "run-x") -> list[BaseEvent]:
    out: list[BaseEvent] = []
    for i in range(1, n + 1):
        k = i % 10
        if k < 6:
            out.append(ev(i, "token", i, run_id=run_id, content=f"t{i} "))
        elif k == 6:
            out.append(ev(i, "step", i, run_id=run_id, node_name=f"n{i % 50}", duration_ms=5))
        elif k == 7:
            out.append(
                ev(i, "progress", i, run_id=run_id, step=f"s{i % 7}", progress=(i % 100) / 100)
            )
        elif k == 8:
            out.append(ev(i, "custom:metric", i, run_id=run_id, value=i))
        else:
            out.append(ev(i, "heartbeat", i, run_id=run_id))
    return out


def test_ten_thousand_events_in_batches_stay_responsive(page: Any) -> None:
    n, size = 10_000, 500
    events = mixed_events(n)
    msgs = [batch(events[k : k + size], prev=k) for k in range(0, n, size)]
    mid = create_view(page, default_state())
    timing = page.evaluate("([id, msgs]) => H.pushSpaced(id, msgs, 50)", [mid, json.dumps(msgs)])
    wait_for_records(page, mid, n)
    stats = page.evaluate(
        "(id) => { const v = H.view(id); return {apply: v.store.stats.applyMs,"
        " draw: v.stats.drawMs, draws: v.stats.draws}; }",
        mid,
    )
    rows_in_dom = page.locator(f"{root_selector(mid)} .drnb-row").count()
    print(
        f"\n10k events in {len(msgs)} batches of {size} (50 ms apart): "
        f"{(timing['endMs'] - timing['startMs']) / 1000:.2f} s to the last draw; store "
        f"{stats['apply']:.0f} ms, drawing {stats['draw']:.0f} ms in {stats['draws']} frames; "
        f"longest frame gap {timing['maxGapMs']:.0f} ms; "
        f"{rows_in_dom} log rows in the DOM"
    )
    assert page.evaluate("(id) => H.records(id)", mid) == n
    assert rows_in_dom < 100  # the log renders only what is in view
    assert page.locator(f"{root_selector(mid)} .drnb-step-row").count() <= 200
    # still interactive: a search over 10k events answers
    page.fill(f"{root_selector(mid)} .drnb-search", "t9995")
    assert texts(page, mid, ".drnb-row .drnb-seq") == ["9995"]


# -- security -----------------------------------------------------------------------------------

PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    '<svg onload="window.__pwned=3"></svg>',
    '"><iframe src="javascript:window.__pwned=4"></iframe>',
]


def test_xss_payloads_stay_literal_text(page: Any) -> None:
    p = PAYLOADS
    joined = "".join(p)
    events = [
        ev(1, "started", 0, agent_name=p[0], framework=p[1]),
        ev(2, "progress", 1, step=p[2], progress=0.5, message=p[0]),
        ev(3, "token", 2, content=p[0]),
        ev(4, "token", 3, content=p[1]),
        ev(5, "token", 4, content=p[2] + p[3], finish_reason=p[1]),
        ev(6, "step", 5, node_name=p[0], duration_ms=1, input_keys=[p[1]], output_keys=[p[2]]),
        ev(7, "checkpoint", 6, name=p[1], data={p[0]: p[1]}),
        ev(8, "custom:" + p[0], 7, **{"field": p[1], "html": p[2]}),
        ev(9, "error", 8, error=p[0], code=p[1], details={"traceback": joined, p[3]: p[0]}),
    ]
    events.append(ev(12, "custom:step_start", 9, node_name=p[0], kind=p[1], step_id=p[2]))
    gap = make_event("gap", "run-x", from_sequence=10, to_sequence=11, reason=p[0])
    mid = create_view(page, default_state(note=p[0], backend=p[1]))
    push(page, mid, batch([*events, gap]))
    wait_for_records(page, mid, 11)
    root = root_selector(mid)
    # open everything that renders lazily: every JSON block, every row's detail, a search
    for summary in page.locator(f"{root} details.drnb-object summary").all():
        summary.click()
    for i in range(page.locator(f"{root} .drnb-row").count()):
        page.locator(f"{root} .drnb-row").nth(i).click()
        page.locator(f"{root} .drnb-row").nth(i).click()
    page.fill(f"{root} .drnb-search", "onerror")
    page.fill(f"{root} .drnb-search", "")
    page.wait_for_timeout(300)  # give any injected handler the chance to run

    assert page.evaluate("() => window.__pwned") is None
    for tag in ("img", "script", "svg", "iframe"):
        assert page.locator(f"{root} {tag}").count() == 0, tag
    assert text(page, mid, ".drnb-token-text") == p[0] + p[1] + p[2] + p[3]
    assert text(page, mid, ".drnb-finish") == f"finish: {p[1]}"
    assert text(page, mid, ".drnb-agent") == f"{p[0]} · {p[1]}"
    assert text(page, mid, ".drnb-backend") == f"backend: {p[1]}"
    assert text(page, mid, ".drnb-note") == p[0]
    assert text(page, mid, ".drnb-progress-step") == p[2]
    assert text(page, mid, ".drnb-step-name") == p[0]
    assert text(page, mid, ".drnb-box-error .drnb-box-message") == p[0]
    assert text(page, mid, ".drnb-box-error .drnb-box-title") == f"Error {p[1]}"
    assert text(page, mid, ".drnb-box-error .drnb-traceback") == joined
    assert text(page, mid, ".drnb-box-gap .drnb-box-message") == f"missed 10..11: {p[0]}"
    assert text(page, mid, ".drnb-running-name") == p[0]
    assert text(page, mid, ".drnb-running-kind") == p[1]
    assert f"custom:{p[0]}" in texts(page, mid, ".drnb-object-label")
    expect(page.locator(f"{root} .drnb-object pre").first).to_contain_text(p[1])
    page.locator(f'{root} .drnb-row[data-type="error"]').click()
    assert p[1] in text(page, mid, ".drnb-detail .drnb-json")
    assert page.evaluate("() => window.__pwned") is None


# -- what is running now ----------------------------------------------------------------------


def now_ev(seq: int, type_: str, ago_ms: float, **fields: Any) -> BaseEvent:
    """An event stamped ``ago_ms`` before now (live timers count from the event's timestamp)."""
    ts = datetime.now(UTC) - timedelta(milliseconds=ago_ms)
    return make_event(type_, "run-x", sequence=seq, timestamp=ts, **fields)


def seconds_of(label: str) -> float:
    """``"1.25 s"`` / ``"420 ms"`` -> seconds."""
    value, unit = label.split()
    return float(value) / (1000 if unit == "ms" else 1)


def test_running_steps_show_a_live_timer_then_leave_when_they_end(page: Any) -> None:
    mid = create_view(page, default_state(status="running"))
    push(
        page,
        mid,
        batch(
            [
                now_ev(1, "started", 3000),
                now_ev(2, "custom:step_start", 2500, node_name="agent", step_id="a", kind="chain"),
                now_ev(
                    3,
                    "custom:step_start",
                    2000,
                    node_name="web_search",
                    step_id="s",
                    parent_id="a",
                    kind="tool",
                ),
                now_ev(4, "progress", 1500, step="download", progress=0.05, message="1 of 20"),
            ]
        ),
    )
    wait_for_records(page, mid, 4)
    root = root_selector(mid)
    # step-start events show at once, a step with progress below 100% too
    assert text(page, mid, ".drnb-running .drnb-title") == "Running now"
    assert texts(page, mid, ".drnb-running-name") == ["agent", "web_search", "download"]
    assert texts(page, mid, ".drnb-running-kind") == ["chain", "tool", "progress"]
    assert set(texts(page, mid, ".drnb-running-state")) == {"running"}
    sources = page.eval_on_selector_all(
        f"{root} .drnb-running-row", "els => els.map(e => e.dataset.source)"
    )
    assert sources == ["step", "step", "progress"]
    # the child step is indented under its parent
    pads = page.eval_on_selector_all(
        f"{root} .drnb-running-row", "els => els.map(e => e.style.paddingLeft)"
    )
    assert pads[:2] == ["", "12px"]
    assert page.locator(f"{root} .drnb-step-row").count() == 0  # nothing has ended yet
    summaries = texts(page, mid, '.drnb-row[data-type="custom:step_start"] .drnb-summary')
    assert summaries == ["agent started (chain)", "web_search started (tool)"]  # as Python's
    # the timers run while nothing arrives
    first = seconds_of(texts(page, mid, ".drnb-running-time")[1])
    assert first >= 2.0
    page.wait_for_timeout(1300)
    later = seconds_of(texts(page, mid, ".drnb-running-time")[1])
    assert later >= first + 1.0
    save_shot(page.locator(root), "running-steps.png")

    # the tool call ends: it leaves "running now" and joins the waterfall
    push(
        page,
        mid,
        batch(
            [
                now_ev(
                    5,
                    "step",
                    0,
                    node_name="web_search",
                    step_id="s",
                    parent_id="a",
                    kind="tool",
                    status="ok",
                    duration_ms=2000,
                )
            ],
            prev=4,
        ),
    )
    wait_for_records(page, mid, 5)
    assert texts(page, mid, ".drnb-running-name") == ["agent", "download"]
    assert texts(page, mid, ".drnb-step-name") == ["web_search"]


def test_open_steps_and_unfinished_progress_settle_when_the_run_fails(page: Any) -> None:
    mid = create_view(page, default_state(status="running"))
    push(
        page,
        mid,
        batch(
            [
                now_ev(1, "started", 3000),
                now_ev(2, "custom:step_start", 2500, node_name="agent", step_id="a"),
                now_ev(3, "progress", 2000, step="download", progress=0.05),
                now_ev(4, "progress", 2000, step="index", progress=0.5),
                now_ev(
                    5,
                    "step",
                    1000,
                    node_name="index",
                    status="error",
                    error="disk full",
                    duration_ms=1000,
                ),
                now_ev(6, "error", 0, error="agent: disk full", code="OSError"),
            ]
        ),
    )
    wait_for_records(page, mid, 6)
    root = root_selector(mid)
    # the open step is abandoned (the progress-only "download" settles in its bar below)
    assert texts(page, mid, ".drnb-running-name") == ["agent"]
    assert texts(page, mid, ".drnb-running-state") == ["abandoned"]
    frozen = texts(page, mid, ".drnb-running-time")
    assert seconds_of(frozen[0]) == pytest.approx(2.5, abs=0.01)  # until the run's last event
    page.wait_for_timeout(600)
    assert texts(page, mid, ".drnb-running-time") == frozen  # settled: no longer ticking
    # a bar left at 5% reads as abandoned, not as unfinished; one whose step ended as done
    states = page.eval_on_selector_all(
        f"{root} .drnb-progress-row", "els => els.map(e => e.dataset.state)"
    )
    assert states == ["abandoned", "done"]
    assert texts(page, mid, ".drnb-progress-pct") == ["stopped 5%", "done"]
    # the failed step is marked in the waterfall
    assert page.get_attribute(f"{root} .drnb-step-row", "data-status") == "error"
    assert text(page, mid, ".drnb-step-keys") == "error: disk full"


def test_open_steps_and_unfinished_progress_settle_when_the_run_is_cancelled(page: Any) -> None:
    mid = create_view(page, default_state(status="running"))
    push(
        page,
        mid,
        batch(
            [
                ev(1, "started", 0),
                ev(2, "custom:step_start", 100, node_name="agent", step_id="a"),
                ev(3, "custom:step_start", 200, node_name="search", step_id="s", parent_id="a"),
                ev(4, "progress", 300, step="download", progress=0.3, message="6 of 20"),
                ev(5, "progress", 400, step="parse", progress=0.6),
                ev(6, "step", 900, node_name="parse", duration_ms=500),
                ev(7, "cancelled", 1500, reason="user pressed stop"),
            ]
        ),
    )
    wait_for_records(page, mid, 7)
    root = root_selector(mid)
    assert text(page, mid, ".drnb-badge") == "cancelled"
    # the open steps are abandoned, their timers stopped at the run's last event
    assert texts(page, mid, ".drnb-running-name") == ["agent", "search"]
    assert texts(page, mid, ".drnb-running-state") == ["abandoned", "abandoned"]
    assert page.get_attribute(f"{root} .drnb-running", "data-state") == "abandoned"
    assert text(page, mid, ".drnb-running .drnb-title") == "Left open when the run ended"
    frozen = texts(page, mid, ".drnb-running-time")
    assert frozen == ["1.40 s", "1.30 s"]
    page.wait_for_timeout(600)
    assert texts(page, mid, ".drnb-running-time") == frozen  # settled: no longer ticking
    # a bar left at 30% reads as stopped there; the one whose step ended as done
    states = page.eval_on_selector_all(
        f"{root} .drnb-progress-row", "els => els.map(e => e.dataset.state)"
    )
    assert states == ["abandoned", "done"]
    assert texts(page, mid, ".drnb-progress-pct") == ["stopped 30%", "done"]
    assert page.get_attribute(f"{root} .drnb-progress-row", "title") == "last reported 30%"
    assert text(page, mid, ".drnb-box-cancelled .drnb-box-message") == "user pressed stop"
    save_shot(page.locator(root), "settled.png")


def test_a_step_left_open_by_a_completed_run_ends_with_the_run(page: Any) -> None:
    mid = create_view(page, default_state())
    push(
        page,
        mid,
        batch(
            [
                ev(1, "started", 0),
                ev(2, "custom:step_start", 100, node_name="cleanup", step_id="c"),
                ev(3, "progress", 200, step="upload", progress=0.5),
                ev(4, "complete", 900, output={"ok": True}),
            ]
        ),
    )
    wait_for_records(page, mid, 4)
    assert texts(page, mid, ".drnb-running-state") == ["ended with the run"]
    assert texts(page, mid, ".drnb-running-time") == ["800 ms"]
    assert texts(page, mid, ".drnb-progress-pct") == ["done"]
    # step-start events are not listed as custom events
    assert "custom:step_start" not in texts(page, mid, ".drnb-object-label")


# -- following the newest tokens ---------------------------------------------------------------


def test_a_scroll_up_in_the_frame_the_log_follows_new_events_is_kept(page: Any) -> None:
    """Scroll events come one per frame: the one after the view's own scroll to the newest row
    may carry the user's scroll too, and must not be taken for the view's."""
    mid = create_view(page, default_state())
    events = [ev(1, "started", 0)]
    events += [ev(2 + i, "custom:note", 10 * (i + 1), text=f"note {i}") for i in range(60)]
    push(page, mid, batch(events))
    wait_for_records(page, mid, 61)
    root = root_selector(mid)
    assert text(page, mid, ".drnb-follow") == "pause"  # following
    push(
        page, mid, batch([ev(62 + i, "custom:note", 900, text="more") for i in range(20)], prev=61)
    )
    # the view draws the new rows (following: it scrolls to the end), then the user scrolls up,
    # all before the next frame's scroll event
    page.evaluate(
        """([id, sel]) => {
          const view = H.view(id);
          view.draw();
          document.querySelector(sel).querySelector('.drnb-viewport').scrollTop = 40;
        }""",
        [mid, root],
    )
    page.wait_for_function(
        "sel => document.querySelector(sel).dataset.follow === '0'", arg=root, timeout=5000
    )
    assert page.eval_on_selector(f"{root} .drnb-viewport", "el => el.scrollTop") == 40
    assert text(page, mid, ".drnb-follow") == "resume"


def test_output_follows_the_newest_tokens_until_the_user_scrolls_up(page: Any) -> None:
    n = 5000
    events = [ev(1, "started", 0)]
    events += [ev(2 + i, "token", 300 + 2 * i, content=f"word{i} ") for i in range(n)]
    mid = create_view(page, default_state(status="running"))
    push(page, mid, batch(events))
    wait_for_records(page, mid, n + 1)
    root = root_selector(mid)
    box = f"{root} .drnb-token-text"
    at_end = (
        "el => el.scrollHeight > el.clientHeight"
        " && el.scrollTop + el.clientHeight >= el.scrollHeight - 4"
    )
    page.wait_for_function(f"sel => ({at_end})(document.querySelector(sel))", arg=box, timeout=5000)
    # time to first token (from `started`) and the rate between first and last token
    assert text(page, mid, ".drnb-token-rate") == "first token after 300 ms · 500 tokens/s"
    assert not page.is_visible(f"{root} .drnb-token-follow")

    # scrolling up stops following, like a terminal; new text no longer moves the box
    page.eval_on_selector(box, "el => { el.scrollTop = 0; }")
    expect(page.locator(f"{root} .drnb-token-follow")).to_be_visible()
    more = [ev(2 + n + i, "token", 300 + 2 * (n + i), content=f"more{i} ") for i in range(200)]
    push(page, mid, batch(more, prev=n + 1))
    wait_for_records(page, mid, n + 201)
    page.wait_for_timeout(100)
    assert page.eval_on_selector(box, "el => el.scrollTop") == 0
    # "follow newest" goes back to the end and follows again
    page.click(f"{root} .drnb-token-follow")
    assert page.eval_on_selector(box, at_end)
    push(page, mid, batch([ev(n + 202, "token", 20000, content=" end")], prev=n + 201))
    wait_for_records(page, mid, n + 202)
    page.wait_for_function(f"sel => ({at_end})(document.querySelector(sel))", arg=box)
    save_shot(page.locator(f"{root} .drnb-tokens"), "follow-tokens.png")
