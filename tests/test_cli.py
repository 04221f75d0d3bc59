"""The ``dockrion-nb`` command line: demo, publish, tail, replay, runs; errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import redis_cleanup
from servers import free_port

from dockrion_nb.cli import main
from dockrion_nb.redaction import mask_url

PY = [sys.executable, "-m", "dockrion_nb"]


def cli(argv: Sequence[str], environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), environ=environ or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def proc_env(redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


# -- demo on the memory backend: the headless main job ---------------------------------------


def test_demo_prints_the_whole_trace() -> None:
    code, out, err = cli(["demo", "demo-mem", "--fast"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["1", "+0.00s", "started"]
    kinds = [ln.split()[2] for ln in lines]
    for needed in ("progress", "step", "custom:tool_call", "heartbeat", "checkpoint", "token"):
        assert needed in kinds
    assert kinds[-1] == "complete"
    token_line = next(ln for ln in lines if ln.split()[2] == "token")
    assert "The Danube flows through ten countries" in token_line and "[stop]" in token_line
    assert err.splitlines()[0] == "demo run demo-mem on memory (this process)"
    assert err.splitlines()[-1].startswith("run demo-mem: complete after ")


def test_demo_error_run_exits_1_and_shows_the_error() -> None:
    code, out, _ = cli(["demo", "demo-err", "--fast", "--error"])
    assert code == 1
    last = out.splitlines()[-1].split(maxsplit=3)
    assert last[2] == "error"
    assert last[3] == "TOOL_TIMEOUT: search tool timed out after 3 attempts"
    assert "token" not in out


def test_demo_json_lines_are_wire_events() -> None:
    code, out, _ = cli(["demo", "demo-json", "--fast", "--json"])
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "started" and events[-1]["type"] == "complete"
    assert {e["run_id"] for e in events} == {"demo-json"}


def test_python_dash_m_runs_the_cli_with_realistic_timing_sped_up() -> None:
    out = subprocess.run(
        [*PY, "demo", "demo-proc", "--speed", "20", "--quiet"],
        env=proc_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert out.stderr.startswith("run demo-proc: complete after ")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "dockrion-nb"
    assert script.exists()
    out = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("dockrion-nb ")


# -- errors: one line, exit code 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "bad!id"], "invalid run id 'bad!id'"),
        (["replay", "nope"], "no events for run nope on memory (this process) (the memory"),
        (["replay", "x", "--backend", "memory", "--url", "redis://h"], "--url applies only"),
        (["replay", "x", "--url", "redis://h:1", "--ttl", "5"], "stream_ttl_seconds = 5 is out"),
        (["publish", "p-1"], "give the event: TYPE [key=value ...], or --file PATH"),
        (["publish", "p-1", "progress"], "invalid progress event: step: Field required"),
        (["publish", "p-1", "token", "oops"], "expected key=value, got 'oops'"),
        (["publish", "p-1", "--file", "/nonexistent/x.jsonl"], "cannot read /nonexistent"),
        (["tail", "t-1", "--from", "0"], "--from must be 1 or more, not 0"),
        (["tail", "t-1", "--type", "nope"], "unknown event type 'nope'"),
        (["tail", "t-1", "--timeout", "0.2"], "run t-1 did not end within 0.2 s (with no events)"),
        (["replay", "x", "--dockfile", "/nonexistent/Dockfile"], "Dockfile not found"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv: list[str], message: str) -> None:
    code, _, err = cli(argv)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("waiting for run")]
    assert len(lines) == 1, err
    assert lines[0].startswith("dockrion-nb: error: ")
    assert message in lines[0]


def test_unreachable_server_masks_the_password() -> None:
    port = free_port()
    code, _, err = cli(["runs", "--url", f"redis://app:hunter2@127.0.0.1:{port}/0"])
    assert code == 2
    assert err.strip() == (
        f"dockrion-nb: error: cannot reach Redis at redis://app:***@127.0.0.1:{port}/0 while "
        "connecting: connection refused; is the server running and the URL right?"
    )


def test_bad_options_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["tail"], "dockrion-nb tail: error: the following arguments are required: RUN_ID"),
        (["demo", "--speed", "0"], "argument --speed: must be more than 0, not 0"),
        (["demo", "--fast", "--speed", "2"], "not allowed with argument --fast"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv, environ={})
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err, err


def test_publish_on_memory_says_the_events_stay_in_this_process() -> None:
    code, out, err = cli(["publish", "m-1", "token", "content=hi"])
    assert (code, out) == (0, "published token #1 to run m-1\n")
    assert err.startswith("note: the memory backend keeps events inside this process")


def test_publish_file_is_validated_whole_first(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "started"}\n{"type": "token"}\n')
    code, _, err = cli(["publish", "f-1", "--file", str(events)])
    assert code == 2
    assert "nothing published: line 2: invalid token event: content" in err


# -- over Redis, between processes ---------------------------------------------------------


@pytest.fixture
def redis_run(redis_url: str, run_id: str) -> Iterator[str]:
    yield run_id
    redis_cleanup(redis_url, run_id)


def start_tail(redis_url: str, run_id: str, *extra: str) -> subprocess.Popen[str]:
    """``tail`` in its own process; returns once it says it is waiting for the run."""
    proc = subprocess.Popen(
        [*PY, "tail", run_id, *extra],
        env=proc_env(redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith(f"waiting for run {run_id} on redis at "), first
    return proc


def test_tail_follows_publishes_from_other_processes(redis_url: str, redis_run: str) -> None:
    tail = start_tail(redis_url, redis_run)
    try:
        env = proc_env(redis_url)
        for argv in (
            ["started", "agent_name=cli"],
            ["token", "content=Hello"],
            ["token", "content= world"],
        ):
            done = subprocess.run(
                [*PY, "publish", redis_run, *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [*PY, "publish", redis_run, "--file", "-", "--json"],
            input="- type: progress\n  step: write\n  progress: 1.0\n- type: complete\n"
            "  output: {text: Hello world}\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [json.loads(x)["sequence"] for x in done.stdout.splitlines()] == [4, 5]
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["1", "2", "4", "5"]
    assert lines[1].split(maxsplit=3)[2:] == ["token", "Hello world"]
    assert lines[-1].split()[2] == "complete"


def test_tail_json_follows_a_demo_in_another_process(redis_url: str, redis_run: str) -> None:
    tail = start_tail(redis_url, redis_run, "--json")
    try:
        demo = subprocess.run(
            [*PY, "demo", redis_run, "--speed", "10"],
            env=proc_env(redis_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert demo.returncode == 0, demo.stderr
        assert f"follow it elsewhere with: dockrion-nb tail {redis_run}" in demo.stderr
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 0, err
    assert "Traceback" not in err and "never retrieved" not in err, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "complete"
    # Both processes saw the same run: demo's own trace has the same number of events.
    assert len(demo.stdout.splitlines()) < len(events)  # tokens are joined on one line there


def test_tail_exits_1_when_the_followed_run_fails(redis_url: str, redis_run: str) -> None:
    tail = start_tail(redis_url, redis_run)
    try:
        argv = ["demo", redis_run, "--fast", "--error", "--quiet"]
        code, _, _ = cli(argv, {"REDIS_URL": redis_url})
        assert code == 1
        out, _ = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
    assert tail.returncode == 1
    assert out.splitlines()[-1].split()[2] == "error"


def test_replay_and_runs_over_redis(redis_url: str, redis_run: str) -> None:
    env = {"REDIS_URL": redis_url}
    assert cli(["demo", redis_run, "--fast", "--quiet", "--ttl", "300"], env)[0] == 0
    code, out, _ = cli(["replay", redis_run, "--last", "2"], env)
    assert code == 0
    assert [ln.split()[2] for ln in out.splitlines()] == ["progress", "complete"]
    code, out, _ = cli(["replay", redis_run, "--type", "checkpoint", "--json"], env)
    assert [json.loads(x)["type"] for x in out.splitlines()] == ["checkpoint"]
    code, out, _ = cli(["runs", redis_run, "--json"], env)
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert (row["run_id"], row["status"], row["last_type"]) == (redis_run, "complete", "complete")
    assert 0 < row["ttl_seconds"] <= 300
    code, out, _ = cli(["runs", redis_run], env)
    assert out.splitlines()[0].startswith("1 run on redis at redis://")
    code, _, err = cli(["replay", f"{redis_run}-none"], env)
    assert code == 2
    where = f"redis at {mask_url(redis_url)}"
    assert err.strip().endswith(f"no events for run {redis_run}-none on {where}")
