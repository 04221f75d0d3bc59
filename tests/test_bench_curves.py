"""The scale curves' code path with tiny sizes, so ``python -m bench.curves`` never rots.

Nothing here checks speed; it checks that every size of both axes is measured for both sides
(memory and Redis), that the table shows each, and that the plot is a PNG.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.curves import RESULTS_SECTION, TABLE_HEADER, TINY, main, run_curves
from bench.sides import DOCKRION, OURS

pytestmark = [
    pytest.mark.redis,
    pytest.mark.timeout(120),
    # Dockrion 0.0.3 calls redis-py's deprecated close(); not ours to fix.
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tiny_curves_measure_every_size_for_both_sides(redis_url: str, tmp_path: Path) -> None:
    result = run_curves(TINY, tmp_path, redis_url, "python -m bench.curves", log=lambda _: None)

    expected = (
        {("events", n, "memory") for n in TINY.events}
        | {("runs", r, "memory") for r in TINY.runs}
        | {("events", n, "redis") for n in TINY.events}
        | {("runs", r, "redis") for r in TINY.runs}
    )
    for impl in (OURS, DOCKRION):
        got = {(p.axis, p.size, p.kind) for p in result.points if p.impl == impl}
        assert got == expected, impl
    for p in result.points:
        assert p.publish_us > 0 and p.replay_whole_ms > 0, p
        # every run is longer than the tail only on the events axis of these sizes
        assert (p.replay_tail_ms is not None) == (p.axis == "events"), p
        assert (p.bytes_per_event is not None) == (p.kind == "memory"), p
        if p.bytes_per_event is not None:
            assert p.bytes_per_event > 0, p

    text = result.table_path.read_text()
    assert text == result.markdown
    lines = text.splitlines()
    start = lines.index(TABLE_HEADER)
    body = lines[start + 2 : start + 2 + len(expected)]
    assert all(line.count(" | ") == TABLE_HEADER.count(" | ") for line in body), body
    for n in TINY.events:
        assert sum(f"| {n:,} events in 1 run |" in line for line in body) == 2  # memory, redis
    for r in TINY.runs:
        assert sum(f"| {r:,} run(s) of {TINY.per_run} events |" in line for line in body) == 2
    for field in ("CPU", "cores", "Python", "server", "load average"):
        assert any(line.startswith(f"| {field}") for line in lines), field
    assert "python -m bench.curves" in text

    png = result.plot_path.read_bytes()
    assert len(png) > len(PNG_MAGIC) and png.startswith(PNG_MAGIC)


def test_curves_without_redis_measure_the_memory_backend_only(tmp_path: Path) -> None:
    result = run_curves(TINY, tmp_path, None, "python -m bench.curves --no-redis", log=print)
    assert {p.kind for p in result.points} == {"memory"}
    assert "| redis |" not in result.markdown
    assert result.plot_path.read_bytes().startswith(PNG_MAGIC)


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--output-dir" in out and "--no-redis" in out


def test_the_bench_results_link_the_curves() -> None:
    from bench import runner

    text = runner.results_markdown([], {}, {}, runner.TINY, "python -m bench", 1.0, False)
    assert "## Scale curves" in text
    assert "[curves.md](curves.md)" in text and "[curves.png](curves.png)" in text
    assert RESULTS_SECTION in runner.RESULTS.read_text()  # the committed RESULTS.md has it too
