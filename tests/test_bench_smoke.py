"""The bench's code paths with tiny sizes, so ``python -m bench`` never rots.

Nothing here checks speed (figures from tiny runs mean nothing); it checks that every row is
produced against real servers with the table's structure, and the behaviour the rows report:
our subscribers receive every event, Dockrion's two processes collide on sequences.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench import runner
from bench.progress import Progress
from bench.report import COLUMNS, HEADER
from bench.runner import TINY, Outcome, main, parse_groups, run_bench, widget_rows

pytestmark = [
    pytest.mark.redis,
    pytest.mark.timeout(120),
    # Dockrion 0.0.3 calls redis-py's deprecated close(); not ours to fix.
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

MEMORY_KEYS = {"1a", "1b", "1c", "1d", "1e", "1f", "3a", "3b", "4a", "4b", "5a"}
REDIS_KEYS = {"2a", "2b", "2c", "2d", "2e", "2f", "2g", "3c", "3d", "4c", "4d", "5b", "6a", "6b"}
STRICT_KEYS = {"1d", "1e", "1f", "2e", "2f", "2g"}  # events built in the loop, logging off
BEYOND_KEYS = {"8a", "8b", "8c", "8d", "8e", "8f", "8g"}  # own node, cluster, Sentinel
E2E_KEYS = {"9a", "9b", "9c", "9d"}  # StreamContext.emit_token -> a subscriber's hand
FOOTPRINT_KEYS = {"10a", "10b", "10c", "10d"}  # bytes per stored event


def test_tiny_bench_produces_every_row_with_the_table_structure(redis_url: str) -> None:
    stream = io.StringIO()
    outcome = run_bench(
        TINY, redis_url=redis_url, widget=False, profiles=True, progress=Progress(40, stream)
    )
    rows = {row.key: row for row in outcome.rows}
    assert set(rows) == MEMORY_KEYS | REDIS_KEYS | BEYOND_KEYS | E2E_KEYS | FOOTPRINT_KEYS

    for key in MEMORY_KEYS:
        assert rows[key].ours is not None and rows[key].dockrion is not None, key
        assert rows[key].ratio is not None and rows[key].ratio > 0, key
    for key in ("1b", "1c", "1e", "1f", "5a"):
        assert rows[key].ours_delivered == 1.0, key
    for key in STRICT_KEYS:  # each row says which conditions it was measured under
        assert "strict" in rows[key].name and rows[key].profile is not None, key
    for key in ("1a", "1b", "1c", "2a", "2b", "2c"):
        assert "kind" in rows[key].name, key
    for key in REDIS_KEYS - {"2d"}:
        assert rows[key].dockrion is not None, key
    for key in ("2a", "2b", "2c", "2d", "3c", "3d", "4c", "4d", "5b", "6a"):
        assert rows[key].ceiling is not None and rows[key].ceiling > 0, key
    # Dockrion numbers events per process: every sequence of one process repeats in the other.
    assert rows["6b"].dockrion == TINY.procs_n
    if rows["6b"].ours is not None:
        assert rows["6b"].ours == 0
        assert rows["2b"].ours_delivered == 1.0
        assert rows["2f"].ours_delivered == 1.0
    else:
        assert rows["6b"].reason

    # end to end: every event emitted in the loop or from a thread reaches our subscriber
    for key in ("9a", "9b"):
        assert rows[key].ours_delivered == 1.0, key
        assert rows[key].dockrion is not None, key
    for key in ("9c", "9d"):
        assert rows[key].ours is not None and rows[key].ours > 0, key
    for key in FOOTPRINT_KEYS:  # bytes per stored event, both sides, from fresh processes
        assert rows[key].ours is not None and rows[key].ours > 0, key
        assert rows[key].dockrion is not None and rows[key].dockrion > 0, key

    # beyond one node: one node beside a cluster, and master kills that lose nothing
    for key in ("8a", "8b", "8c", "8d"):
        assert rows[key].ours is not None and rows[key].ours > 0, key
        assert rows[key].ours_delivered == 1.0, key
    for key in ("8e", "8f"):
        assert rows[key].ours is not None and rows[key].ours > 0, key
    assert rows["8g"].ours == 0 and rows["8g"].met is True

    lines = outcome.markdown.splitlines()
    start = lines.index(HEADER)
    body = lines[start + 2 : start + 2 + len(rows)]
    assert lines[start + 1] == "|" + "---|" * COLUMNS
    assert all(line.count(" | ") == COLUMNS - 1 for line in body), body
    for field in ("CPU", "cores", "Python", "redis-py", "server", "load average"):
        assert any(line.startswith(f"| {field}") for line in lines), field
    assert "Redis" in outcome.machine["server"] or "Valkey" in outcome.machine["server"]
    assert "\r" not in outcome.markdown
    assert stream.getvalue()  # the progress bar was drawn
    for key, text in outcome.profiles.items():
        assert rows[key].met is False
        if key in FOOTPRINT_KEYS:  # memory: the lines that allocated what is held
            assert "B/event" in text
        else:
            assert "ncalls" in text


def test_the_widget_rows_carry_the_issues_targets() -> None:
    drawn = runner.widget_target("replay_100k_render_s", "s")
    assert drawn is not None and drawn.max_value == 1.0  # 100,000 stored events in <= 1 s
    ten = runner.widget_target("replay_10k_render_s", "s")
    assert ten is not None and ten.max_value == 1.5
    assert runner.widget_target("replay_100k_kernel_only_s", "s") is None  # a share, no target
    assert runner.WIDGET_NAMES["replay_100k_kernel_only_s"].startswith("widget: 100,000")


def test_widget_row_says_why_when_not_measured() -> None:
    rows = widget_rows(quick=True, timeout=0.001)
    assert rows and all(r.key.startswith("7") for r in rows)
    for row in rows:
        if row.ours is None:
            assert row.reason


def test_only_measures_the_chosen_row_groups(redis_url: str) -> None:
    outcome = run_bench(
        TINY,
        redis_url=redis_url,
        widget=True,  # group 7 is not chosen: no browser is started
        profiles=False,
        progress=Progress(10, io.StringIO()),
        only=frozenset({3, 4}),
    )
    assert {row.key for row in outcome.rows} == {"3a", "3b", "3c", "3d", "4a", "4b", "4c", "4d"}
    assert "python -m bench" in outcome.markdown


@pytest.mark.parametrize("text", ["11", "0", "a,b", "", "3,,11"])
def test_only_rejects_what_is_not_a_row_group(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--only", text, "--no-widget"])
    assert info.value.code == 2
    assert "--only takes row groups 1-10" in capsys.readouterr().err


def test_quick_run_prints_and_never_overwrites_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("committed figures\n")
    monkeypatch.setattr(runner, "RESULTS", results)
    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: Outcome([], {}, {}, "quick md\n", 1.0))
    assert main(["--quick", "--no-widget", "--no-redis"]) == 0
    assert results.read_text() == "committed figures\n"
    assert "not written: --quick" in capsys.readouterr().err
    kept = tmp_path / "quick.md"
    assert main(["--quick", "--no-widget", "--no-redis", "--output", str(kept)]) == 0
    assert kept.read_text() == "quick md\n"
    assert results.read_text() == "committed figures\n"


def test_parse_groups_reads_comma_lists() -> None:
    assert parse_groups("3,4") == frozenset({3, 4})
    assert parse_groups("9,10") == frozenset({9, 10})
    assert parse_groups(" 7 ") == frozenset({7})


def test_the_otel_bench_measures_spans_in_and_out(redis_url: str) -> None:
    from bench import otel_bench

    figures = otel_bench.run(n=20, repeats=1, redis_url=redis_url)
    assert set(figures) == {
        "bare_us_per_span",
        "memory_us_per_span",
        "redis_us_per_span",
        "export_spans_per_s",
    }
    assert all(value > 0 for value in figures.values())


def test_langchain_overhead_measures_every_call_with_and_without_a_handler(
    redis_url: str,
) -> None:
    from bench.langchain_overhead import measure

    results = measure(tokens=20, steps=3, redis_url=redis_url)
    assert set(results) == {"none", "memory", "redis"}
    for row in results.values():
        assert set(row) == {"stream_us_per_token", "astream_us_per_token", "graph_us_per_node"}
        assert all(value > 0 for value in row.values())


def test_llm_clients_bench_measures_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import llm_clients

    assert llm_clients.main(["--tokens", "5", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 tokens per stream, median of 1, backend memory")
    for case in ("openai sync chat stream", "openai async chat stream", "anthropic sync"):
        line = next(line for line in out.splitlines() if case in line)
        assert "per_token_us" in line and "first_token_traced_ms" in line
