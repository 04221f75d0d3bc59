"""The plain Python API behind the magics and the CLI (memory backend; Redis in test_cli)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockrion_nb import api
from dockrion_nb.backends.base import RunSummary
from dockrion_nb.bus import EventBus
from dockrion_nb.config import ConfigError
from dockrion_nb.context import StreamContext, get_current_context
from dockrion_nb.engine import Engine
from dockrion_nb.events import CustomEvent, ProgressEvent, TokenEvent


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="api-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def types_of(engine: Engine, run_id: str) -> list[str]:
    return [e.type for e in engine.run(engine.bus.get_events(run_id))]


# -- configuration ---------------------------------------------------------------------------


def test_build_config_defaults_to_memory_and_a_url_means_redis() -> None:
    assert api.build_config().backend == "memory"
    cfg = api.build_config(url="redis://localhost:6379/1", ttl=120, pool_size=3)
    assert cfg.backend == "redis" and cfg.redis is not None
    assert (cfg.redis.url, cfg.redis.stream_ttl_seconds, cfg.redis.connection_pool_size) == (
        "redis://localhost:6379/1",
        120,
        3,
    )


def test_build_config_rejects_redis_options_on_memory() -> None:
    with pytest.raises(ConfigError, match=r"--url, --ttl apply only to the redis backend"):
        api.build_config("memory", url="redis://x", ttl=60)


def test_build_config_out_of_range_names_field_and_range() -> None:
    with pytest.raises(ConfigError, match=r"stream_ttl_seconds = 5 is out of range: allowed 60"):
        api.build_config("redis", url="redis://x", ttl=5)


def test_build_config_unset_redis_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        api.build_config("redis", environ={})


def test_build_config_takes_defaults_and_dockfile(tmp_path: Path) -> None:
    cfg = api.build_config(
        "redis", defaults={"redis_url": "redis://d:6379/0", "stream_ttl_seconds": 900}
    )
    assert cfg.redis is not None and cfg.redis.url == "redis://d:6379/0"
    assert cfg.redis.stream_ttl_seconds == 900
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text(
        "agent: {name: x}\nstreaming:\n  backend: redis\n  redis:\n    url: redis://f:1/0\n"
        "    stream_ttl_seconds: 7200\n  async_runs: true\n"
    )
    cfg = api.build_config(dockfile=dockfile, defaults={"stream_ttl_seconds": 900})
    assert cfg.redis is not None
    assert (cfg.redis.url, cfg.redis.stream_ttl_seconds) == ("redis://f:1/0", 7200)
    cfg = api.build_config(dockfile=dockfile, ttl=61)
    assert cfg.redis is not None and cfg.redis.stream_ttl_seconds == 61


def test_use_backend_memory_returns_settings(engine: Engine) -> None:
    info = api.use_backend("memory", max_events=77, engine=engine)
    assert info == {"backend": "memory", "max_events_per_run": 77}


# -- publish, select, replay -------------------------------------------------------------------


def test_publish_one_event_by_type_with_fields(engine: Engine) -> None:
    stored = api.publish("p-1", "progress", step="load", progress=0.5, engine=engine)
    assert isinstance(stored, ProgressEvent) and stored.sequence == 1
    custom = api.publish("p-1", "fraud_check", score=0.1, engine=engine)
    assert isinstance(custom, CustomEvent) and custom.type == "custom:fraud_check"
    assert custom.sequence == 2


def test_select_events_from_last_and_types(engine: Engine) -> None:
    api.publish_many(
        "s-1",
        [{"type": "started"}]
        + [{"type": "token", "content": str(i)} for i in range(10)]
        + [{"type": "complete"}],
        engine=engine,
    )
    assert [e.sequence for e in api.select_events("s-1", last=3, engine=engine)] == [10, 11, 12]
    tokens = api.select_events("s-1", types=["token"], last=2, engine=engine)
    assert [e.content for e in tokens if isinstance(e, TokenEvent)] == ["8", "9"]
    assert [e.sequence for e in api.select_events("s-1", from_sequence=11, engine=engine)] == [
        11,
        12,
    ]


def test_select_events_errors_name_the_run_and_backend(engine: Engine) -> None:
    with pytest.raises(api.NoEventsError, match=r"^no events for run nope on memory"):
        api.select_events("nope", engine=engine)
    api.publish("e-1", "started", engine=engine)
    with pytest.raises(api.NoEventsError, match="no events from sequence 5"):
        api.select_events("e-1", from_sequence=5, engine=engine)
    with pytest.raises(api.NoEventsError, match="has no token events"):
        api.select_events("e-1", types="token", engine=engine)
    with pytest.raises(ValueError, match="invalid run id"):
        api.select_events("bad id!", engine=engine)
    with pytest.raises(ValueError, match="unknown event type 'tokens'"):
        api.select_events("e-1", types="tokens", engine=engine)


def test_replay_as_table_escapes_html_and_text_is_plain(engine: Engine) -> None:
    api.publish("x-1", "token", content="<img src=x onerror=alert(1)>", engine=engine)
    table = api.replay("x-1", as_="table", engine=engine)
    assert isinstance(table, api.EventTable) and len(table) == 1
    html = table._repr_html_()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" in repr(table)


def test_replay_as_json_and_df_and_events(engine: Engine) -> None:
    api.publish_many("j-1", [{"type": "started"}, {"type": "complete"}], engine=engine)
    as_json = api.replay("j-1", as_="json", engine=engine)
    lines = [json.loads(line) for line in repr(as_json).splitlines()]
    assert [d["type"] for d in lines] == ["started", "complete"]
    assert as_json._repr_mimebundle_()["application/json"]["events"][1]["sequence"] == 2
    frame = api.replay("j-1", as_="df", engine=engine)
    assert list(frame["type"]) == ["started", "complete"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    events = api.replay("j-1", as_="events", engine=engine)
    assert [e.sequence for e in events] == [1, 2]
    with pytest.raises(ValueError, match="unknown view 'html'"):
        api.replay("j-1", as_="html", engine=engine)  # type: ignore[arg-type]


def test_runs_lists_status_and_escapes(engine: Engine) -> None:
    api.publish_many("r-done", [{"type": "started"}, {"type": "complete"}], engine=engine)
    api.publish("r-live", "started", engine=engine)
    table = api.runs(engine=engine)
    by_id = {r.run_id: r for r in table}
    assert by_id["r-done"].status == "complete" and by_id["r-live"].status == "running"
    assert by_id["r-done"].event_count == 2
    assert api.runs("r-d*", engine=engine)[0].run_id == "r-done"
    assert "2 runs on memory (this process)" in table._repr_html_()
    text = repr(table)
    assert "r-done" in text and "complete" in text
    assert repr(api.runs("zzz*", engine=engine)) == "no runs on memory (this process)"


def test_run_table_escapes_run_ids() -> None:
    table = api.RunTable(
        [RunSummary("<b>x</b>", 1, 1, 1, "started", ttl_seconds=3599)], "redis at r"
    )
    assert "<b>" not in table._repr_html_() and "&lt;b&gt;" in table._repr_html_()
    assert "59m 59s" in repr(table)


# -- events bodies -----------------------------------------------------------------------------


def test_parse_events_text_json_lines_and_yaml() -> None:
    events = api.parse_events_text(
        '# a comment\n{"type": "started", "agent_name": "a"}\n\n'
        '{"type": "token", "content": "hi"}\n{"type": "fraud_check", "score": 0.2}\n',
        "b-1",
    )
    assert [e.type for e in events] == ["started", "token", "custom:fraud_check"]
    events = api.parse_events_text(
        "- type: started\n- type: progress\n  step: load\n  progress: 0.5\n- type: complete\n",
        "b-1",
    )
    assert [e.type for e in events] == ["started", "progress", "complete"]


def test_parse_events_text_errors_name_every_bad_line() -> None:
    with pytest.raises(api.EventsTextError) as err:
        api.parse_events_text(
            '{"type": "started"}\n{"type": "progress"}\n{not json\n{"type": "gap"}\n', "b-2"
        )
    msg = str(err.value)
    assert msg.startswith("nothing published: line 2: invalid progress event: step")
    assert "line 3: not valid JSON" in msg and "line 4: 'gap' events" in msg
    with pytest.raises(api.EventsTextError, match=r"line 3: invalid token event: content"):
        api.parse_events_text("- type: started\n- type: token\n- type: token\n  x: 1\n", "b-2")
    with pytest.raises(api.EventsTextError, match=r"line 3: not valid YAML: mapping values"):
        api.parse_events_text("- type: started\n- type: token\n   content: x\n", "b-2")
    with pytest.raises(api.EventsTextError, match="YAML list"):
        api.parse_events_text("type: started\n", "b-2")
    with pytest.raises(api.EventsTextError, match=r"line 1: event is for run 'other'"):
        api.parse_events_text('{"type": "started", "run_id": "other"}', "b-2")
    with pytest.raises(api.EventsTextError, match="no events"):
        api.parse_events_text("  \n# only a comment\n", "b-2")


def test_parse_fields_reads_json_values() -> None:
    assert api.parse_fields(["a=1", "b=0.5", "c=true", "d=hello world", 'e={"k": [1]}']) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "hello world",
        "e": {"k": [1]},
    }
    with pytest.raises(ValueError, match="expected key=value, got 'oops'"):
        api.parse_fields(["oops"])


# -- trace ---------------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: float


def test_output_of_makes_values_json_safe() -> None:
    assert api.output_of(None) == {}
    assert api.output_of({"a": {1, 2}.__len__()}) == {"a": 2}
    assert api.output_of(Point(1, float("nan"))) == {"x": 1, "y": "nan"}
    assert api.output_of([1, (2, 3)]) == {"result": [1, [2, 3]]}
    assert api.output_of(object())["result"].startswith("<object object")
    json.dumps(api.output_of({"when": __import__("datetime").date(2024, 1, 2)}))


def test_trace_sync_complete_sets_context_var(engine: Engine) -> None:
    t = api.trace("t-ok", agent="bot", engine=engine)
    with t as ctx:
        assert get_current_context() is ctx
        ctx.sync_emit_token("x")
        t.output = {"answer": 42}
    assert get_current_context() is None
    events = engine.run(engine.bus.get_events("t-ok"))
    assert [e.type for e in events] == ["started", "token", "complete"]
    assert events[0].agent_name == "bot"  # type: ignore[attr-defined]
    assert events[-1].output == {"answer": 42}  # type: ignore[attr-defined]
    assert events[-1].latency_seconds is not None  # type: ignore[attr-defined]


def test_trace_sync_error_is_recorded_and_raised(engine: Engine) -> None:
    with pytest.raises(ZeroDivisionError), api.trace("t-err", engine=engine):
        1 / 0  # noqa: B018
    events = engine.run(engine.bus.get_events("t-err"))
    err = events[-1]
    assert err.type == "error" and err.code == "ZeroDivisionError"  # type: ignore[attr-defined]
    assert err.error == "division by zero"  # type: ignore[attr-defined]
    assert "1 / 0" in err.details["traceback"]  # type: ignore[attr-defined]


def test_trace_keyboard_interrupt_is_cancelled(engine: Engine) -> None:
    with pytest.raises(KeyboardInterrupt), api.trace("t-int", engine=engine):
        raise KeyboardInterrupt
    assert types_of(engine, "t-int") == ["started", "cancelled"]


def test_trace_does_not_double_a_terminal_event(engine: Engine) -> None:
    with api.trace("t-own", engine=engine) as ctx:
        ctx.sync_emit_complete({"mine": True})
    assert types_of(engine, "t-own") == ["started", "complete"]


async def test_trace_async_complete_error_and_cancel(engine: Engine) -> None:
    async with api.trace("ta-ok", engine=engine) as ctx:
        await ctx.emit_token("a")
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="bad"):
        async with api.trace("ta-err", engine=engine):
            raise ValueError("bad")

    async def cancelled() -> None:
        async with api.trace("ta-cancel", engine=engine):
            await asyncio.sleep(30)

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert types_of(engine, "ta-ok") == ["started", "token", "complete"]
    assert types_of(engine, "ta-err") == ["started", "error"]
    assert types_of(engine, "ta-cancel") == ["started", "cancelled"]


def test_trace_events_filter_drops_filtered_types(engine: Engine) -> None:
    with api.trace("t-filter", events="minimal", engine=engine) as ctx:
        assert ctx.sync_emit_token("dropped") is False
    assert types_of(engine, "t-filter") == ["started", "complete"]


# -- terminal output and the demo -----------------------------------------------------------


def test_trace_printer_joins_tokens_and_escapes_control_characters() -> None:
    out = io.StringIO()
    printer = api.TracePrinter(out)
    for e in api.parse_events_text(
        '{"type": "started", "sequence": 1}\n'
        '{"type": "token", "content": "Hel", "sequence": 2}\n'
        '{"type": "token", "content": "lo\\u001b[31m", "sequence": 3}\n'
        '{"type": "complete", "sequence": 4}\n',
        "pr-1",
    ):
        printer.feed(e)
    printer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "Hello\\x1b[31m" in lines[1] and "\x1b" not in out.getvalue()
    assert lines[2].split()[:2] == ["4", "+0.00s"] or lines[2].split()[0] == "4"


async def test_simulate_agent_runs_the_whole_story_and_fails_on_request() -> None:
    from dockrion_nb.backends import InMemoryBackend

    bus = EventBus(InMemoryBackend())
    last = await api.simulate_agent(StreamContext("demo-ok", bus), speed=0)
    assert last is not None and last.type == "complete"
    kinds = [e.type for e in await bus.get_events("demo-ok")]
    assert kinds[0] == "started" and kinds[-1] == "complete"
    for needed in ("step", "progress", "token", "checkpoint", "heartbeat", "custom:tool_call"):
        assert needed in kinds
    failed = await api.simulate_agent(StreamContext("demo-bad", bus), speed=0, fail=True)
    assert failed is not None and failed.type == "error"
    assert "token" not in [e.type for e in await bus.get_events("demo-bad")]


def test_replay_widget_holds_every_stored_event_when_returned() -> None:
    """The static summary of a replay (what nbviewer shows) is never a premature 'waiting'."""
    from dockrion_nb import api
    from dockrion_nb.engine import Engine

    engine = Engine()
    try:
        for attempt in range(10):
            run_id = f"replay-ready-{attempt}"
            api.publish(run_id, "started", engine=engine)
            api.publish(run_id, "complete", engine=engine)
            view = api.replay(run_id, engine=engine)
            assert view.status == "complete"
            assert len(view.events) == 2
            assert "complete" in view._summary_text()
            view.close()
    finally:
        engine.shutdown()


def test_trace_on_a_run_that_holds_events_asks_for_a_mode(engine: Engine) -> None:
    with api.trace("re-1", engine=engine):
        pass
    with pytest.raises(api.RunExistsError) as err, api.trace("re-1", engine=engine):
        raise AssertionError("the body must not run")
    assert str(err.value) == (
        "run re-1 already holds 2 events (complete): pass mode='replace' to clear it first, "
        "or mode='append' to add to it"
    )
    with api.trace("re-1", mode="append", engine=engine):
        pass
    assert types_of(engine, "re-1") == ["started", "complete", "started", "complete"]
    with api.trace("re-1", mode="replace", engine=engine):
        pass
    assert types_of(engine, "re-1") == ["started", "complete"]
    with pytest.raises(ValueError, match=r"mode must be one of new, replace, append, not 'old'"):
        api.trace("re-1", mode="old", engine=engine)  # type: ignore[arg-type]


async def test_async_trace_checks_the_run_too(engine: Engine) -> None:
    async with api.trace("re-async", engine=engine):
        pass
    with pytest.raises(api.RunExistsError):
        async with api.trace("re-async", engine=engine):
            pass
    async with api.trace("re-async", mode="replace", engine=engine):
        pass
    assert types_of(engine, "re-async") == ["started", "complete"]
