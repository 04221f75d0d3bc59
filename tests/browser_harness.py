"""Drive the widget's front end in headless Chromium against a small fake anywidget model.

The page imports the very ``widget.js``/``widget.css`` that ``RunView`` ships (copied from
``dockrion_nb.widget.ASSET_DIR``), calls ``initialize({model})`` once per model and
``render({model, el})`` per view, as anywidget does. ``window.H`` lets Python create models,
deliver custom messages and trait changes, and read what the front end sent back.

``ForwardingRunView`` is a real ``RunView`` whose comm traffic (custom messages and trait
changes, in order) is carried to the page instead of a kernel comm: the whole data path from
publish to pixels except Jupyter's websocket. Used by the tests and by ``bench/widget_bench.py``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockrion_nb.comparison import CompareView
from dockrion_nb.widget import RunView

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

INDEX_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>RunView harness</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="widget.css">
<style>body { font: 13px sans-serif; margin: 8px; } .host { margin-bottom: 12px; }</style>
</head><body><div id="hosts"></div>
<script type="module" src="harness.js"></script>
</body></html>
"""

HARNESS_JS = Path(__file__).with_name("widget_harness.js")


def chromium_available() -> bool:
    if not os.access(CHROMIUM, os.X_OK):
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def serve_harness(asset_dir: Path | None = None) -> Iterator[str]:
    """Serve the harness page (and the widget's asset) on 127.0.0.1; yields the page URL."""
    if asset_dir is None:
        from dockrion_nb.widget import ASSET_DIR

        asset_dir = ASSET_DIR

    root = Path(tempfile.mkdtemp(prefix="drnb-harness-"))
    try:
        shutil.copy(asset_dir / "widget.js", root / "widget.js")
        shutil.copy(asset_dir / "widget.css", root / "widget.css")
        (root / "index.html").write_text(INDEX_HTML)
        shutil.copy(HARNESS_JS, root / "harness.js")
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def browser_context(viewport: tuple[int, int] = (1200, 1400)) -> Iterator[Any]:
    """A fresh headless Chromium (Debian's binary, throwaway profile and HOME)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="drnb-chromium-")
    home = tempfile.mkdtemp(prefix="drnb-home-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
                env={**os.environ, "HOME": home},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def browser_page(viewport: tuple[int, int] = (1200, 1400)) -> Iterator[Any]:
    """One page in a fresh headless Chromium."""
    with browser_context(viewport) as context:
        yield context.pages[0] if context.pages else context.new_page()


DOCS = Path(__file__).resolve().parents[1] / "docs"
UPDATE_SHOTS = os.environ.get("DOCKRION_NB_UPDATE_SCREENSHOT") == "1"


def save_shot(locator: Any, name: str) -> Path:
    """A screenshot of ``locator`` for the docs: ``docs/<name>`` when it is missing or when
    ``DOCKRION_NB_UPDATE_SCREENSHOT=1`` (so a test run leaves no changed binary behind), else a
    scratch file. Returns where it went."""
    target = DOCS / name
    if target.exists() and not UPDATE_SHOTS:
        target = Path(tempfile.mkdtemp(prefix="drnb-shot-")) / name
    locator.screenshot(path=str(target))
    return target


def open_harness(page: Any, url: str) -> list[str]:
    """Load the harness page; returns the list that collects console errors and page errors."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => window.__harnessReady === true")
    return errors


def create_view(page: Any, state: dict[str, Any], views: int = 1) -> int:
    """A fake model with ``state`` (after ``initialize``) and ``views`` rendered views."""
    model_id: int = page.evaluate("(s) => H.create(s)", state)
    for _ in range(views):
        page.evaluate("(id) => H.render(id)", model_id)
    return model_id


def default_state(run_id: str = "run-x", **extra: Any) -> dict[str, Any]:
    state = {
        "_store_key": uuid.uuid4().hex,
        "run_id": run_id,
        "backend": "memory",
        "status": "waiting",
        "connection": "live",
        "note": "",
        "event_count": 0,
        "type_counts": {},
        "sent_upto": 0,
        "last_sequence": 0,
        "max_events": None,
        "latency_seconds": None,
        "can_cancel": False,
        "snapshot": None,
    }
    state.update(extra)
    return state


def root_selector(model_id: int, view: int = 0) -> str:
    return f'.host[data-model="{model_id}"][data-view="{view}"] .drnb-root'


def wait_for_records(page: Any, model_id: int, n: int, timeout: float = 30.0) -> None:
    """Until view 0 of ``model_id`` has drawn ``n`` events."""
    page.wait_for_function(
        "([sel, n]) => { const r = document.querySelector(sel);"
        " return r && Number(r.dataset.events) >= n; }",
        arg=[root_selector(model_id), n],
        timeout=timeout * 1000,
    )


# -- a real RunView whose comm is the page -------------------------------------------------------


class ForwardingRunView(RunView):
    """A ``RunView`` whose custom messages and trait changes go, in order, to ``self.outbox``
    (``initial`` is the state the page's model starts from)."""

    def _start(self, bus: Any) -> None:
        self.outbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.initial = {n: getattr(self, n) for n in default_state()}
        names = [n for n in default_state() if n in self.keys]
        self.observe(self._forward_trait, names=names)
        super()._start(bus)

    def _forward_trait(self, change: Any) -> None:
        self.outbox.put(("set", change["name"], change["new"]))

    def _emit(self, payload: dict[str, Any]) -> None:
        self.outbox.put(("msg", payload, None))


