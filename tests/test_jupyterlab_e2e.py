"""End to end in real JupyterLab and headless Chromium: a notebook shows a RunView, the next cell
publishes events with pauses, and the widget shows them (and the final status) while that cell
is still running; then the page is reloaded and the view gets the whole run back from the
kernel. Saves docs/live-view.png for the README (when missing, or with
DOCKRION_NB_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

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
import time
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
ctx.sync_emit_step("retrieve", 900, ["question"], ["docs"])
ctx.sync_emit_step("answer", 2400, ["docs"], ["answer"])
ctx.sync_checkpoint("state", {{"docs": 3, "draft": "word0 word1"}})
ctx.sync_emit("score", {{"relevance": 0.92}})
ctx.sync_emit_complete({{"answer": "done"}}, latency_seconds=3.6)
time.sleep(3.0)  # the cell is still running: the widget must already show the final status
print("PUBLISHED")"""

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


def test_live_view_updates_in_jupyterlab_while_the_publishing_cell_runs(work: Path) -> None:
    screenshot = README_SHOT if UPDATE_SHOT else work / "live-view.png"
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    require(jupyter_available(), "JupyterLab and ipykernel are not installed")
    nbdir = work / "nb"
    nbdir.mkdir()
    write_notebook(nbdir / "live.ipynb", [SHOW, PUBLISH, DONE])

    with jupyter_lab(work, nbdir) as base, browser_context((1280, 1500)) as context:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        url = f"{base}/lab/tree/live.ipynb?token={LAB_TOKEN}"
        open_notebook_and_run_all(page, url)
        page.wait_for_selector(".drnb-root", state="attached", timeout=60000)

        # sample while the publishing cell (the second one) runs
        samples: list[dict[str, Any]] = []
        shot = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = widget_state(page)
            s["busy"] = len(s["prompts"]) > 1 and "*" in s["prompts"][1]
            samples.append(s)
            if s["busy"] and s["status"] == "complete" and not shot:
                page.evaluate(
                    "() => document.querySelector('.drnb-root').scrollIntoView({block: 'start'})"
                )
                screenshot.parent.mkdir(exist_ok=True)
                page.locator(".drnb-root").screenshot(path=str(screenshot))
                shot = True
            if not s["busy"] and s["status"] == "complete":
                break
            time.sleep(0.15)
        page.wait_for_selector('.jp-OutputArea-output:has-text("ALL DONE")', timeout=60000)

        busy = [s for s in samples if s["busy"]]
        counts_while_busy = sorted({s["events"] for s in busy if s["events"] > 0})
        assert len(counts_while_busy) >= 3, samples  # it grew, step by step, during the cell
        assert any(0 < s["events"] < TOTAL for s in busy)
        assert any(s["status"] == "running" for s in busy)
        assert any(s["status"] == "complete" and s["events"] == TOTAL for s in busy), samples[-12:]
        assert shot and screenshot.stat().st_size > 10_000

        final = widget_state(page)
        assert final["status"] == "complete" and final["events"] == TOTAL
        assert final["tokens"] == "".join(f"word{i} " for i in range(TOKENS))
        assert final["conn"] == "closed"  # the run ended: the subscription ended too
        assert page.locator(f'.jp-OutputArea-output:has-text("ALL DONE complete {TOTAL}")').count()
        assert page.locator('.jp-OutputArea-output:has-text("IOPub message rate")').count() == 0

        # save (so the reloaded page has the widget's output), then reload: the new front-end
        # model starts empty, asks the kernel by message and gets the whole run back
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.keyboard.press("Control+s")
        saved = nbdir / "live.ipynb"
        deadline = time.monotonic() + 20
        while "widget-view+json" not in saved.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
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
        assert errors == []
