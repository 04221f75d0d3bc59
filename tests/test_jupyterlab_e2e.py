"""End to end in real JupyterLab and headless Chromium: a notebook shows a RunView, the next cell
publishes events with pauses, and the widget shows them (and the final status) while that cell
is still running. When the run ends the view refreshes its output's static HTML (what a saved
notebook shows on GitHub and nbviewer); JupyterLab then draws the widget again, and the new view
comes back as the user left the old one (filters, pause and scroll, the opened event,
monospace; later the time-travel position). The saved notebook holds the final static view.
Then the page is reloaded and the view gets the whole run back from the kernel. Saves
docs/live-view.png for the README from the reloaded view (when missing, or with
DOCKRION_NB_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    JS_PROMPTS,
    LAB_TOKEN,
    browser_context,
    chromium_available,
    jupyter_available,
    jupyter_lab,
    open_notebook_and_run_all,
    wait_kernel_idle,
    write_notebook,
)
from conftest import require

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
README_SHOT = ROOT / "docs" / "live-view.png"
# The README's screenshot is (re)written when missing or when asked, so that a test run does
# not leave a changed binary in the work tree.
UPDATE_SHOT = os.environ.get("DOCKRION_NB_UPDATE_SCREENSHOT") == "1" or not README_SHOT.exists()
TOKENS = 8
# started, progress, a token and a progress per word, 3 heartbeats, 2 steps, checkpoint,
# custom, complete (see PUBLISH)
TOTAL = 2 + TOKENS * 2 + 3 + 2 + 3

SHOW = """\
from dockrion_nb.widget import RunView
w = RunView("run-x")
w"""

PUBLISH = f"""\
import pathlib, time
from dockrion_nb.engine import get_engine
ctx = get_engine().context("run-x", agent_name="e2e-agent", framework="plain-python")
ctx.sync_emit_started()
ctx.sync_emit_progress("plan", 0.0, "starting")
for i in range({TOKENS}):
    time.sleep(0.4)
    ctx.sync_emit_token(f"word{{i}} ")
    ctx.sync_emit_progress("answer", (i + 1) / {TOKENS}, f"token {{i + 1}} of {TOKENS}")
    if i % 3 == 0:
        ctx.sync_emit_heartbeat()
# the test ends the run when it has set up the view (at most a minute)
end = time.monotonic() + 60
while not pathlib.Path("end.flag").exists() and time.monotonic() < end:
    time.sleep(0.05)
ctx.sync_emit_step("retrieve", 900, ["question"], ["docs"])
ctx.sync_emit_step("answer", 2400, ["docs"], ["answer"])
ctx.sync_checkpoint("state", {{"docs": 3, "draft": "word0 word1"}})
ctx.sync_emit("score", {{"relevance": 0.92}})
ctx.sync_emit_complete({{"answer": "done"}}, latency_seconds=3.6)
time.sleep(3.0)  # the cell is still running: the widget must already show the final status
print("PUBLISHED")"""

# a refresh asked for by hand, once the test has moved the time-travel scrubber
REFRESH = """\
import pathlib, time
end = time.monotonic() + 60
while not pathlib.Path("refresh.flag").exists() and time.monotonic() < end:
    time.sleep(0.05)
w.refresh_static()
print("REFRESHED")"""

DONE = 'print("ALL DONE", w.status, len(w.events))'


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="drnb-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


STATE_JS = (
    "() => { const r = document.querySelector('.drnb-root');"
    " const t = (s) => r ? (r.querySelector(s)?.textContent ?? '') : null;"
    " return {events: r ? Number(r.dataset.events) : -1, status: t('.drnb-badge'),"
    " conn: t('.drnb-conn'), tokens: t('.drnb-token-text'),"
    f" prompts: ({JS_PROMPTS})()}}; }}"
)


def widget_state(page: Any) -> dict[str, Any]:
    """What the first RunView on the page shows, and every code cell's prompt."""
    return dict(page.evaluate(STATE_JS))


BEFORE_END = TOTAL - 5  # what the publisher sends before it waits for end.flag

VIEW_UI_JS = """() => {
  const root = document.querySelector('.drnb-root');
  const q = (s) => root.querySelector(s);
  return {
    tag: root.__drnbView.tag ?? null,
    off: [...root.querySelectorAll('.drnb-chip.drnb-off')].map(c => c.dataset.type),
    follow: root.dataset.follow, logTop: q('.drnb-viewport').scrollTop,
    selected: q('.drnb-row.drnb-selected .drnb-seq')?.textContent ?? null,
    detail: q('.drnb-detail').classList.contains('drnb-open')
      ? q('.drnb-detail-title').textContent : '',
    mono: q('.drnb-token-text').classList.contains('drnb-mono'),
    travel: root.dataset.travel, mode: q('.drnb-travel-mode').textContent,
    top: Math.round(root.getBoundingClientRect().top),
  };
}"""


def view_ui(page: Any) -> dict[str, Any]:
    """What the user set in the first RunView on the page, and where it sits on the page."""
    return dict(page.evaluate(VIEW_UI_JS))


def wait_redrawn(page: Any) -> None:
    """Until JupyterLab has drawn the widget again: the view on the page is not the tagged one."""
    page.wait_for_function(
        "() => { const r = document.querySelector('.drnb-root');"
        " return r && r.isConnected && r.__drnbView && r.__drnbView.tag === undefined; }",
        timeout=30000,
    )


