"""The live view in notebook front ends beyond JupyterLab, driven headless in Chromium: Notebook 7
and marimo render it and update it live while the publisher runs; a notebook executed by
nbclient saves the final static view, which nbconvert's HTML (what nbviewer shows) displays
with no kernel and no widget code. VS Code and Colab cannot run here: docs/widget.md says what
to expect there."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    JS_PROMPTS,
    LAB_TOKEN,
    browser_context,
    chromium_available,
    free_port,
    jupyter_available,
    jupyter_server,
    save_shot,
    write_notebook,
)
from conftest import require

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

WORDS = 12
TOTAL = WORDS + 2  # started, the tokens, complete

PUBLISH = f"""\
import time
from dockrion_nb.engine import get_engine
ctx = get_engine().context("{{run}}", agent_name="fe-agent")
time.sleep(1.0)
ctx.sync_emit_started()
for i in range({WORDS}):
    time.sleep(0.3)
    ctx.sync_emit_token(f"word{{{{i}}}} ")
ctx.sync_emit_complete({{{{"ok": True}}}})
time.sleep(3.0)  # still running: the view must already show the end
print("PUBLISHED")"""

VIEW_STATE = """el => ({events: Number(el.dataset.events),
  status: el.querySelector('.drnb-badge').textContent,
  tokens: el.querySelector('.drnb-token-text').textContent})"""


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="drnb-fe-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sample_until_complete(page: Any, busy: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """What the first view shows (and whether the publisher still runs), until it is complete
    and the publisher has finished."""
    samples: list[dict[str, Any]] = []
    root = page.locator(".drnb-root").first
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if root.count():
            s = dict(root.evaluate(VIEW_STATE))
            s["busy"] = busy()
            samples.append(s)
            if s["status"] == "complete" and not s["busy"]:
                return samples
        time.sleep(0.15)
    raise AssertionError(f"the view never completed: {samples[-5:]}")


def assert_live(samples: list[dict[str, Any]]) -> None:
    """The view grew step by step while the publisher ran, and showed the end before it did."""
    busy = [s for s in samples if s["busy"]]
    assert len({s["events"] for s in busy if 0 < s["events"] < TOTAL}) >= 3, samples
    assert any(s["status"] == "complete" and s["events"] == TOTAL for s in busy), samples[-8:]
    assert samples[-1]["tokens"] == "".join(f"word{i} " for i in range(WORDS))


# -- Notebook 7 ---------------------------------------------------------------------------------


def test_notebook_7_renders_the_view_and_updates_it_live(work: Path) -> None:
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    require(jupyter_available(), "Jupyter and ipykernel are not installed")
    require(
        (Path(sys.executable).parent / "jupyter-notebook").exists(),
        "Notebook 7 (the notebook package) is not installed",
    )
    nbdir = work / "nb"
    nbdir.mkdir()
    show = 'from dockrion_nb.widget import RunView\nw = RunView("nb7-run")\nw'
    write_notebook(nbdir / "live.ipynb", [show, PUBLISH.format(run="nb7-run")])
    with jupyter_server(work, nbdir, "notebook") as base, browser_context() as context:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
        page.goto(f"{base}/notebooks/live.ipynb?token={LAB_TOKEN}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached", timeout=60000)
        wait_kernel_idle_api(base)
        # Shift+Enter on each cell (Notebook 7's Run All menu sometimes ignores the first click)
        page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(".drnb-root", state="attached", timeout=60000)
        prompts = JS_PROMPTS.replace(".jp-NotebookPanel ", "")
        samples = sample_until_complete(page, lambda: "*" in [*page.evaluate(prompts), "", ""][1])
        assert_live(samples)
        save_shot(page.locator(".drnb-root").first, "notebook7.png")
        # Notebook 7's own settings code may fail on a fresh profile; none may come from ours
        assert [e for e in errors if "/static/notebook/" not in e] == []


def wait_kernel_idle_api(base: str, timeout: float = 60) -> None:
    """Until the server's kernel reports idle (Notebook 7 has no toolbar indicator to read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            url = f"{base}/api/kernels?token={LAB_TOKEN}"
            with urllib.request.urlopen(url, timeout=2) as r:
                kernels = json.loads(r.read())
            if kernels and all(k["execution_state"] == "idle" for k in kernels):
                return
        time.sleep(0.2)
    raise AssertionError("the kernel did not become idle")


# -- marimo ---------------------------------------------------------------------------------------

MARIMO_APP = """\
import marimo

app = marimo.App()


@app.cell
def _():
    from dockrion_nb.widget import RunView

    view = RunView("marimo-run")
    view
    return (view,)


@app.cell
def _(view):
    import threading
    import time

    from dockrion_nb.engine import get_engine

    def publish():
        ctx = get_engine().context("marimo-run", agent_name="fe-agent")
        time.sleep(1.0)
        ctx.sync_emit_started()
        for i in range({words}):
            time.sleep(0.3)
            ctx.sync_emit_token(f"word{{i}} ")
        ctx.sync_emit_complete({{"ok": True}})
        time.sleep(2.0)
        done.append(True)

    done = []
    threading.Thread(target=publish, daemon=True).start()
    return (done,)


if __name__ == "__main__":
    app.run()
"""


