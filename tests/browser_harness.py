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
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def pump_outbox(page: Any, model_id: int, view: ForwardingRunView, until: Any,
                timeout: float = 60.0) -> int:
    """Carry ``view.outbox`` to the page (in order, a few operations per call) until
    ``until()`` is true with nothing left to carry; answers the page's replay requests.
    Returns the number of operations delivered."""
    delivered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ops: list[Any] = []
        with contextlib.suppress(queue.Empty):
            ops.append(view.outbox.get(timeout=0.02))
            while len(ops) < 20:
                ops.append(view.outbox.get_nowait())
        requests = page.evaluate(
            "([id, ops]) => { H.apply(id, ops); return H.sent(id).splice(0); }",
            [model_id, ops],
        )
        delivered += len(ops)
        for content in requests:
            view._on_front_end_msg(view, content, [])
        if not ops and not requests and until():
            return delivered
    raise TimeoutError("the page did not reach the expected state in time")
