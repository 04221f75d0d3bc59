"""The widget's figures: publish -> rendered in headless Chromium, and replay render times.

``run(quick) -> dict`` is what ``bench.runner`` calls (in a child process). Every path is real
except Jupyter's websocket: a real ``RunView`` on a private engine (memory backend) batches
events exactly as in a kernel, and its comm traffic (custom messages and trait changes, in
order) is carried to a page that runs the shipped ``widget.js`` against a fake anywidget model
(``tests/browser_harness.py``). Times end when the page has drawn the last event.

Figures (keys ending in ``_per_s`` are events per second, ``_s`` seconds):
- ``publish_to_render_per_s``: a thread publishes tokens with ``sync_emit_token`` while a view
  follows live; events over the time from the first publish to the last one drawn.
- ``replay_10k_render_s`` / ``replay_100k_render_s``: a finished run already stored; from
  creating the view to the last event drawn (subscription, batching, transport, drawing).
- ``replay_100k_browser_only_s``: the same 100,000 events handed to the page as the kernel
  sends a stored run (``REPLAY_BATCH`` per message, 20 messages a second), to the last draw:
  the browser's share alone.
- ``replay_100k_kernel_only_s``: the kernel's share alone: from creating a view of the stored
  run to the message that carries its last event, with no page.
- ``publish_only_per_s``: the same publishing loop with no view (the publisher's own limit).
- ``jupyterlab_publish_to_render_per_s``: in real JupyterLab, from the first publish in the
  kernel to the last event drawn in the page (Jupyter's comm and websocket included).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from browser_harness import (  # noqa: E402
    ForwardingRunView,
    browser_page,
    chromium_available,
    create_view,
    open_harness,
    pump_outbox,
    serve_harness,
    wait_for_records,
)

from dockrion_nb.engine import Engine  # noqa: E402
from dockrion_nb.events import BaseEvent, CompleteEvent, TokenEvent  # noqa: E402
from dockrion_nb.widget import MSG_INTERVAL, REPLAY_BATCH, encode_events  # noqa: E402


def _records(page: Any, model_id: int) -> int:
    return int(page.evaluate("(id) => H.records(id)", model_id))


def _drawn(page: Any, model_id: int) -> int:
    """Events the first view has drawn (its root's data-events)."""
    return int(
        page.evaluate(
            "(id) => { const v = H.view(id); return Number(v.root.dataset.events); }", model_id
        )
    )


def publish_to_render(page: Any, n: int) -> float:
    """Events per second from the first ``sync_emit_token`` to the last event drawn."""
    engine = Engine(name="bench-widget-live")
    try:
        engine.use({"backend": "memory", "max_events_per_run": 100_000})
        run_id = "bench-live"
        view = ForwardingRunView(run_id, engine=engine)
        model_id = create_view(page, view.initial)
        ctx = engine.context(run_id)
        started = threading.Event()
        t0 = [0.0]

        def publish() -> None:
            started.set()
            t0[0] = time.perf_counter()
            for i in range(n - 1):
                ctx.sync_emit_token(f"t{i} ")
            ctx.sync_emit_complete()

        thread = threading.Thread(target=publish, name="bench-publisher")
        thread.start()
        started.wait()
        pump_outbox(page, model_id, view, until=lambda: _drawn(page, model_id) >= n, timeout=300)
        elapsed = time.perf_counter() - t0[0]
        thread.join()
        view.close()
        return n / elapsed
    finally:
        engine.shutdown()


def publish_only(n: int) -> float:
    """Events per second of the same publishing loop with no view: the publisher's own limit."""
    engine = Engine(name="bench-widget-publish-only")
    try:
        engine.use({"backend": "memory", "max_events_per_run": 100_000})
        ctx = engine.context("bench-publish-only")
        t0 = time.perf_counter()
        for i in range(n - 1):
            ctx.sync_emit_token(f"t{i} ")
        ctx.sync_emit_complete()
        return n / (time.perf_counter() - t0)
    finally:
        engine.shutdown()


LAB_SHOW = """\
from dockrion_nb.widget import RunView
w = RunView("bench-lab")
w"""

LAB_PUBLISH = """\
import json, os, time
from dockrion_nb.engine import get_engine
ctx = get_engine().context("bench-lab")
time.sleep(1.0)  # let the view settle in the page
t0 = time.time()
for i in range({n} - 1):
    ctx.sync_emit_token(f"t{{i}} ")
ctx.sync_emit_complete()
t1 = time.time()
print("PUBLISHED", json.dumps({{"t0": t0, "t1": t1}}))"""


def lab_publish_to_render(n: int) -> float:
    """Events per second from the first publish in a JupyterLab kernel to the last event drawn
    in the page (kernel comm, Jupyter server, websocket and the front end all included)."""
    import re
    import shutil
    import tempfile

    from browser_harness import (
        LAB_TOKEN,
        browser_context,
        jupyter_lab,
        open_notebook_and_run_all,
        write_notebook,
    )

    work = Path(tempfile.mkdtemp(prefix="drnb-bench-lab-"))
    try:
        nbdir = work / "nb"
        nbdir.mkdir()
        write_notebook(nbdir / "bench.ipynb", [LAB_SHOW, LAB_PUBLISH.format(n=n)])
        with jupyter_lab(work, nbdir) as base, browser_context((1280, 1500)) as context:
            page = context.pages[0] if context.pages else context.new_page()
            open_notebook_and_run_all(page, f"{base}/lab/tree/bench.ipynb?token={LAB_TOKEN}")
            page.wait_for_function(
                f"() => {{ const r = document.querySelector('.drnb-root');"
                f" return r && Number(r.dataset.events) >= {n}; }}",
                timeout=300_000,
            )
            drawn_at = page.evaluate(
                "() => document.querySelector('.drnb-root').__drnbView.stats.lastDrawAt"
            )
            out = page.locator('.jp-OutputArea-output:has-text("PUBLISHED")')
            out.wait_for(timeout=120_000)
            match = re.search(r"PUBLISHED (\{.*\})", str(out.text_content()))
            assert match, "the publishing cell printed no timing"
            t0 = json.loads(match.group(1))["t0"]
            assert page.locator(':text("IOPub message rate exceeded")').count() == 0
        return n / (drawn_at / 1000 - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _store_run(engine: Engine, run_id: str, n: int) -> None:
    """A finished run of ``n - 1`` tokens and ``complete``, stored before any view exists."""
    events: list[BaseEvent] = [TokenEvent(run_id=run_id, content=f"w{i} ") for i in range(n - 1)]
    events.append(CompleteEvent(run_id=run_id))
    for k in range(0, n, 5000):
        engine.run(engine.bus.publish_many(run_id, events[k : k + 5000]), timeout=120)


def replay_render(page: Any, n: int) -> float:
    """Seconds from creating a view of a stored ``n``-event run to its last event drawn."""
    engine = Engine(name="bench-widget-replay")
    try:
        engine.use({"backend": "memory", "max_events_per_run": max(n, 10)})
        run_id = f"bench-replay-{n}"
        _store_run(engine, run_id, n)
        t0 = time.perf_counter()
        view = ForwardingRunView(run_id, engine=engine)
        model_id = create_view(page, view.initial)
        pump_outbox(page, model_id, view, until=lambda: _drawn(page, model_id) >= n, timeout=300)
        elapsed = time.perf_counter() - t0
        view.close()
        return elapsed
    finally:
        engine.shutdown()


def replay_kernel_only(n: int) -> float:
    """Seconds from creating a view of a stored ``n``-event run to the message that carries its
    last event, with no page: the kernel's share of ``replay_render`` (reading the store,
    batching, encoding, message pacing)."""
    engine = Engine(name="bench-widget-kernel")
    try:
        engine.use({"backend": "memory", "max_events_per_run": max(n, 10)})
        run_id = f"bench-kernel-{n}"
        _store_run(engine, run_id, n)
        t0 = time.perf_counter()
        view = ForwardingRunView(run_id, engine=engine)
        deadline = t0 + 300
        while time.perf_counter() < deadline:
            kind, payload, _ = view.outbox.get(timeout=deadline - time.perf_counter())
            if kind == "msg" and any(
                e.get("type") == "complete" for e in payload.get("events", ())
            ):
                break
        elapsed = time.perf_counter() - t0
        view.close()
        return elapsed
    finally:
        engine.shutdown()


def replay_browser_only(page: Any, n: int) -> float:
    """Seconds for the page alone to take ``n`` events in kernel-sized messages and draw them."""
    from datetime import UTC, datetime, timedelta

    t = datetime.now(UTC)
    events: list[BaseEvent] = []
    for i in range(1, n + 1):
        ts = t + timedelta(milliseconds=i)
        if i % 10 == 0:
            events.append(
                BaseEvent.model_validate(
                    {
                        "type": "custom:metric",
                        "run_id": "b",
                        "sequence": i,
                        "timestamp": ts,
                        "value": i,
                    }
                )
            )
        else:
            events.append(TokenEvent(run_id="b", sequence=i, timestamp=ts, content=f"w{i} "))
    msgs = []
    for k in range(0, n, REPLAY_BATCH):
        chunk = events[k : k + REPLAY_BATCH]
        msgs.append(
            {
                "kind": "events",
                "prev": k,
                "last": chunk[-1].sequence,
                "events": encode_events(chunk),
            }
        )
    from browser_harness import default_state

    model_id = create_view(page, default_state("b"))
    timing = page.evaluate(
        "([id, msgs, ms]) => H.pushSpaced(id, msgs, ms)",
        [model_id, json.dumps(msgs, default=str), round(MSG_INTERVAL * 1000)],
    )
    wait_for_records(page, model_id, n, timeout=300)
    assert _records(page, model_id) == n
    return float(timing["endMs"] - timing["startMs"]) / 1000


def run(quick: bool = False) -> dict[str, Any]:
    """The widget's figures (see the module docstring); a reason string where not measured."""
    if not chromium_available():
        return {"publish_to_render_per_s": "not measured: headless Chromium missing"}
    out: dict[str, Any] = {}
    with serve_harness() as url, browser_page() as page:
        open_harness(page, url)
        out["publish_to_render_per_s"] = round(publish_to_render(page, 5_000 if quick else 20_000))
        page.reload()
        open_harness(page, url)
        out["replay_10k_render_s"] = round(replay_render(page, 10_000), 3)
        page.reload()
        open_harness(page, url)
        out["replay_100k_render_s"] = round(replay_render(page, 100_000), 3)
        page.reload()
        open_harness(page, url)
        out["replay_100k_browser_only_s"] = round(replay_browser_only(page, 100_000), 3)
    out["replay_100k_kernel_only_s"] = round(replay_kernel_only(100_000), 3)
    out["publish_only_per_s"] = round(publish_only(5_000 if quick else 20_000))
    try:
        out["jupyterlab_publish_to_render_per_s"] = round(
            lab_publish_to_render(5_000 if quick else 20_000)
        )
    except Exception as exc:  # a figure, not a test: say why it is missing
        out["jupyterlab_publish_to_render_per_s"] = f"not measured: {exc}"[:200]
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(json.dumps(run(quick), indent=1))