def test_live_view_updates_in_jupyterlab_while_the_publishing_cell_runs(work: Path) -> None:
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    require(jupyter_available(), "JupyterLab and ipykernel are not installed")
    nbdir = work / "nb"
    nbdir.mkdir()
    write_notebook(nbdir / "live.ipynb", [SHOW, PUBLISH, REFRESH, DONE])

    with jupyter_lab(work, nbdir) as base, browser_context((1280, 1500)) as context:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        url = f"{base}/lab/tree/live.ipynb?token={LAB_TOKEN}"
        open_notebook_and_run_all(page, url)
        page.wait_for_selector(".drnb-root", state="attached", timeout=60000)

        # sample while the publishing cell (the second one) runs, until it waits for end.flag
        samples: list[dict[str, Any]] = []

        def sample_until(done: Any, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s = widget_state(page)
                s["busy"] = len(s["prompts"]) > 1 and "*" in s["prompts"][1]
                samples.append(s)
                if done(s):
                    return
                time.sleep(0.15)
            raise AssertionError(f"the view did not get there: {samples[-5:]}")

        sample_until(lambda s: s["events"] == BEFORE_END)
        # the user, while the run goes on: hides heartbeats, pauses the log and scrolls it up,
        # opens an event, switches the output to monospace
        root = ".drnb-root"
        page.click(f'{root} .drnb-chip[data-type="heartbeat"]')
        page.eval_on_selector(f"{root} .drnb-viewport", "el => { el.scrollTop = 40; }")
        page.wait_for_function(f"() => document.querySelector('{root}').dataset.follow === '0'")
        page.click(f'{root} .drnb-row[data-index="3"]')
        page.click(f"{root} .drnb-mono-toggle")
        before = view_ui(page)
        assert before["off"] == ["heartbeat"] and before["follow"] == "0"
        assert before["logTop"] == 40 and before["selected"] and before["mono"]
        page.evaluate("() => { document.querySelector('.drnb-root').__drnbView.tag = 'old'; }")
        (nbdir / "end.flag").touch()

        sample_until(lambda s: s["status"] == "complete" and s["events"] == TOTAL)
        # the run ended: the view refreshed its static HTML, JupyterLab drew the widget again,
        # and the new view is as the user left the old one, in the same place on the page
        wait_redrawn(page)
        after = view_ui(page)
        assert after == {**before, "tag": None}
        sample_until(lambda s: not s["busy"] and s["status"] == "complete")

        busy = [s for s in samples if s["busy"]]
        counts_while_busy = sorted({s["events"] for s in busy if s["events"] > 0})
        assert len(counts_while_busy) >= 3, samples  # it grew, step by step, during the cell
        assert any(0 < s["events"] < TOTAL for s in busy)
        assert any(s["status"] == "running" for s in busy)
        assert any(s["status"] == "complete" and s["events"] == TOTAL for s in busy), samples[-12:]

        # time travel on the finished run, then a refresh by hand: the scrubber stays put
        scrub = "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }"
        page.eval_on_selector(f"{root} .drnb-travel-range", scrub, 5)
        page.click(f"{root} .drnb-travel-mode")
        travelled = view_ui(page)
        assert travelled["travel"] == "5" and travelled["mode"] == "by time"
        page.evaluate("() => { document.querySelector('.drnb-root').__drnbView.tag = 'old'; }")
        (nbdir / "refresh.flag").touch()
        page.wait_for_selector('.jp-OutputArea-output:has-text("REFRESHED")', timeout=60000)
        wait_redrawn(page)
        assert view_ui(page) == {**travelled, "tag": None}
        page.click(f"{root} .drnb-travel-end")  # back to the whole run

        page.wait_for_selector('.jp-OutputArea-output:has-text("ALL DONE")', timeout=60000)
        final = widget_state(page)
        assert final["status"] == "complete" and final["events"] == TOTAL
        assert final["tokens"] == "".join(f"word{i} " for i in range(TOKENS))
        assert final["conn"] == "closed"  # the run ended: the subscription ended too
        assert page.locator(f'.jp-OutputArea-output:has-text("ALL DONE complete {TOTAL}")').count()
        assert page.locator('.jp-OutputArea-output:has-text("IOPub message rate")').count() == 0

        # save: the notebook on disk holds the final static view (GitHub and nbviewer show it;
        # JupyterLab saves no widget state by default) next to the widget
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.keyboard.press("Control+s")
        saved = nbdir / "live.ipynb"
        deadline = time.monotonic() + 20
        while "widget-view+json" not in saved.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        [output] = json.loads(saved.read_text())["cells"][0]["outputs"]
        assert "application/vnd.jupyter.widget-view+json" in output["data"]
        static = "".join(output["data"]["text/html"])
        assert f"run-x</b> &middot; complete &middot; {TOTAL} events" in static
        assert "word0 word1" in static and "latency 3.60 s" in static

        # reload: the new front-end model starts empty, asks the kernel by message and gets the
        # whole run back
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="attached", timeout=60000)
        wait_kernel_idle(page)
        page.wait_for_function(
            f"() => {{ const r = document.querySelector('.drnb-root');"
            f" return r && Number(r.dataset.events) === {TOTAL}; }}",
            timeout=60000,
        )
        again = widget_state(page)
        assert again["status"] == "complete"
        assert again["tokens"] == final["tokens"]
        asked = page.evaluate(
            "() => document.querySelector('.drnb-root').__drnbView.store.stats.requests"
        )
        assert asked >= 1
        # the README's screenshot: the whole finished run, as a user who opens it sees it
        page.evaluate("() => document.querySelector('.drnb-root').scrollIntoView({block: 'start'})")
        screenshot = README_SHOT if UPDATE_SHOT else work / "live-view.png"
        page.locator(".drnb-root").screenshot(path=str(screenshot))
        assert screenshot.stat().st_size > 10_000
        assert errors == []