class ForwardingCompareView(CompareView):
    """A ``CompareView`` whose messages and ``runs`` changes go, in order, to ``self.outbox``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.outbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        super().__init__(*args, **kwargs)
        self.initial = {
            "_kind": "compare",
            "_store_key": self._store_key,
            "run_ids": list(self.run_ids),
            "runs": list(self.runs),
        }
        self.observe(self._forward_trait, names=["runs"])

    def _forward_trait(self, change: Any) -> None:
        self.outbox.put(("set", change["name"], change["new"]))

    def _emit(self, payload: dict[str, Any]) -> None:
        self.outbox.put(("msg", payload, None))


def pump_outbox(
    page: Any,
    model_id: int,
    view: ForwardingRunView | ForwardingCompareView,
    until: Any,
    timeout: float = 60.0,
) -> int:
    """Carry ``view.outbox`` to the page (in order, a few operations per call) until
    ``until()`` is true with nothing left to carry; answers the page's replay requests.
    Returns the number of operations delivered."""
    delivered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ops: list[Any] = []
        with contextlib.suppress(queue.Empty):
            ops.append(view.outbox.get(timeout=0.02))
            while len(ops) < 40:
                ops.append(view.outbox.get_nowait())
        requests = page.evaluate(
            "([id, ops]) => H.applyJson(id, ops)",
            [model_id, json.dumps(ops, default=str) if ops else ""],
        )
        delivered += len(ops)
        for content in requests:
            view._on_front_end_msg(view, content, [])
        # ``until()`` first, then the outbox once more: the view may have queued its last
        # messages (and then ended) between the empty look above and ``until()``
        if not ops and not requests and until() and view.outbox.empty():
            return delivered
    raise TimeoutError("the page did not reach the expected state in time")


# -- JupyterLab --------------------------------------------------------------------------------

LAB_TOKEN = "drnb-e2e-token"

JS_PROMPTS = """() => Array.from(
  document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt'))
  .map(e => e.textContent.trim())"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jupyter_available() -> bool:
    import importlib.util

    return (Path(sys.executable).parent / "jupyter").exists() and all(
        importlib.util.find_spec(m) is not None for m in ("jupyterlab", "ipykernel")
    )


def lab_env(work: Path) -> dict[str, str]:
    """Environment that keeps every Jupyter file under ``work`` (nothing in the real HOME)."""
    j = work / "jupyter"
    env = {
        **os.environ,
        "HOME": str(work / "home"),
        "JUPYTER_CONFIG_DIR": str(j / "config"),
        "JUPYTER_DATA_DIR": str(j / "data"),
        "JUPYTER_RUNTIME_DIR": str(j / "runtime"),
        "IPYTHONDIR": str(j / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for d in (
        "home",
        "jupyter/config/labconfig",
        "jupyter/data",
        "jupyter/runtime",
        "jupyter/ipython",
        "jupyter/settings/@jupyterlab/notebook-extension",
    ):
        (work / d).mkdir(parents=True, exist_ok=True)
    # no "get Jupyter news?" toast over the page
    (j / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    # render every cell (JupyterLab's default windowing skips off-screen ones)
    (
        j / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    ).write_text(json.dumps({"windowingMode": "none"}))
    return env


@contextlib.contextmanager
def jupyter_lab(work: Path, root_dir: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 for ``root_dir``; yields its base URL. Stopped by PID."""
    with jupyter_server(work, root_dir, "lab") as base:
        yield base


@contextlib.contextmanager
def jupyter_server(work: Path, root_dir: Path, app: str = "lab") -> Iterator[str]:
    """``jupyter lab`` or ``jupyter notebook`` (Notebook 7) on 127.0.0.1 for ``root_dir``, with
    a token; yields its base URL. Stopped by PID."""
    import subprocess
    import urllib.request

    port = free_port()
    config = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        str(Path(sys.executable).parent / "jupyter"),
        app,
        "--no-browser",
        "--allow-root",
        f"--IdentityProvider.token={LAB_TOKEN}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--{config}.workspaces_dir={work / 'jupyter' / 'workspaces'}",
        f"--{config}.user_settings_dir={work / 'jupyter' / 'settings'}",
    ]
    if app == "lab":
        cmd += [
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
        ]
    log = open(work / f"{app}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=lab_env(work), start_new_session=True
    )
    try:
        status = f"http://127.0.0.1:{port}/api/status?token={LAB_TOKEN}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(Exception), urllib.request.urlopen(status, timeout=1) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter {app} did not answer within 90 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


def open_notebook_and_run_all(page: Any, url: str) -> None:
    """Open a notebook in JupyterLab, wait for an idle kernel, then Run > Run All Cells."""
    page.goto(url, wait_until="domcontentloaded", timeout=60000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="attached", timeout=60000)
    wait_kernel_idle(page)
    # Right after the kernel reports idle, a Run All is sometimes swallowed (no cell starts);
    # no cell has run then, so running all again is safe.
    for _attempt in range(4):
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        with contextlib.suppress(Exception):
            page.wait_for_function(f"() => ({JS_PROMPTS})().some(p => p !== '[ ]:')", timeout=8000)
            return
    raise RuntimeError("Run All Cells did not start the notebook")


def wait_kernel_idle(page: Any, timeout: float = 60.0) -> None:
    page.wait_for_function(
        "() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        " return e && e.getAttribute('data-status') === 'idle'; }",
        timeout=timeout * 1000,
    )
