"""Every magic and option in an in-process IPython shell, including each error message."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import redis_cleanup
from IPython.core.error import UsageError
from servers import PrivateServer

import dockrion_nb.api
from dockrion_nb.engine import get_engine, reset_engine
from dockrion_nb.events import BaseEvent
from dockrion_nb.magics import StreamMagics
from dockrion_nb.widget import RunView


@pytest.fixture(scope="module")
def ip(ipython: Any) -> Iterator[Any]:
    shell = ipython
    shell.run_line_magic("load_ext", "dockrion_nb")
    yield shell
    shell.run_line_magic("unload_ext", "dockrion_nb")


@pytest.fixture(autouse=True)
def fresh(ip: Any) -> Iterator[StreamMagics]:
    """A fresh engine (memory backend) and default settings for every test."""
    reset_engine()
    magics = ip.magics_manager.registry["StreamMagics"]
    for name in StreamMagics.class_traits(config=True):
        magics.set_trait(name, StreamMagics.class_traits()[name].default_value)
    yield magics
    ip.user_ns.pop("ctx", None)
    reset_engine()


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the magics display (the live views), captured at the API's display seam."""
    seen: list[Any] = []
    monkeypatch.setattr(dockrion_nb.api, "_display", seen.append)
    return seen


def line(ip: Any, text: str) -> Any:
    name, _, rest = text.partition(" ")
    return ip.run_line_magic(name, rest)


def stored(run_id: str) -> list[BaseEvent]:
    engine = get_engine()
    return engine.run(engine.bus.get_events(run_id))


def kinds(run_id: str) -> list[str]:
    return [e.type for e in stored(run_id)]


# -- %stream_backend ------------------------------------------------------------------------


def test_stream_backend_without_arguments_shows_the_active_backend(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "stream_backend")
    assert capsys.readouterr().out.strip() == (
        "stream backend: memory (this process); max 1000 events per run"
    )