@contextlib.contextmanager
def marimo_server(work: Path, app: Path) -> Iterator[str]:
    """``marimo run`` (headless, no token) on a free loopback port; yields its URL. By PID."""
    marimo = Path(sys.executable).parent / "marimo"
    port = free_port()
    log = open(work / "marimo.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            str(marimo),
            "run",
            str(app),
            "--headless",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-token",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**__import__("os").environ, "HOME": str(work)},
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"marimo exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("marimo did not answer within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def test_marimo_renders_the_view_and_updates_it_live(work: Path) -> None:
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    require((Path(sys.executable).parent / "marimo").exists(), "marimo is not installed")
    app = work / "app.py"
    app.write_text(MARIMO_APP.format(words=WORDS))
    started = time.monotonic()
    with marimo_server(work, app) as url, browser_context() as context:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="domcontentloaded")
        # marimo draws each anywidget in a shadow root; Playwright's CSS selectors go inside
        page.locator(".drnb-root").first.wait_for(state="attached", timeout=60000)
        # the publisher runs for about 1 + 0.3 * WORDS + 2 seconds after the page connects
        first_seen = time.monotonic()
        span = 1.0 + 0.3 * WORDS + 2.0
        samples = sample_until_complete(page, lambda: time.monotonic() - first_seen < span - 1.5)
        assert time.monotonic() - started < 120
        assert_live(samples)
        root = page.locator(".drnb-root").first
        asked = root.evaluate("el => el.__drnbView.store.stats.msgs")
        assert asked > 3  # the events came as custom messages, live, not as a final snapshot
        save_shot(root, "marimo.png")
        assert errors == []


# -- a notebook executed headless, then shown as static HTML ---------------------------------------


def test_an_executed_notebook_saves_the_final_static_view(work: Path) -> None:
    """nbclient runs a notebook that shows a view, then publishes the run; nothing in it asks
    for a refresh. The saved output's static HTML is the final view (what GitHub shows), the
    saved widget state is final too (what nbviewer draws the widget from), and nbconvert's
    default export of the notebook as JupyterLab saves it (no widget state) shows the static
    view, escaped, in Chromium."""
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    require(jupyter_available(), "Jupyter and ipykernel are not installed")
    import nbclient
    import nbformat
    from nbconvert import HTMLExporter

    nb_path = work / "static.ipynb"
    show = 'from dockrion_nb.widget import RunView\nw = RunView("static-run")\nw'
    publish = (
        "from dockrion_nb.engine import get_engine\n"
        'ctx = get_engine().context("static-run", agent_name="fe-agent")\n'
        "ctx.sync_emit_started()\n"
        'for word in ["<b>not", " bold</b>", " final answer"]:\n'
        "    ctx.sync_emit_token(word)\n"
        'ctx.sync_emit_step("plan", 120, ["q"], ["plan"])\n'
        "ctx.sync_emit_complete(latency_seconds=0.5)\n"
        "w.wait(10)"
    )
    write_notebook(nb_path, [show, publish])
    nb = nbformat.read(nb_path, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    out = nb.cells[0].outputs[0]
    assert "application/vnd.jupyter.widget-view+json" in out["data"]  # the live view stays
    static = out["data"]["text/html"]
    assert "complete &middot; 6 events" in static
    assert "&lt;b&gt;not bold&lt;/b&gt; final answer" in static
    assert "RunView(static-run) complete, 6 events" in out["data"]["text/plain"]

    # the widget state nbclient saved: what nbviewer's widget renderer draws the view from
    model_id = out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    state = saved[model_id]["state"]
    assert (state["status"], state["event_count"], state["connection"]) == (
        "complete",
        6,
        "closed",
    )
    assert state["sent_upto"] == state["last_sequence"] == 6
    assert state["snapshot"]["note"] == "saved view: 6 events"
    # nbconvert's default export picks the widget (its code comes from a CDN, so not here)
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert 'type="application/vnd.jupyter.widget-view+json"' in body
    assert "saved view: 6 events" in body and "dockrion-runview-static" not in body

    # JupyterLab saves no widget state by default: nbconvert's default export (what nbviewer
    # does) then shows the static view
    del nb.metadata["widgets"]
    body, _ = HTMLExporter().from_notebook_node(nb)
    html_file = work / "static.html"
    html_file.write_text(body)
    with browser_context() as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(html_file.as_uri())
        view = page.locator(".dockrion-runview-static")
        assert view.count() == 1
        shown = str(view.text_content())
        assert "run static-run · complete" in shown and "latency 0.50 s" in shown
        assert "<b>not bold</b> final answer" in shown  # escaped text, not markup
        assert view.locator("b", has_text="not bold").count() == 0
        assert "plan" in str(view.locator("table").first.text_content())
        save_shot(view, "static-view.png")
