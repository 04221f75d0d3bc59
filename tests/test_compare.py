"""Comparing runs on the Python side: ``CompareView``, ``compare()`` and ``%compare``."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError

import dockrion_nb
import dockrion_nb.api
from dockrion_nb.comparison import MAX_RUNS, CompareView
from dockrion_nb.engine import Engine, get_engine, reset_engine
from dockrion_nb.widget import MSG_INTERVAL


class CapturingCompareView(CompareView):  # type: ignore[misc]
    """Records every custom message (time, payload) instead of sending it to no one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.sent_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _emit(self, payload: dict[str, Any]) -> None:
        with self.sent_lock:
            self.sent.append((time.monotonic(), payload))


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="test-compare-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def publish(engine: Engine, run_id: str, words: list[str], *, fail: bool = False) -> None:
    ctx = engine.context(run_id, agent_name="bot")
    ctx.sync_emit_started()
    ctx.sync_emit_step("plan", 30, ["q"], ["plan"])
    for w in words:
        ctx.sync_emit_token(w)
    if fail:
        ctx.sync_emit_error("model refused", code="REFUSED")
    else:
        ctx.sync_emit_complete({"n": len(words)}, latency_seconds=0.5)


def test_stored_runs_compare_side_by_side(engine: Engine, run_id: str) -> None:
    a, b = f"{run_id}-a", f"{run_id}-b"
    publish(engine, a, ["The ", "cat ", "sat."])
    publish(engine, b, ["The ", "dog ", "sat."], fail=True)
    view = CapturingCompareView([a, b], engine=engine)
    assert view.wait(10) == ["complete", "error"]
    metrics = view.metrics()
    assert metrics[a].status == "complete" and metrics[a].latency_s == 0.5
    assert metrics[b].errors == ["REFUSED: model refused"]
    assert metrics[a].tokens == metrics[b].tokens == 3
    assert metrics[a].output == "The cat sat." and metrics[a].steps == 1

    # each run's events reach the front end, tagged with its index, each once
    def received() -> dict[int, list[int]]:
        seqs: dict[int, list[int]] = {0: [], 1: []}
        with view.sent_lock:
            for _, msg in view.sent:
                assert msg["kind"] == "compare"
                for part in msg["parts"]:
                    for entry in part["msg"]["events"]:
                        n = len(entry.get("parts", [None]))
                        seqs[part["run"]] += [entry["sequence"] + i for i in range(n)]
        return seqs

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(map(len, received().values())) < 12:
        time.sleep(0.02)
    seqs = received()
    assert seqs == {0: list(range(1, 7)), 1: list(range(1, 7))}
    assert [r["status"] for r in view.runs] == ["complete", "error"]
    assert [r["sent_upto"] for r in view.runs] == [6, 6]
    # the static view: the table, both outputs and their diff, escaped
    data, _ = view._repr_mimebundle_()
    page = data["text/html"]
    assert "Comparing 2 runs" in page and "REFUSED: model refused" in page
    assert "-The cat sat." in page and "+The dog sat." in page
    assert "latency" in data["text/plain"] and a in data["text/plain"]
    view.close()


def test_a_live_run_is_compared_as_it_streams(engine: Engine, run_id: str) -> None:
    a, b = f"{run_id}-a", f"{run_id}-b"
    publish(engine, a, ["done"])
    view = CapturingCompareView([a, b], engine=engine)
    ctx = engine.context(b)
    ctx.sync_emit_started()
    ctx.sync_emit_token("still ")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(view.events(b)) < 2:
        time.sleep(0.02)
    assert view.metrics()[b].status == "running"
    ctx.sync_emit_token("going")
    ctx.sync_emit_complete()
    assert view.wait(10) == ["complete", "complete"]
    assert view.metrics()[b].output == "still going"
    view.close()


def test_many_busy_runs_share_one_message_budget(engine: Engine, run_id: str) -> None:
    ids = [f"{run_id}-{i}" for i in range(4)]
    view = CapturingCompareView(ids, engine=engine)

    def writer(rid: str) -> None:
        ctx = engine.context(rid)
        ctx.sync_emit_started()
        for i in range(400):
            ctx.sync_emit_token(f"t{i} ")
            if i % 40 == 0:
                time.sleep(0.02)
        ctx.sync_emit_complete()

    threads = [threading.Thread(target=writer, args=(rid,)) for rid in ids]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert view.wait(20) == ["complete"] * 4
    time.sleep(0.3)
    with view.sent_lock:
        times = [at for at, _ in view.sent]
    # one comparison's budget, not one per run: at least MSG_INTERVAL between messages
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= MSG_INTERVAL * 0.9
    assert all(len(view.events(rid)) == 402 for rid in ids)
    view.close()


def test_compare_arguments_are_checked(engine: Engine, run_id: str) -> None:
    with pytest.raises(ValueError, match="run_ids: compare needs two runs or more, got 1"):
        CompareView([run_id], engine=engine)
    with pytest.raises(ValueError, match=f"at most {MAX_RUNS} runs"):
        CompareView([f"r{i}" for i in range(MAX_RUNS + 1)], engine=engine)
    with pytest.raises(ValueError, match="each run once, r1 is repeated"):
        CompareView(["r1", "r1"], engine=engine)
    with pytest.raises(ValueError, match="run id"):
        CompareView(["ok", "not ok"], engine=engine)


# -- the doors: compare() and %compare ----------------------------------------------------------


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr(dockrion_nb.api, "_display", seen.append)
    return seen


def test_compare_function_and_magic_show_the_same_view(
    shown: list[Any], run_id: str, ipython: Any
) -> None:
    reset_engine()
    try:
        a, b = f"{run_id}-a", f"{run_id}-b"
        publish(get_engine(), a, ["x"])
        publish(get_engine(), b, ["y"])
        view = dockrion_nb.compare(a, b, live=False)
        assert shown == [view] and list(view.run_ids) == [a, b]
        assert view.wait(10) == ["complete", "complete"]
        listed = dockrion_nb.compare([a, b], display=False)
        assert list(listed.run_ids) == [a, b] and len(shown) == 1
        ip = ipython
        if "dockrion_nb" not in ip.extension_manager.loaded:
            ip.run_line_magic("load_ext", "dockrion_nb")
        ip.run_line_magic("compare", f"{a} {b} --no-live")
        assert len(shown) == 2 and list(shown[1].run_ids) == [a, b]
        assert shown[1].wait(10) == ["complete", "complete"]
        with pytest.raises(UsageError, match="two runs or more"):
            ip.run_line_magic("compare", a)
        for v in (view, listed, shown[1]):
            v.close()
    finally:
        reset_engine()
