"""Tables, frames and summaries agree: ``replay(as_="df")`` and ``RunView.to_dataframe()`` have
the same columns; tables count time from the run's start, left-align text and mark cut text
with "…"; CLI lines fit the terminal; ``%%publish`` tracebacks hide the package's frames; the
Python API names its parameters; every magic reads quotes alike."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError

import dockrion_nb.api
from dockrion_nb import api
from dockrion_nb.engine import get_engine, reset_engine
from dockrion_nb.events import make_event, summarize
from dockrion_nb.tables import EventTable, text_table
from dockrion_nb.terminal import TracePrinter
from dockrion_nb.widget import RunView


@pytest.fixture
def fresh() -> Iterator[None]:
    reset_engine()
    yield
    reset_engine()


def publish_run(run_id: str) -> None:
    import time

    ctx = get_engine().context(run_id, agent_name="bot")
    ctx.sync_emit_started()
    time.sleep(0.05)
    for i in range(5):
        ctx.sync_emit_token(f"w{i} ")
    ctx.sync_emit("note", {"text": "x" * 300})
    ctx.sync_emit_complete({"ok": True})


def test_replay_frame_and_view_frame_have_the_same_columns(fresh: None, run_id: str) -> None:
    publish_run(run_id)
    replayed = api.replay(run_id, as_="df")
    view = RunView(run_id, live=False)
    assert view.wait(10) == "complete"
    framed = view.to_dataframe()
    view.close()
    assert list(replayed.columns) == list(framed.columns)
    assert list(replayed.columns[:5]) == ["sequence", "type", "timestamp", "elapsed_s", "summary"]
    assert replayed["elapsed_s"].iloc[0] == 0.0 and replayed["elapsed_s"].iloc[1] >= 0.05
    assert list(replayed["summary"]) == list(framed["summary"])


def test_a_tail_counts_time_from_the_run_start(fresh: None, run_id: str) -> None:
    publish_run(run_id)
    tail = api.replay(run_id, last=2, as_="table")
    times = [row[1] for row in tail.rows()]
    assert all(float(t.strip("+s")) >= 0.05 for t in times)  # not +0.00s for the first shown
    frame = api.replay(run_id, last=2, as_="df")
    assert frame["elapsed_s"].iloc[0] >= 0.05


def test_tables_left_align_and_mark_cut_text(fresh: None, run_id: str) -> None:
    publish_run(run_id)
    table = api.replay(run_id, as_="table")
    page = table._repr_html_()
    assert '<td style="text-align:left">' in page and '<th style="text-align:left">' in page
    note = next(e for e in table if e.type == "custom:note")
    assert summarize(note).endswith("…") and len(summarize(note)) == 100
    text = text_table(("a", "summary"), [("1", "x" * 80)], width=40)
    assert max(len(line) for line in text.splitlines()) <= 40
    assert text.splitlines()[1].endswith("…")


def test_cli_lines_fit_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    printer = TracePrinter(out, width=50)
    printer.feed(make_event("custom:note", "r1", sequence=1, text="y" * 200))
    printer.close()
    line = out.getvalue().splitlines()[0]
    assert len(line) == 50 and line.endswith("…")
    monkeypatch.setenv("COLUMNS", "72")
    assert TracePrinter(io.StringIO()).width == 72
    wide = EventTable([make_event("custom:note", "r1", sequence=1, text="z" * 300)])
    assert max(len(line) for line in repr(wide).splitlines()) <= 72


def test_step_start_and_usage_events_have_readable_summaries() -> None:
    start = make_event("custom:step_start", "r", node_name="search", kind="tool", step_id="s1")
    usage = make_event("custom:llm_usage", "r", model="gpt-x", input_tokens=12, output_tokens=40)
    assert summarize(start) == "search started (tool)"
    assert summarize(usage) == "gpt-x: 12 in, 40 out"
    unknown = make_event("custom:llm_usage", "r", model="fake", input_tokens=None)
    assert summarize(unknown) == "fake: usage not reported"  # not "None in, None out"


def test_python_api_errors_name_parameters(fresh: None, run_id: str) -> None:
    with pytest.raises(ValueError, match=r"^from_sequence must be 1 or more, not 0$"):
        api.watch(run_id, from_sequence=0, display=False)
    publish_run(run_id)
    with pytest.raises(ValueError, match=r"^last must be 1 or more, not 0$"):
        api.replay(run_id, last=0, as_="table")
    with pytest.raises(ValueError, match=r"^from_sequence must be 1 or more, not -1$"):
        api.replay(run_id, from_sequence=-1, as_="table")


@pytest.fixture
def ip(ipython: Any) -> Any:
    """The session's shell with the extension loaded."""
    if "dockrion_nb" not in ipython.extension_manager.loaded:
        ipython.run_line_magic("load_ext", "dockrion_nb")
    return ipython


def test_every_magic_reads_quotes_alike(
    ip: Any, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(dockrion_nb.api, "_display", shown.append)
    messages = []
    for _name, call in (
        ("watch", lambda: ip.run_line_magic("watch", "'a b'")),
        ("publish", lambda: ip.run_cell_magic("publish", "'a b'", "1")),
        ("replay", lambda: ip.run_line_magic("replay", "'a b'")),
    ):
        with pytest.raises(UsageError) as err:
            call()
        messages.append(str(err.value))
    assert len(set(messages)) == 1 and messages[0].startswith("invalid run id 'a b'")
    ip.run_line_magic("watch", "'quoted-run'")
    assert shown[-1].run_id == "quoted-run"
    shown[-1].close()


def test_a_failing_publish_cell_shows_its_own_frames_only(
    ip: Any, fresh: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell("%%publish tb-run\ndef inner():\n    raise ValueError('boom')\ninner()\n")
    shown = capsys.readouterr().out
    assert "ValueError: boom" in shown and "inner()" in shown
    assert "dockrion_nb" not in shown and "magics.py" not in shown