def test_stream_backend_memory_with_max_events(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    line(ip, "stream_backend memory --max-events 500")
    assert "memory (this process); max 500 events per run; connected" in capsys.readouterr().out
    assert get_engine().describe()["max_events_per_run"] == 500


def test_stream_backend_memory_with_max_runs(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    line(ip, "stream_backend memory --max-runs 3")
    assert "max 1000 events per run, at most 3 runs; connected" in capsys.readouterr().out
    assert get_engine().describe()["max_runs"] == 3
    with pytest.raises(UsageError, match=r"--max-runs applies only to the memory backend"):
        line(ip, "stream_backend redis --url redis://127.0.0.1:1/0 --max-runs 3")


def test_stream_backend_redis_connects_and_masks_the_password(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = PrivateServer(password="s3cret-pw")
    server.start()
    try:
        line(ip, f"stream_backend redis --url {server.url} --ttl 120 --max-events 50 --pool-size 3")
        out = capsys.readouterr().out
        assert out.strip() == (
            f"stream backend: redis at redis://***@127.0.0.1:{server.port}/0; "
            "ttl 120 s, max 50 events per run, pool 3; connected"
        )
        line(ip, "stream_backend")
        out = capsys.readouterr().out
        assert "redis://***@" in out and "s3cret-pw" not in out
        wrong = server.url.replace("s3cret-pw", "wrong-pw")
        with pytest.raises(UsageError) as err:
            line(ip, f"stream_backend redis --url {wrong}")
        assert "rejected the credentials" in str(err.value)
        assert "wrong-pw" not in str(err.value) and "\n" not in str(err.value)
        assert get_engine().describe()["url"].endswith(f":{server.port}/0")  # old one kept
    finally:
        reset_engine()
        server.close()


def test_stream_backend_unreachable_server_is_one_line_and_keeps_the_old_backend(
    ip: Any,
) -> None:
    from servers import free_port

    port = free_port()
    with pytest.raises(UsageError) as err:
        line(ip, f"stream_backend redis --url redis://user:topsecret@127.0.0.1:{port}/0")
    msg = str(err.value)
    assert msg.startswith(f"cannot reach Redis at redis://user:***@127.0.0.1:{port}/0")
    assert "topsecret" not in msg and "\n" not in msg
    assert get_engine().describe()["backend"] == "memory"


def test_stream_backend_redis_without_url_names_the_unset_variable(
    ip: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(UsageError, match=r"environment variable REDIS_URL is not set"):
        line(ip, "stream_backend redis")


def test_stream_backend_uses_config_defaults(
    ip: Any, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("config", f"StreamMagics.redis_url = {redis_url!r}")
    ip.run_line_magic("config", "StreamMagics.stream_ttl_seconds = 600")
    line(ip, "stream_backend redis")
    info = get_engine().describe()
    assert (info["backend"], info["stream_ttl_seconds"]) == ("redis", 600)
    ip.run_line_magic("config", "StreamMagics.stream_ttl_seconds = 5")
    with pytest.raises(UsageError, match=r"stream_ttl_seconds = 5 is out of range: allowed 60"):
        line(ip, "stream_backend redis")


def test_stream_backend_dockfile(ip: Any, redis_url: str, tmp_path: Path) -> None:
    dockfile = tmp_path / "Dockfile.yaml"
    dockfile.write_text(
        "agent: {name: demo}\nstreaming:\n  backend: redis\n  async_runs: true\n"
        f"  redis:\n    url: {redis_url}\n    stream_ttl_seconds: 7200\n"
    )
    line(ip, f"stream_backend --dockfile {dockfile}")
    info = get_engine().describe()
    assert (info["backend"], info["stream_ttl_seconds"]) == ("redis", 7200)
    line(ip, f"stream_backend --dockfile {dockfile} --ttl 90")
    assert get_engine().describe()["stream_ttl_seconds"] == 90
    with pytest.raises(UsageError, match=r"^Dockfile not found: .*nope.yaml$"):
        line(ip, f"stream_backend --dockfile {tmp_path / 'nope.yaml'}")


def test_stream_backend_bad_input_errors(ip: Any) -> None:
    cases = {
        "stream_backend sqlite": "argument backend: invalid choice: 'sqlite'",
        "stream_backend memory --nope": "unrecognized arguments: --nope",
        "stream_backend memory --ttl abc": "argument --ttl: invalid int value: 'abc'",
        "stream_backend memory --url redis://x": "--url applies only to the redis backend",
        "stream_backend --ttl 60": "name the backend: %stream_backend memory|redis",
        "stream_backend memory --max-events 5": "max_events_per_run = 5 is out of range",
        "stream_backend redis --url http://h:1": "invalid Redis URL",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError) as err:
            line(ip, text)
        assert message in str(err.value), text
        assert "\n" not in str(err.value)


def test_stream_backend_falls_back_to_memory_when_redis_is_missing(
    ip: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    line(ip, "stream_backend redis --url redis://127.0.0.1:1/0")
    out = capsys.readouterr().out
    assert out.startswith("warning: backend 'redis' is not available")
    assert "using the in-memory backend" in out
    assert get_engine().describe()["backend"] == "memory"


def test_stream_backend_help_shows_usage_and_every_option(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell("%stream_backend?")
    out = capsys.readouterr().out
    assert "%stream_backend [--url URL] [--ttl SECONDS]" in out
    for option in ("--max-events", "--pool-size", "--dockfile", "{memory,redis}"):
        assert option in out


def test_bad_context_name_is_refused(ip: Any, fresh: StreamMagics) -> None:
    ip.run_line_magic("config", "StreamMagics.context_name = '1x'")
    assert fresh.context_name == "ctx"


# -- %%publish (traced cell) ------------------------------------------------------------------


def test_publish_cell_traces_a_sync_body(ip: Any) -> None:
    value = ip.run_cell_magic(
        "publish",
        "c-sync --agent researcher --framework plain",
        "assert ctx.run_id == 'c-sync'\n"
        "ctx.sync_emit_progress('load', 0.5, 'half')\n"
        "with ctx.sync_step('work'):\n"
        "    total = sum(range(10))\n"
        "{'total': total}\n",
    )
    assert value == {"total": 45}
    events = stored("c-sync")
    assert [e.type for e in events] == ["started", "progress", "step", "complete"]
    started, complete = events[0], events[-1]
    assert (started.agent_name, started.framework) == ("researcher", "plain")  # type: ignore[attr-defined]
    assert complete.output == {"total": 45}  # type: ignore[attr-defined]
    assert complete.latency_seconds >= 0  # type: ignore[attr-defined]
    assert ip.user_ns["total"] == 45


def test_publish_cell_with_top_level_await(ip: Any) -> None:
    value = ip.run_cell_magic(
        "publish",
        "c-await",
        "import asyncio\n"
        "for word in ['Hello', ' world']:\n"
        "    await ctx.emit_token(word)\n"
        "    await asyncio.sleep(0.01)\n"
        "ctx.sync_emit_progress('answer', 1.0)\n"
        "res = await asyncio.gather(asyncio.sleep(0, 'a'), asyncio.sleep(0, 'b'))\n"
        "res\n",
    )
    assert value == ["a", "b"]
    events = stored("c-await")
    assert [e.type for e in events] == ["started", "token", "token", "progress", "complete"]
    assert events[-1].output == {"result": ["a", "b"]}  # type: ignore[attr-defined]


def test_publish_cell_that_raises_records_the_error_and_still_raises(ip: Any) -> None:
    with pytest.raises(ValueError, match="bad input 7"):
        ip.run_cell_magic(
            "publish",
            "c-raise",
            "ctx.sync_emit_token('partial')\n"
            "def check(x):\n"
            "    raise ValueError(f'bad input {x}')\n"
            "check(7)\n",
        )
    events = stored("c-raise")
    assert [e.type for e in events] == ["started", "token", "error"]
    err = events[-1]
    assert err.error == "bad input 7" and err.code == "ValueError"  # type: ignore[attr-defined]
    details = err.details  # type: ignore[attr-defined]
    assert details["exception_type"] == "ValueError"
    assert "check(7)" in details["traceback"] and "raise ValueError" in details["traceback"]
    assert "magics.py" not in details["traceback"]


def test_publish_async_cell_that_raises(ip: Any) -> None:
    with pytest.raises(KeyError):
        ip.run_cell_magic(
            "publish", "c-araise", "import asyncio\nawait asyncio.sleep(0)\n{}['x']\n"
        )
    assert kinds("c-araise") == ["started", "error"]
    assert stored("c-araise")[-1].code == "KeyError"  # type: ignore[attr-defined]


def test_publish_cell_interrupted_is_cancelled(ip: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic(
            "publish", "c-int", "ctx.sync_emit_token('before')\nraise KeyboardInterrupt\n"
        )
    events = stored("c-int")
    assert [e.type for e in events] == ["started", "token", "cancelled"]
    assert events[-1].reason == "interrupted (KeyboardInterrupt)"  # type: ignore[attr-defined]


def test_publish_async_cell_interrupted_is_cancelled(ip: Any) -> None:
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic(
            "publish", "c-aint", "import asyncio\nawait asyncio.sleep(0)\nraise KeyboardInterrupt\n"
        )
    assert kinds("c-aint") == ["started", "cancelled"]


def test_publish_cell_trailing_semicolon_hides_the_value_but_keeps_the_output(ip: Any) -> None:
    assert ip.run_cell_magic("publish", "c-semi", "21 * 2;\n") is None
    assert stored("c-semi")[-1].output == {"result": 42}  # type: ignore[attr-defined]


def test_publish_cell_syntax_error_publishes_nothing(ip: Any) -> None:
    with pytest.raises(SyntaxError):
        ip.run_cell_magic("publish", "c-syntax", "def broken(:\n")
    assert kinds("c-syntax") == []


def test_publish_cell_body_may_use_magics(ip: Any) -> None:
    ip.run_cell_magic("publish", "c-magic", "%publish c-inner token content=hi\nlisted = %runs\n")
    assert kinds("c-inner") == ["token"]
    assert "c-magic" in {r.run_id for r in ip.user_ns["listed"]}


def test_publish_cell_events_filter(ip: Any) -> None:
    ip.run_cell_magic(
        "publish",
        "c-filter --events minimal",
        "assert ctx.sync_emit_token('dropped') is False\nctx.sync_emit_progress('p', 1.0)\n",
    )
    assert kinds("c-filter") == ["started", "complete"]
    ip.run_cell_magic(
        "publish",
        "c-filter2 --events token,custom:score",
        "ctx.sync_emit_token('kept')\nctx.sync_emit('score', value=1)\nctx.sync_emit('other')\n",
    )
    assert kinds("c-filter2") == ["started", "token", "custom:score", "complete"]
    with pytest.raises(UsageError, match=r"^Unknown event type: 'loud'"):
        ip.run_cell_magic("publish", "c-filter3 --events loud", "1\n")
    assert kinds("c-filter3") == []


def test_publish_cell_writes_opentelemetry_spans_as_its_steps(ip: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from dockrion_nb.integrations.otel import SpanEventProcessor

    provider = TracerProvider()
    provider.add_span_processor(SpanEventProcessor())
    ip.user_ns["tracer"] = provider.get_tracer("cell")
    try:
        ip.run_cell_magic(
            "publish", "c-otel", "with tracer.start_as_current_span('answer'):\n    pass\n"
        )
    finally:
        provider.shutdown()
        ip.user_ns.pop("tracer")
    assert kinds("c-otel") == ["started", "custom:step_start", "step", "complete"]
    assert stored("c-otel")[2].model_dump()["node_name"] == "answer"


def test_publish_cell_watch_shows_the_live_view_first(ip: Any, shown: list[Any]) -> None:
    ip.run_cell_magic("publish", "c-watch --watch", "ctx.sync_emit_token('x')\n")
    assert len(shown) == 1 and isinstance(shown[0], RunView)
    view = shown[0]
    assert view.run_id == "c-watch"
    assert view.wait(10) == "complete"
    assert [e.type for e in view.events] == ["started", "token", "complete"]
    view.close()


def test_publish_cell_context_name_is_configurable(ip: Any) -> None:
    ip.run_line_magic("config", "StreamMagics.context_name = 'run'")
    ip.run_cell_magic("publish", "c-name", "run.sync_emit_token('t')\n")
    assert kinds("c-name") == ["started", "token", "complete"]


def test_publish_cell_errors(ip: Any) -> None:
    cases = {
        "bad!id": "invalid run id 'bad!id'",
        "c-x token": "%%publish takes only a run id, not 'token'",
        "c-x --events-body --agent a": "--agent applies to a traced cell, not --events-body",
        "c-x --events-body --langchain --events chat": "--events, --langchain apply to a traced",
        "c-x --bogus": "unrecognized arguments: --bogus",
        "": "the following arguments are required: run_id",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError) as err:
            ip.run_cell_magic("publish", text, "1\n")
        assert message in str(err.value), text
    assert kinds("c-x") == []


# -- %%publish --events-body and %publish ---------------------------------------------------


def test_publish_events_body_json_lines(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell_magic(
        "publish",
        "b-jsonl --events-body",
        '{"type": "started", "agent_name": "bot"}\n'
        '{"type": "token", "content": "Hi"}\n'
        '{"type": "fraud_check", "score": 0.1}\n'
        '{"type": "complete", "output": {"text": "Hi"}}\n',
    )
    assert "published 4 events (#1-#4) to run b-jsonl on memory" in capsys.readouterr().out
    assert kinds("b-jsonl") == ["started", "token", "custom:fraud_check", "complete"]


def test_publish_events_body_yaml_with_watch(ip: Any, shown: list[Any]) -> None:
    ip.run_cell_magic(
        "publish",
        "b-yaml --events-body --watch",
        "- type: started\n- type: progress\n  step: load\n  progress: 0.5\n- type: complete\n",
    )
    assert [e.sequence for e in stored("b-yaml")] == [1, 2, 3]
    assert isinstance(shown[0], RunView) and shown[0].wait(10) == "complete"
    shown[0].close()


def test_publish_events_body_is_validated_whole_first(ip: Any) -> None:
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic(
            "publish",
            "b-bad --events-body",
            '{"type": "started"}\n{"type": "token"}\n{"type": "complete"}\n{oops\n',
        )
    assert str(err.value) == (
        "nothing published: line 2: invalid token event: content: Field required; "
        "line 4: not valid JSON: Expecting property name enclosed in double quotes"
    )
    assert kinds("b-bad") == []


def test_publish_line_form(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    line(ip, "publish l-1 started agent_name=bot")
    line(ip, 'publish l-1 progress step=search progress=0.5 message="three sources"')
    line(ip, "publish l-1 checkpoint name=docs data='{\"count\": 3}'")
    line(ip, "publish l-1 fraud_check score=0.25 flagged=false")
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "published progress #2 to run l-1"
    events = stored("l-1")
    assert [e.type for e in events] == ["started", "progress", "checkpoint", "custom:fraud_check"]
    assert events[1].message == "three sources" and events[1].progress == 0.5  # type: ignore[attr-defined]
    assert events[2].data == {"count": 3}  # type: ignore[attr-defined]
    assert events[3].model_dump()["flagged"] is False


def test_publish_line_errors(ip: Any) -> None:
    cases = {
        "publish l-2": "usage: %publish RUN_ID TYPE [key=value ...]",
        "publish l-2 progress": "invalid progress event: step: Field required",
        "publish l-2 token content": "expected key=value, got 'content'",
        "publish l-2 token content=x --watch": "--watch is only for the %%publish cell magic",
        "publish l-2 token content='x": "cannot read the options: No closing quotation",
        "publish -bad token": "unrecognized arguments",
        "publish l-2 gap from_sequence=1": "'gap' events are made by subscribers",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError) as err:
            line(ip, text)
        assert message in str(err.value), text
    assert kinds("l-2") == []


# -- %replay ---------------------------------------------------------------------------------


@pytest.fixture
def run_r(ip: Any) -> str:
    ip.run_cell_magic(
        "publish",
        "r-1 --events-body",
        "\n".join(
            ['{"type": "started"}']
            + [f'{{"type": "token", "content": "<b>{i}</b>"}}' for i in range(6)]
            + ['{"type": "step", "node_name": "n"}', '{"type": "complete"}']
        ),
    )
    return "r-1"


def test_replay_as_table(ip: Any, run_r: str) -> None:
    table = line(ip, f"replay {run_r} --as table")
    assert [e.sequence for e in table] == list(range(1, 10))
    html = table._repr_html_()
    assert "&lt;b&gt;0&lt;/b&gt;" in html and "<b>0" not in html
    assert "run r-1: 9 events on memory (this process)" in html


def test_replay_options_from_last_type(ip: Any, run_r: str) -> None:
    assert [e.sequence for e in line(ip, f"replay {run_r} --as table --from 7")] == [7, 8, 9]
    assert [e.sequence for e in line(ip, f"replay {run_r} --as table --last 2")] == [8, 9]
    picked = line(ip, f"replay {run_r} --as table --type token --last 2")
    assert [e.sequence for e in picked] == [6, 7]
    both = line(ip, f"replay {run_r} --as table --type step complete")
    assert [e.type for e in both] == ["step", "complete"]
    commas = line(ip, f"replay {run_r} --as table --type step,started")
    assert [e.type for e in commas] == ["started", "step"]


def test_replay_as_json_and_df(ip: Any, run_r: str) -> None:
    as_json = line(ip, f"replay {run_r} --as json --last 1")
    assert as_json[0]["type"] == "complete" and as_json[0]["sequence"] == 9
    frame = line(ip, f"replay {run_r} --as df")
    assert list(frame["sequence"]) == list(range(1, 10))


def test_replay_df_without_pandas_says_how_to_fix(
    ip: Any, run_r: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UsageError, match=r"^pandas is not installed: pip install pandas"):
        line(ip, f"replay {run_r} --as df")


def test_replay_default_is_the_widget_in_replay_mode(ip: Any, run_r: str) -> None:
    view = line(ip, f"replay {run_r}")
    assert isinstance(view, RunView) and view.live is False
    assert view.wait(10) == "complete"
    assert [e.sequence for e in view.events] == list(range(1, 10))
    view.close()
    tail = line(ip, f"replay {run_r} --last 2")
    assert tail.wait(10) == "complete"
    assert [e.sequence for e in tail.events] == [8, 9]
    tail.close()
    ip.run_line_magic("config", "StreamMagics.replay_as = 'table'")
    assert isinstance(line(ip, f"replay {run_r}"), dockrion_nb.api.EventTable)


def test_replay_errors(ip: Any, run_r: str) -> None:
    cases = {
        "replay nope": "no events for run nope on memory (this process)",
        "replay bad!id": "invalid run id 'bad!id'",
        f"replay {run_r} --as html": "argument --as: invalid choice: 'html'",
        f"replay {run_r} --last 0": "--last must be 1 or more, not 0",
        f"replay {run_r} --from 0": "--from must be 1 or more, not 0",
        f"replay {run_r} --from 50": "run r-1 has no events from sequence 50",
        f"replay {run_r} --type tokens": "unknown event type 'tokens'",
        f"replay {run_r} --type heartbeat": "run r-1 has no heartbeat events",
        "replay": "the following arguments are required: run_id",
    }
    for text, message in cases.items():
        with pytest.raises(UsageError) as err:
            line(ip, text)
        assert message in str(err.value), text


def test_replay_unknown_run_on_redis_names_the_masked_server(ip: Any) -> None:
    server = PrivateServer(password="pw-hidden")
    server.start()
    try:
        line(ip, f"stream_backend redis --url {server.url}")
        with pytest.raises(UsageError) as err:
            line(ip, "replay ghost-run")
        assert str(err.value) == (
            f"no events for run ghost-run on redis at redis://***@127.0.0.1:{server.port}/0"
        )
    finally:
        reset_engine()
        server.close()


# -- %watch and %runs ----------------------------------------------------------------------


def test_watch_before_the_run_starts_waits_then_follows(ip: Any, shown: list[Any]) -> None:
    assert line(ip, "watch w-1") is None
    (view,) = shown
    assert isinstance(view, RunView) and view.live is True
    assert view.status == "waiting"
    ip.run_cell_magic("publish", "w-1", "ctx.sync_emit_token('a')\n")
    assert view.wait(10) == "complete"
    assert [e.type for e in view.events] == ["started", "token", "complete"]
    view.close()


def test_watch_options_and_errors(ip: Any, shown: list[Any]) -> None:
    line(ip, "watch w-2 --from 2 --type token --max-events 10")
    view = shown[0]
    assert (view.from_sequence, view.types, view.max_events) == (2, ["token"], 10)
    view.close()
    for text, message in {
        "watch no good": "unrecognized arguments: good",
        "watch bad!": "invalid run id 'bad!'",
        "watch w-2 --from 0": "--from must be 1 or more, not 0",
        "watch w-2 --type nope": "unknown event type 'nope'",
    }.items():
        with pytest.raises(UsageError) as err:
            line(ip, text)
        assert message in str(err.value), text


def test_runs_lists_runs_with_status(ip: Any) -> None:
    ip.run_cell_magic("publish", "runs-ok", "1\n")
    with pytest.raises(ZeroDivisionError):
        ip.run_cell_magic("publish", "runs-bad", "1/0\n")
    line(ip, "publish runs-live started")
    table = line(ip, "runs")
    status = {r.run_id: r.status for r in table}
    assert status == {"runs-ok": "complete", "runs-bad": "error", "runs-live": "running"}
    assert [r.run_id for r in line(ip, "runs runs-b*")] == ["runs-bad"]
    text = repr(table)
    assert text.splitlines()[0] == "3 runs on memory (this process)"
    assert "run id" in text.splitlines()[1] and "TTL left" in text.splitlines()[1]
    with pytest.raises(UsageError, match="unrecognized arguments: b"):
        line(ip, "runs a b")


def test_runs_and_replay_on_redis_show_ttl(ip: Any, redis_url: str, run_id: str) -> None:
    try:
        line(ip, f"stream_backend redis --url {redis_url} --ttl 600")
        ip.run_cell_magic("publish", run_id, "'done'\n")
        (row,) = line(ip, f"runs {run_id}")
        assert (row.run_id, row.event_count, row.status) == (run_id, 2, "complete")
        assert row.ttl_seconds is not None and 0 < row.ttl_seconds <= 600
        assert "m " in repr(line(ip, f"runs {run_id}")).splitlines()[-1]
        assert [e.type for e in line(ip, f"replay {run_id} --as table")] == ["started", "complete"]
    finally:
        reset_engine()
        redis_cleanup(redis_url, run_id)


def test_unload_removes_the_magics_and_stops_the_engine(ip: Any) -> None:
    engine = get_engine()
    ip.run_line_magic("unload_ext", "dockrion_nb")
    try:
        assert engine.closed
        assert ip.find_line_magic("replay") is None
    finally:
        ip.run_line_magic("load_ext", "dockrion_nb")
    assert ip.find_line_magic("replay") is not None


# -- re-running a %%publish cell ------------------------------------------------------------


def test_rerunning_a_publish_cell_is_refused_with_the_two_choices(ip: Any) -> None:
    ip.run_cell_magic("publish", "again-1", "1\n")
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("publish", "again-1", "2\n")
    assert str(err.value) == (
        "run again-1 already holds 2 events (complete): add --replace to clear it first, "
        "or --append to add to it"
    )
    assert kinds("again-1") == ["started", "complete"]  # nothing was added by the refusal
    ip.run_cell_magic("publish", "again-1 --append", "3\n")
    assert kinds("again-1") == ["started", "complete", "started", "complete"]
    ip.run_cell_magic("publish", "again-1 --replace", "4\n")
    events = stored("again-1")
    assert [(e.sequence, e.type) for e in events] == [(1, "started"), (2, "complete")]
    assert events[-1].model_dump()["output"] == {"result": 4}
    with pytest.raises(UsageError, match=r"--replace and --append are opposites"):
        ip.run_cell_magic("publish", "again-1 --replace --append", "5\n")
    with pytest.raises(UsageError, match=r"--replace applies to a traced cell"):
        ip.run_cell_magic("publish", "again-1 --events-body --replace", '{"type": "token"}\n')


def test_a_cells_output_and_error_are_recorded_whatever_they_hold(ip: Any) -> None:
    """The last expression (and an exception's message) stay leniently converted: text no
    backend can store is escaped, objects become their repr; the run still ends."""
    ip.run_cell_magic("publish", "odd-out", "{'s': 'a\\ud800b', 'o': object(), 'b': b'\\xff'}\n")
    complete = stored("odd-out")[-1]
    assert complete.type == "complete"
    output = complete.model_dump()["output"]
    assert output["s"] == "a\\ud800b" and output["o"].startswith("<object object")
    with pytest.raises(ValueError):
        ip.run_cell_magic("publish", "odd-err", "raise ValueError('bad \\udc80 text')\n")
    error = stored("odd-err")[-1]
    assert error.type == "error" and error.model_dump()["error"] == "bad \\udc80 text"
