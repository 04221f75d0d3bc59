"""RunView on the Python side: replay + live through the engine, statuses, batching, close."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import redis_cleanup, require
from jupyter_client.session import json_packer
from servers import PrivateServer

from dockrion_nb import widget as widget_module
from dockrion_nb.backends import InMemoryBackend
from dockrion_nb.engine import Engine
from dockrion_nb.events import make_event
from dockrion_nb.widget import RunView, encode_events


class CapturingRunView(RunView):  # type: ignore[misc]
    """Records every custom message (payload, time, thread) instead of sending it to no one."""

    def _start(self, bus: Any) -> None:
        # observers first, so no change made by the engine thread is missed
        self.sent: list[tuple[float, str, dict[str, Any]]] = []
        self.trait_threads: list[str] = []
        self.statuses: list[str] = []
        self.connections: list[str] = []
        self.observe(self._note_change)
        super()._start(bus)

    def _note_change(self, change: Any) -> None:
        self.trait_threads.append(threading.current_thread().name)
        if change["name"] == "status":
            self.statuses.append(change["new"])
        elif change["name"] == "connection":
            self.connections.append(change["new"])

    def _emit(self, payload: dict[str, Any]) -> None:
        json_packer(payload)  # what the comm does first: raises where a real send would
        self.sent.append((time.monotonic(), threading.current_thread().name, payload))


def wire_sequences(view: CapturingRunView) -> list[int]:
    """Every sequence the front end received, merged tokens expanded."""
    out = []
    for _, _, msg in view.sent:
        for entry in msg["events"]:
            if entry["type"] == "token" and "parts" in entry:
                out += [entry["sequence"] + i for i in range(len(entry["parts"]))]
            else:
                out.append(entry["sequence"])
    return out


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="test-widget-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def publish_run(engine: Engine, run_id: str, tokens: int, *, finish: bool = True) -> None:
    ctx = engine.context(run_id, agent_name="agent")
    ctx.sync_emit_started()
    ctx.sync_emit_progress("plan", 0.5, "thinking")
    for i in range(tokens):
        ctx.sync_emit_token(f"t{i} ")
    ctx.sync_emit_step("plan", 12, ["question"], ["plan"])
    ctx.sync_emit("score", {"value": 0.9})
    if finish:
        ctx.sync_emit_complete({"answer": 42}, latency_seconds=1.25)


def check_replay_then_live(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    publish_run(engine, run_id, 20, finish=False)  # 24 stored events
    view = CapturingRunView(run_id, engine=engine)
    wait_until(lambda: len(view.events) == 24)
    for i in range(30):
        ctx.sync_emit_token(f"live{i} ")
    ctx.sync_emit_complete({"ok": True})
    assert view.wait(10) == "complete"
    wait_until(lambda: not view.following)
    seqs = [e.sequence for e in view.events]
    assert seqs == list(range(1, 56))
    assert view.statuses == ["running", "complete"]
    # the front end got the same events, each once, in order, over a chain of ranges
    assert wire_sequences(view) == seqs
    prev = 0
    for _, _, msg in view.sent:
        assert msg["kind"] == "events"
        assert msg["prev"] == prev
        prev = msg["last"]
    assert view.sent_upto == 55 == view.last_sequence
    assert view.event_count == 55
    assert view.type_counts["token"] == 50
    assert view.connection == "closed"
    view.close()


def test_memory_view_replays_then_follows_live_in_order_without_duplicates(
    engine: Engine, run_id: str
) -> None:
    check_replay_then_live(engine, run_id)


@pytest.mark.redis
def test_redis_view_replays_then_follows_live_in_order_without_duplicates(
    engine: Engine, run_id: str, redis_url: str
) -> None:
    require(
        importlib.util.find_spec("dockrion_nb.backends.redis") is not None,
        "dockrion_nb.backends.redis is not written yet",
    )
    engine.use({"backend": "redis", "redis": {"url": redis_url}})
    assert engine.bus.backend_name == "redis"
    try:
        check_replay_then_live(engine, run_id)
    finally:
        redis_cleanup(redis_url, run_id)


@pytest.mark.redis
def test_redis_view_sees_events_another_process_publishes(
    engine: Engine, run_id: str, redis_url: str
) -> None:
    """A second engine stands in for another process writing the same run through Redis."""
    require(
        importlib.util.find_spec("dockrion_nb.backends.redis") is not None,
        "dockrion_nb.backends.redis is not written yet",
    )
    other = Engine(name="other-process")
    try:
        cfg = {"backend": "redis", "redis": {"url": redis_url}}
        engine.use(cfg)
        other.use(cfg)
        view = CapturingRunView(run_id, engine=engine)
        publish_run(other, run_id, 10)
        assert view.wait(10) == "complete"
        assert [e.sequence for e in view.events] == list(range(1, 16))
        view.close()
    finally:
        other.shutdown()
        redis_cleanup(redis_url, run_id)


def test_status_starts_waiting_and_ends_in_error(engine: Engine, run_id: str) -> None:
    view = CapturingRunView(run_id, engine=engine)
    assert view.status == "waiting"
    assert view.wait(0.2) == "waiting"
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    wait_until(lambda: view.status == "running")
    ctx.sync_emit_error("boom", code="TOOL_FAILED", details={"traceback": "Traceback ..."})
    assert view.wait(10) == "error"
    ctx.sync_emit_heartbeat()  # after the terminal event: the status stays
    time.sleep(0.1)
    assert view.status == "error"
    view.close()


def test_run_status_trait_follows_the_run_managers_record(engine: Engine, run_id: str) -> None:
    from dockrion_nb import RunManager, RunStatus

    manager = RunManager(engine.bus)  # used on the engine's loop, like the bus
    engine.run(manager.create_run(run_id))
    view = CapturingRunView(run_id, engine=engine)
    wait_until(lambda: view.run_status == "accepted")
    engine.run(manager.start_run(run_id))  # the started event asks at once
    wait_until(lambda: view.run_status == "running", timeout=1.5)
    engine.run(manager.update_status(run_id, RunStatus.FAILED))  # no event: the poll finds it
    wait_until(lambda: view.run_status == "failed", timeout=widget_module.RUN_STATUS_POLL + 3)
    engine.run(manager.set_result(run_id, {"ok": True}))
    assert view.wait(10) == "complete"
    wait_until(lambda: view.run_status == "completed")
    other = CapturingRunView("no-manager-" + run_id, engine=engine, live=False)
    other.wait(10)
    assert other.run_status == ""
    view.close()
    other.close()


def test_cancelled_run_and_replay_only_view_ends_after_replay(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    ctx.sync_emit_token("a")
    replay = CapturingRunView(run_id, engine=engine, live=False)
    assert replay.wait(10) == "running"  # the replay ended; no terminal event yet
    wait_until(lambda: replay.connection == "closed")
    assert [e.type for e in replay.events] == ["started", "token"]
    ctx.sync_emit_cancelled("user stop")
    time.sleep(0.1)
    assert len(replay.events) == 2  # not following any more
    live = CapturingRunView(run_id, engine=engine, from_sequence=2)
    assert live.wait(10) == "cancelled"
    assert [e.sequence for e in live.events] == [2, 3]
    replay.close()
    live.close()


def test_close_ends_the_subscription(engine: Engine, run_id: str) -> None:
    backend = engine.bus.backend
    assert isinstance(backend, InMemoryBackend)
    view = CapturingRunView(run_id, engine=engine)
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    wait_until(lambda: len(view.events) == 1)
    assert backend.subscriber_count(run_id) == 1
    assert view.following
    view.close()
    assert not view.following
    assert backend.subscriber_count(run_id) == 0
    assert view.comm is None
    ctx.sync_emit_token("after close")
    time.sleep(0.1)
    assert len(view.events) == 1
    assert view.wait(1) == "running"  # wait() returns at once on a closed view
    view.close()  # twice is fine


def test_messages_are_batched_merged_and_sent_from_the_engine_thread(
    engine: Engine, run_id: str
) -> None:
    view = CapturingRunView(run_id, engine=engine)
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    # The view subscribes on the engine, a moment after it is made: a run that outran the
    # store's 1,000 events by then would reach it as a gap (seen once emitting got faster).
    wait_until(lambda: len(view.events) == 1)
    t0 = time.monotonic()
    for i in range(3000):
        ctx.sync_emit_token(str(i % 10))
        if i % 500 == 0:
            ctx.sync_emit_heartbeat()
    ctx.sync_emit_complete()
    assert view.wait(10) == "complete"
    wait_until(lambda: not view.following)
    span = time.monotonic() - t0
    msgs = len(view.sent)
    assert msgs < 3000 / 10  # batched, not one message per event
    # at most about 20 custom messages a second (each costs one slot, plus the state sync)
    assert msgs <= span * 20 + 3
    merged = [e for _, _, m in view.sent for e in m["events"] if "parts" in e]
    assert merged and max(len(e["parts"]) for e in merged) > 1
    text = "".join(p for e in merged for p in e["parts"])
    assert text == "".join(str(i % 10) for i in range(3000))
    assert {thread for _, thread, _ in view.sent} == {"test-widget-engine"}
    assert set(view.trait_threads) == {"test-widget-engine"}
    view.close()


def test_front_end_replay_request_is_answered_in_chunks(
    engine: Engine, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widget_module, "REPLAY_CHUNK", 10)
    publish_run(engine, run_id, 20)  # 25 events
    view = CapturingRunView(run_id, engine=engine)
    assert view.wait(10) == "complete"
    wait_until(lambda: not view.following)
    view.sent.clear()
    # what a reloaded page does: ask for everything after 0, then after each answer's last
    after, answers = 0, []
    while True:
        view._on_front_end_msg(view, {"kind": "replay", "after": after}, [])
        count = len(answers)
        wait_until(lambda: len(view.sent) > count)  # noqa: B023
        msg = view.sent[-1][2]
        answers.append(msg)
        assert msg["kind"] == "replay" and msg["after"] == after
        after = msg["last"]
        if not msg["more"]:
            break
    assert len(answers) == 3
    assert wire_sequences(view) == list(range(1, 26))
    view._on_front_end_msg(view, {"kind": "replay", "after": "bad"}, [])  # ignored
    view._on_front_end_msg(view, ["junk"], [])
    time.sleep(0.1)
    assert len(view.sent) == 3
    view.close()


def test_types_filter_keeps_lifecycle_events(engine: Engine, run_id: str) -> None:
    publish_run(engine, run_id, 5)
    view = CapturingRunView(run_id, engine=engine, types=["token"])
    assert view.wait(10) == "complete"
    assert [e.type for e in view.events] == ["started"] + ["token"] * 5 + ["complete"]
    assert view.types == ["token"]
    chat = CapturingRunView(run_id, engine=engine, types="minimal")
    assert chat.wait(10) == "complete"
    assert [e.type for e in chat.events] == ["started", "complete"]
    view.close()
    chat.close()


def test_max_events_keeps_the_newest(engine: Engine, run_id: str) -> None:
    publish_run(engine, run_id, 300)
    view = CapturingRunView(run_id, engine=engine, max_events=50)
    assert view.wait(10) == "complete"
    events = view.events
    assert len(events) <= 50 + 64
    assert events[-1].type == "complete"
    assert [e.sequence for e in events] == list(range(events[0].sequence, 306))
    assert view.event_count == 305  # the count covers every event seen
    view.close()


def test_gap_is_kept_where_events_were_trimmed(run_id: str) -> None:
    eng = Engine(name="gap-engine")
    try:
        eng.use({"backend": "memory", "max_events_per_run": 10})
        publish_run(eng, run_id, 20)
        view = CapturingRunView(run_id, engine=eng)
        assert view.wait(10) == "complete"
        assert view.events[0].type == "gap"
        assert view.events[0].from_sequence == 1  # type: ignore[attr-defined]
        assert view.events[1].sequence == 16
        wait_until(lambda: not view.following)
        assert view.sent[0][2]["events"][0]["type"] == "gap"
        view.close()
    finally:
        eng.shutdown()


def test_backend_switch_closes_the_view_with_a_note(engine: Engine, run_id: str) -> None:
    view = CapturingRunView(run_id, engine=engine)
    engine.context(run_id).sync_emit_started()
    wait_until(lambda: view.status == "running")
    engine.use(InMemoryBackend())
    wait_until(lambda: "backend switched to memory" in view.note)
    assert view.connection == "closed"
    assert not view.following
    view.close()


def test_static_fallback_summarises_and_escapes(engine: Engine, run_id: str) -> None:
    ctx = engine.context(run_id)
    ctx.sync_emit_started()
    ctx.sync_emit_token("<script>alert(1)</script>")
    ctx.sync_emit("x<b>", {"html": "<img src=x onerror=alert(1)>"})
    ctx.sync_emit_error("<b>bad</b>", code="E<1>")
    view = CapturingRunView(run_id, engine=engine)
    assert view.wait(10) == "error"
    data, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    page = data["text/html"]
    assert "<script>" not in page and "<img" not in page and "<b>bad" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "E&lt;1&gt;: &lt;b&gt;bad&lt;/b&gt;" in page
    assert f"RunView({run_id}) error, 4 events" in data["text/plain"]
    view.close()
    data, _ = view._repr_mimebundle_()  # after close: the static summary only
    assert set(data) == {"text/plain", "text/html"}


def test_a_finished_view_keeps_a_snapshot_and_a_final_static_view(
    engine: Engine, run_id: str
) -> None:
    publish_run(engine, run_id, 5)
    view = CapturingRunView(run_id, engine=engine)
    assert view.wait(10) == "complete"
    wait_until(lambda: not view.following)
    snap = view.snapshot
    assert snap is not None and snap["total"] == 10 and snap["note"] == "saved view: 10 events"
    assert [e["type"] for e in snap["events"]][:2] == ["started", "progress"]
    assert snap["events"][2]["parts"] == [f"t{i} " for i in range(5)]  # tokens merged
    page = view._repr_mimebundle_()[0]["text/html"]
    assert "t0 t1 t2 t3 t4" in page  # the output, not only a count
    assert "latency 1.25 s" in page and '<td style="text-align:left">plan</td>' in page
    view.close()


def test_to_dataframe(engine: Engine, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    publish_run(engine, run_id, 3)
    view = CapturingRunView(run_id, engine=engine)
    assert view.wait(10) == "complete"
    frame = view.to_dataframe()
    assert list(frame.columns[:5]) == ["sequence", "type", "timestamp", "elapsed_s", "summary"]
    assert list(frame["sequence"]) == list(range(1, 9))
    assert frame.loc[frame["type"] == "step", "node_name"].item() == "plan"
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        view.to_dataframe()
    view.close()


def test_bad_arguments_are_clear_errors(engine: Engine) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        RunView("bad id!", engine=engine)
    with pytest.raises(ValueError, match="max_events"):
        RunView("ok", engine=engine, max_events=0)
    with pytest.raises(ValueError, match="Unknown event type"):
        RunView("ok", engine=engine, types=["nope"])


def test_encode_events_merges_only_consecutive_tokens() -> None:
    def tok(seq: int, text: str, finish: str | None = None) -> Any:
        return make_event("token", "r", sequence=seq, content=text, finish_reason=finish)

    events = [
        tok(1, "a"),
        tok(2, "b"),
        make_event("step", "r", sequence=3, node_name="n"),
        tok(4, "c"),
        tok(6, "d", "stop"),
    ]
    wire = encode_events(events)
    assert [w["type"] for w in wire] == ["token", "step", "token", "token"]
    assert wire[0]["parts"] == ["a", "b"] and wire[0]["sequence"] == 1
    assert wire[3]["parts"] == ["d"] and wire[3]["finish_reason"] == "stop"
    assert "run_id" not in wire[1]


def test_asset_files_exist() -> None:
    assert widget_module.ESM_PATH.is_file() and widget_module.CSS_PATH.is_file()
    assert "export default" in str(RunView._esm)
    assert ".drnb-root" in str(RunView._css)


@pytest.mark.redis
def test_redis_view_shows_reconnecting_and_resumes_after_a_restart(
    engine: Engine, run_id: str
) -> None:
    require(
        importlib.util.find_spec("dockrion_nb.backends.redis") is not None,
        "dockrion_nb.backends.redis is not written yet",
    )
    server = PrivateServer(persist=True)
    server.start()
    try:
        engine.use({"backend": "redis", "redis": {"url": server.url}})
        ctx = engine.context(run_id)
        ctx.sync_emit_started()
        view = CapturingRunView(run_id, engine=engine)
        wait_until(lambda: view.connection == "live" and len(view.events) == 1)
        server.stop()
        wait_until(lambda: view.connection == "reconnecting", timeout=20)
        server.start()
        wait_until(lambda: view.connection == "live", timeout=30)
        ctx.sync_emit_token("after restart")
        ctx.sync_emit_complete()
        assert view.wait(20) == "complete"
        assert [e.sequence for e in view.events] == [1, 2, 3]
        assert view.connections[:3] == ["live", "reconnecting", "live"]
        view.close()
    finally:
        server.close()


@pytest.mark.parametrize("how", ["sync", "async", "failing", "published"])
def test_a_traced_run_ends_once_its_live_views_show_the_end(
    engine: Engine, run_id: str, how: str
) -> None:
    """When a traced run (a ``%%publish`` cell) ends, its live views in this process have
    shown the end and sent their last state: a notebook saved per running cell (nbclient)
    keeps the final view, and the user sees the status the cell ended with."""
    from dockrion_nb.tracing import Trace

    view = CapturingRunView(run_id, engine=engine)
    other = CapturingRunView(f"{run_id}-other", engine=engine)  # another run: not waited for
    if how == "async":

        async def body() -> None:
            async with Trace(run_id, engine=engine) as ctx:
                for i in range(50):
                    await ctx.emit_token(f"{i} ")

        asyncio.run(body())
    elif how == "published":  # %%publish --events-body, %publish RUN complete
        from dockrion_nb import api

        rows = [{"type": "started"}, *({"type": "token", "content": f"{i} "} for i in range(50))]
        api.publish_many(run_id, rows, engine=engine)
        api.publish(run_id, "complete", engine=engine)
    else:
        with contextlib.suppress(RuntimeError), Trace(run_id, engine=engine) as ctx:
            for i in range(50):
                ctx.sync_emit_token(f"{i} ")
            if how == "failing":
                raise RuntimeError("the agent gave up")
    # no wait(): the trace's end waited for the view
    assert not view.following
    assert view.status == ("error" if how == "failing" else "complete")
    assert view.connection == "closed" and view.snapshot
    assert view.sent_upto == view.last_sequence == 52
    assert other.following
    view.close()
    other.close()


def test_no_trait_message_or_saved_output_of_a_view_shows_the_redis_password(
    engine: Engine, run_id: str
) -> None:
    """The view's notes (a lost server, a failed status read) quote errors that name the
    server: every trait value it ever takes, every message and the static output it saves
    show the URL masked."""
    secret = "view-pw-s3cr3t"
    server = PrivateServer(password=secret)
    server.start()
    try:
        engine.use({"backend": "redis", "redis": {"url": server.url}})
        ctx = engine.context(run_id)
        ctx.sync_emit_started()
        view = CapturingRunView(run_id, engine=engine)
        seen: list[str] = []
        view.observe(lambda change: seen.append(repr(change["new"])))
        wait_until(lambda: view.connection == "live" and len(view.events) == 1)
        server.stop()
        wait_until(lambda: view.connection == "reconnecting" and bool(view.note), timeout=20)
        assert "127.0.0.1" in view.note  # the note names the server...
        view.refresh_static()
        saved = repr(view._repr_mimebundle_())
        texts = [*seen, repr(view.get_state()), saved, *(repr(p) for _, _, p in view.sent)]
        assert all(secret not in text for text in texts)  # ...never its password
        view.close()
    finally:
        server.close()


def test_an_event_the_view_cannot_send_is_noted_and_the_view_keeps_following(
    engine: Engine,
) -> None:
    """An event no publish check saw (written straight into Dockrion's own backend) that the
    view cannot encode: the view says so in its note and still reaches ``complete``."""
    from dockrion_events import InMemoryBackend as DockrionMemory

    backend = DockrionMemory()
    engine.use(backend)
    run_id = "foreign-bad"
    rows: list[dict[str, Any]] = [
        {"type": "started", "sequence": 1},
        {"type": "checkpoint", "sequence": 2, "name": "n", "data": {"o": object()}},
        {"type": "token", "sequence": 3, "content": "still here"},
        {"type": "complete", "sequence": 4},
    ]
    for row in rows:
        engine.run(backend.store_event(run_id, {"run_id": run_id, **row}))
    view = CapturingRunView(run_id, engine=engine)
    try:
        assert view.wait(timeout=10) == "complete"
        wait_until(lambda: 4 in wire_sequences(view))
        assert wire_sequences(view) == [1, 3, 4]
        assert "event #2 (checkpoint) could not be shown" in view.note
        assert "object" in view.note
    finally:
        view.close()


@pytest.mark.parametrize("when", ["stored", "live"])
def test_text_the_comm_cannot_pack_is_noted_and_the_view_keeps_following(
    engine: Engine, when: str
) -> None:
    """A lone surrogate (which ``json.dumps`` escapes but the kernel's packer cannot encode as
    UTF-8) in a foreign checkpoint and a foreign token, read from the store or live: both are
    left out with a note, and every other event still reaches the front end."""
    from dockrion_events import InMemoryBackend as DockrionMemory

    backend = DockrionMemory()
    engine.use(backend)
    run_id = f"foreign-surrogate-{when}"
    rows: list[dict[str, Any]] = [
        {"type": "started", "sequence": 1},
        {"type": "checkpoint", "sequence": 2, "name": "n", "data": {"o": "a\ud800b"}},
        {"type": "token", "sequence": 3, "content": "ok "},
        {"type": "token", "sequence": 4, "content": "bad \udfff"},
        {"type": "token", "sequence": 5, "content": "fine"},
        {"type": "complete", "sequence": 6},
    ]

    def write(row: dict[str, Any]) -> None:
        event = {"run_id": run_id, **row}
        engine.run(backend.store_event(run_id, event))
        if when == "live":
            engine.run(backend.publish(f"run:{run_id}", event))

    if when == "stored":
        for row in rows:
            write(row)
    view = CapturingRunView(run_id, engine=engine)
    try:
        if when == "live":
            write(rows[0])
            wait_until(lambda: view.status == "running")
            for row in rows[1:]:
                write(row)
        assert view.wait(timeout=10) == "complete"
        wait_until(lambda: 6 in wire_sequences(view))
        assert wire_sequences(view) == [1, 3, 5, 6]
        assert "event #2 (checkpoint) could not be shown (and 1 more)" in view.note
        assert "surrogate" in view.note
    finally:
        view.close()


def test_an_entry_the_checks_miss_is_dropped_from_its_batch_with_a_note(
    engine: Engine, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the comm refuse a batch that ``encode_events`` passed, the batch goes again
    without the entries it cannot pack: the view notes it and follows on."""
    from dockrion_events import InMemoryBackend as DockrionMemory

    monkeypatch.setattr(widget_module, "_is_utf8_text", lambda text: True)  # a check that misses
    backend = DockrionMemory()
    engine.use(backend)
    for row in (
        {"type": "started", "sequence": 1},
        {"type": "step", "sequence": 2, "node_name": "n", "duration_ms": 1},
        {"type": "token", "sequence": 3, "content": "bad \ud800"},
        {"type": "complete", "sequence": 4},
    ):
        engine.run(backend.store_event(run_id, {"run_id": run_id, **row}))
    view = CapturingRunView(run_id, engine=engine)
    try:
        assert view.wait(timeout=10) == "complete"
        wait_until(lambda: 4 in wire_sequences(view))
        assert wire_sequences(view) == [1, 2, 4]
        assert "event #3 could not be shown: UnicodeEncodeError" in view.note
    finally:
        view.close()


def test_a_replay_that_ends_where_the_reader_paused_still_goes_live(
    engine: Engine, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader pauses at every PUMP_HIGH_WATER events read ahead; when the stored events end
    # exactly there, the view must still notice it has caught up (and say "live").
    monkeypatch.setattr(widget_module, "PUMP_HIGH_WATER", 200)
    monkeypatch.setattr(widget_module, "MAX_BATCH", 100)
    monkeypatch.setattr(widget_module, "REPLAY_BATCH", 1000)
    publish_run(engine, run_id, 396, finish=False)  # 400 stored events, two read-aheads
    view = CapturingRunView(run_id, engine=engine)
    wait_until(lambda: len(view.events) == 400 and view.connection == "live")
    ctx = engine.context(run_id)
    ctx.sync_emit_complete({"ok": True})
    assert view.wait(10) == "complete"
    wait_until(lambda: not view.following)
    assert wire_sequences(view) == list(range(1, 402))
    view.close()
