"""Attaching to a running Dockrion server: the real ``dockrion_runtime`` on a loopback port,
serving an agent of the tests' own (``runtime_server``), followed over its HTTP/SSE API.

Every test checks what the notebook side saw against the server's own record of the run
(its replay, read without the code under test): every event once, in order.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from browser_harness import (
    ForwardingRunView,
    browser_context,
    chromium_available,
    create_view,
    open_harness,
    pump_outbox,
    root_selector,
    serve_harness,
)
from conftest import require
from IPython.core.error import UsageError
from playwright.sync_api import expect
from runtime_server import API_KEY, RuntimeServer, expected_types, words
from servers import free_port
from tcp_proxy import TcpProxy, tcp_proxy

import dockrion_nb.api
from dockrion_nb.api import cancel_server_run, start_server_run, watch
from dockrion_nb.cli import main as cli_main
from dockrion_nb.engine import Engine, get_engine, reset_engine
from dockrion_nb.events import BaseEvent, GapEvent, parse_event
from dockrion_nb.integrations.dockrion_server import (
    NotADockrionServerError,
    RunNotFoundError,
    ServerRequestError,
    ServerSource,
    ServerUnreachableError,
    cancel_run,
    follow,
    get_run,
    start_run,
)
from dockrion_nb.widget import RunView

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    runtime = RuntimeServer(tmp_path_factory.mktemp("dockrion-server"))
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def proxy(server: RuntimeServer) -> Iterator[TcpProxy]:
    with tcp_proxy(server.port) as p:
        yield p


def new_run_id() -> str:
    return f"srv-{uuid.uuid4().hex[:12]}"


async def collect(url: str, run_id: str, **options: Any) -> list[BaseEvent]:
    options.setdefault("api_key", API_KEY)
    return [e async for e in follow(url, run_id, **options)]


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(name="test-server-engine")
    try:
        yield eng
    finally:
        eng.shutdown()


def wait_until(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def assert_same_as_server(server: RuntimeServer, run_id: str, seen: list[BaseEvent]) -> None:
    """Every stored event, once, in order, with the server's own ids and sequences."""
    truth = server.stored_events(run_id)
    assert [(e.sequence, e.type, e.id) for e in seen] == [
        (d["sequence"], d["type"], d["id"]) for d in truth
    ]
    assert [e.sequence for e in seen] == list(range(1, len(truth) + 1))


# -- following --------------------------------------------------------------------------------


async def test_follow_yields_every_event_once_in_order_until_complete(
    server: RuntimeServer,
) -> None:
    run_id = new_run_id()
    answer = await start_run(server.url, {"text": words(8), "pause": 0.01}, run_id, api_key=API_KEY)
    assert answer["run_id"] == run_id and answer["status"] == "accepted"
    seen = await collect(server.url, run_id)
    assert [e.type for e in seen] == expected_types(8)
    assert "".join(e.content for e in seen if e.type == "token") == words(8) + " "
    assert seen[-1].output["answer"] == words(8)  # type: ignore[attr-defined]
    assert_same_as_server(server, run_id, seen)
    assert (await get_run(server.url, run_id, api_key=API_KEY))["status"] == "completed"


async def test_follow_from_a_sequence_starts_there(server: RuntimeServer) -> None:
    run_id = new_run_id()
    await start_run(server.url, {"text": words(3)}, run_id, api_key=API_KEY)
    server.wait_status(run_id, "completed")
    seen = await collect(server.url, run_id, from_sequence=5)
    assert [e.sequence for e in seen] == list(range(5, 11))
    assert seen[-1].type == "complete"


async def test_follow_attached_mid_run_replays_the_start_then_follows_live(
    server: RuntimeServer,
) -> None:
    run_id = new_run_id()
    await start_run(server.url, {"text": words(30), "pause": 0.03}, run_id, api_key=API_KEY)
    server.wait_status(run_id, "running")
    await asyncio.sleep(0.3)
    seen = await collect(server.url, run_id)
    assert [e.type for e in seen] == expected_types(30)
    assert_same_as_server(server, run_id, seen)


async def test_follow_resumes_after_dropped_connections_with_no_gap_and_no_duplicate(
    server: RuntimeServer, proxy: TcpProxy
) -> None:
    run_id = new_run_id()
    await start_run(server.url, {"text": words(80), "pause": 0.03}, run_id, api_key=API_KEY)
    states: list[str] = []
    seen: list[BaseEvent] = []
    cuts = 0
    async for event in follow(proxy.url, run_id, api_key=API_KEY, on_state=states.append):
        seen.append(event)
        if len(seen) in (10, 40, 70) and not event.is_terminal:
            cuts += proxy.cut()
    assert cuts >= 3
    assert_same_as_server(server, run_id, seen)
    assert states.count("reconnecting") >= 3 and states[-2:] == ["live", "closed"]
    resumed = [
        int(r.rsplit("from_sequence=", 1)[1].split("&")[0])
        for r in proxy.requests
        if "/events?" in r
    ]
    # each reconnect asked for the sequence after the last one received, never from the start
    assert len(resumed) >= 4 and resumed[0] == 1
    assert all(1 < k <= len(seen) for k in resumed[1:])
    assert resumed == sorted(resumed)


async def test_follow_waits_out_a_server_outage_and_resumes(
    server: RuntimeServer, proxy: TcpProxy
) -> None:
    run_id = new_run_id()
    await start_run(server.url, {"text": words(40), "pause": 0.03}, run_id, api_key=API_KEY)
    loop = asyncio.get_running_loop()
    states: list[str] = []
    seen: list[BaseEvent] = []
    async for event in follow(proxy.url, run_id, api_key=API_KEY, on_state=states.append):
        seen.append(event)
        if len(seen) == 10:
            proxy.refuse()
            loop.call_later(1.5, proxy.restore)
    assert proxy.refused >= 2  # it retried during the outage, with backoff
    assert "reconnecting" in states
    assert_same_as_server(server, run_id, seen)


async def test_events_the_server_no_longer_holds_arrive_as_one_gap(server: RuntimeServer) -> None:
    # Dockrion's memory backend keeps the last 1000 events of a run: 520 words make 1044
    run_id = new_run_id()
    await start_run(server.url, {"text": words(520)}, run_id, api_key=API_KEY)
    server.wait_status(run_id, "completed")
    seen = await collect(server.url, run_id)
    gap = seen[0]
    assert isinstance(gap, GapEvent)
    assert (gap.from_sequence, gap.to_sequence) == (1, 44)
    assert [e.sequence for e in seen[1:]] == list(range(45, 1045))
    assert seen[-1].type == "complete"


# -- the live view ------------------------------------------------------------------------------


def test_a_view_of_a_server_run_shows_every_event_once(
    server: RuntimeServer, engine: Engine
) -> None:
    run_id = new_run_id()
    engine.run(start_run(server.url, {"text": words(20), "pause": 0.02}, run_id, api_key=API_KEY))
    view = RunView(run_id, engine=engine, source=ServerSource(server.url, api_key=API_KEY))
    assert view.backend == f"dockrion server {server.url}"
    assert view.can_cancel
    assert view.wait(60) == "complete"
    wait_until(lambda: view.connection == "closed")
    assert view.note == "run finished (complete)"
    assert_same_as_server(server, run_id, view.events)
    view.close()


def test_the_view_shows_reconnecting_while_the_link_is_down(
    server: RuntimeServer, proxy: TcpProxy, engine: Engine
) -> None:
    run_id = new_run_id()
    engine.run(start_run(server.url, {"text": words(60), "pause": 0.03}, run_id, api_key=API_KEY))
    view = RunView(run_id, engine=engine, source=ServerSource(proxy.url, api_key=API_KEY))
    connections: list[str] = []
    view.observe(lambda change: connections.append(change["new"]), names=["connection"])
    wait_until(lambda: len(view.events) >= 10)
    proxy.refuse()
    wait_until(lambda: view.connection == "reconnecting")
    proxy.restore()
    assert view.wait(60) == "complete"
    assert "reconnecting" in connections
    assert connections[connections.index("reconnecting") + 1] in ("live", "replay")
    assert_same_as_server(server, run_id, view.events)
    view.close()


def test_a_server_view_keeps_following_when_the_backend_is_switched(
    server: RuntimeServer, engine: Engine
) -> None:
    run_id = new_run_id()
    engine.run(start_run(server.url, {"text": words(30), "pause": 0.02}, run_id, api_key=API_KEY))
    view = RunView(run_id, engine=engine, source=ServerSource(server.url, api_key=API_KEY))
    wait_until(lambda: len(view.events) >= 3)
    engine.use({"backend": "memory"})
    assert view.wait(60) == "complete"
    assert_same_as_server(server, run_id, view.events)
    view.close()


def test_view_cancel_asks_the_server_and_the_view_ends_cancelled(
    server: RuntimeServer, engine: Engine
) -> None:
    run_id = new_run_id()
    engine.run(start_run(server.url, {"text": words(80), "pause": 0.03}, run_id, api_key=API_KEY))
    view = RunView(run_id, engine=engine, source=ServerSource(server.url, api_key=API_KEY))
    wait_until(lambda: len(view.events) >= 3)
    assert view.cancel(reason="from python") == {"run_id": run_id, "status": "cancelled"}
    assert view.wait(30) == "cancelled"
    wait_until(lambda: not view.following)
    assert view.events[-1].type == "cancelled"
    assert [e.sequence for e in view.events] == list(range(1, len(view.events) + 1))
    view.close()


def test_a_view_of_the_bus_has_no_cancel(engine: Engine) -> None:
    view = RunView("bus-run", engine=engine)
    assert not view.can_cancel
    with pytest.raises(ValueError, match="cannot cancel"):
        view.cancel()
    view.close()


@pytest.fixture
def page() -> Iterator[Any]:
    require(chromium_available(), "headless Chromium (/usr/bin/chromium + playwright) missing")
    with serve_harness() as url, browser_context() as context:
        pg = context.new_page()
        errors = open_harness(pg, url)
        yield pg
        assert errors == []


@pytest.mark.browser
def test_the_views_cancel_button_cancels_the_run_on_the_server(
    server: RuntimeServer, engine: Engine, page: Any
) -> None:
    run_id = new_run_id()
    engine.run(start_run(server.url, {"text": words(200), "pause": 0.03}, run_id, api_key=API_KEY))
    view = ForwardingRunView(
        run_id, engine=engine, source=ServerSource(server.url, api_key=API_KEY)
    )
    mid = create_view(page, view.initial)
    root = root_selector(mid)
    pump_outbox(page, mid, view, until=lambda: page.evaluate("(id) => H.records(id)", mid) >= 5)
    button = page.locator(f"{root} .drnb-cancel")
    expect(button).to_be_visible()
    expect(button).to_have_text("cancel run")
    button.click()
    expect(button).to_be_disabled()
    pump_outbox(page, mid, view, until=lambda: view.status == "cancelled" and not view.following)
    expect(page.locator(f"{root} .drnb-badge")).to_have_text("cancelled")
    expect(button).to_be_hidden()
    last = view.events[-1]
    assert last.type == "cancelled"
    stored = [d for d in server.stored_events(run_id) if d["type"] == "cancelled"]
    assert [d["sequence"] for d in stored] == [last.sequence]
    expect(page.locator(f"{root} .drnb-box-cancelled .drnb-box-title")).to_have_text("Cancelled")
    view.close()


def test_a_view_without_a_cancelling_source_shows_no_button(page: Any, engine: Engine) -> None:
    view = ForwardingRunView("bus-run-2", engine=engine)
    mid = create_view(page, view.initial)
    expect(page.locator(f"{root_selector(mid)} .drnb-cancel")).to_be_hidden()
    view.close()


# -- the Python API: watch(server=...), start_server_run, cancel_server_run -----------------


def test_watch_with_server_follows_the_servers_run(server: RuntimeServer, engine: Engine) -> None:
    run_id = start_server_run(
        server.url, {"text": words(12), "pause": 0.01}, api_key=API_KEY, engine=engine
    )
    view = watch(run_id, server=server.url, api_key=API_KEY, display=False, engine=engine)
    assert view.backend == f"dockrion server {server.url}"
    assert view.wait(60) == "complete"
    assert_same_as_server(server, run_id, view.events)
    view.close()


def test_watch_with_server_fails_at_once_for_a_run_the_server_does_not_know(
    server: RuntimeServer, engine: Engine
) -> None:
    with pytest.raises(RunNotFoundError, match="has no run 'never-started'"):
        watch("never-started", server=server.url, api_key=API_KEY, display=False, engine=engine)
    with pytest.raises(ServerUnreachableError):
        watch("r1", server=f"http://127.0.0.1:{free_port()}", display=False, engine=engine)


def test_cancel_server_run_ends_a_watched_run(server: RuntimeServer, engine: Engine) -> None:
    run_id = start_server_run(
        server.url, {"text": words(80), "pause": 0.03}, api_key=API_KEY, engine=engine
    )
    view = watch(run_id, server=server.url, api_key=API_KEY, display=False, engine=engine)
    wait_until(lambda: len(view.events) >= 3)
    answer = cancel_server_run(server.url, run_id, reason="test", api_key=API_KEY, engine=engine)
    assert answer["status"] == "cancelled"
    assert view.wait(30) == "cancelled"
    view.close()


# -- %dockrion -------------------------------------------------------------------------------


@pytest.fixture
def ip(ipython: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's IPython shell with the magics, a fresh engine and the server's API key in
    DOCKRION_API_KEY (where ``%dockrion`` reads it, as the server does)."""
    shell = ipython
    shell.run_line_magic("load_ext", "dockrion_nb")
    reset_engine()
    monkeypatch.setenv("DOCKRION_API_KEY", API_KEY)
    yield shell
    reset_engine()


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The views the magics display, captured at the API's display seam."""
    seen: list[Any] = []
    monkeypatch.setattr(dockrion_nb.api, "_display", seen.append)
    return seen


def test_dockrion_run_starts_a_run_and_watches_it(
    server: RuntimeServer, ip: Any, shown: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = new_run_id()
    text = words(10)
    ip.run_line_magic("dockrion", f'run {server.url} \'{{"text": "{text}"}}\' --run-id {run_id}')
    assert capsys.readouterr().out == f"started run {run_id} on {server.url}\n"
    (view,) = shown
    assert isinstance(view, RunView) and view.run_id == run_id
    assert view.wait(60) == "complete"
    assert_same_as_server(server, run_id, view.events)
    view.close()


def test_dockrion_run_no_watch_only_starts_it(
    server: RuntimeServer, ip: Any, shown: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("dockrion", f'run {server.url} \'{{"text": "a b"}}\' --no-watch')
    run_id = capsys.readouterr().out.split()[2]
    assert shown == []
    assert server.wait_status(run_id, "completed") == "completed"


def test_dockrion_attach_shows_a_runs_view(
    server: RuntimeServer, ip: Any, shown: list[Any]
) -> None:
    run_id = new_run_id()
    get_engine().run(start_run(server.url, {"text": words(5)}, run_id))
    server.wait_status(run_id, "completed")
    ip.run_line_magic("dockrion", f"attach {server.url} {run_id} --from 3")
    (view,) = shown
    assert view.wait(30) == "complete"
    assert [e.sequence for e in view.events] == list(range(3, 15))
    view.close()


def test_dockrion_cancel_cancels_a_watched_run(
    server: RuntimeServer, ip: Any, shown: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = new_run_id()
    get_engine().run(start_run(server.url, {"text": words(80), "pause": 0.03}, run_id))
    ip.run_line_magic("dockrion", f"attach {server.url} {run_id}")
    (view,) = shown
    wait_until(lambda: len(view.events) >= 3)
    ip.run_line_magic("dockrion", f"cancel {server.url} {run_id} --reason 'seen enough'")
    assert capsys.readouterr().out == f"run {run_id}: cancel requested; the server says cancelled\n"
    assert view.wait(30) == "cancelled"
    assert view.events[-1].reason == "seen enough"  # type: ignore[attr-defined]
    view.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("attach URL nope-run", "the Dockrion server at URL has no run 'nope-run'"),
        ("cancel URL nope-run", "has no run 'nope-run'"),
        ("attach DEAD r1", "cannot reach the Dockrion server at DEAD"),
        ("run URL 'not json'", "the run's input is not JSON"),
        ("run URL '[1, 2]'", "the run's input must be a JSON object"),
        ("run URL '{}'", "(422: body.text: Field required)"),
        ("attach URL r1 --reason x", "--reason: not an option of %dockrion attach"),
        ("attach URL r1 --api-key-env NO_SUCH_VAR_X", "NO_SUCH_VAR_X: that variable is not set"),
        ("attach ftp://host r1", "starts with http:// or https://"),
        ("attach URL 'bad id'", "invalid run id 'bad id'"),
        ("detach URL r1", "invalid choice: 'detach'"),
    ],
)
def test_dockrion_errors_are_one_line(
    server: RuntimeServer, ip: Any, shown: list[Any], args: str, message: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = args.replace("URL", server.url).replace("DEAD", dead)
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("dockrion", line)
    text = str(caught.value)
    assert message.replace("URL", server.url).replace("DEAD", dead) in text
    assert "\n" not in text
    assert shown == []


def test_dockrion_without_the_api_key_says_how_to_give_it(
    server: RuntimeServer, ip: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKRION_API_KEY")
    with pytest.raises(UsageError, match=r"refused reading the run \(401: .*DOCKRION_API_KEY"):
        ip.run_line_magic("dockrion", f"attach {server.url} r1")


def test_dockrion_masks_credentials_in_the_url(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("dockrion", f"attach {url} r1")
    assert "s3cret-pw" not in str(caught.value) and "alice:***@" in str(caught.value)


def test_dockrion_help_shows_every_action_and_option(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell("%dockrion?")
    out = capsys.readouterr().out
    assert "%dockrion [--run-id RUN_ID]" in out
    for needed in ("{attach,run,cancel}", "--api-key-env", "--no-watch", "--reason", "--from"):
        assert needed in out


# -- dockrion-nb tail --server ----------------------------------------------------------------


def cli(argv: list[str], environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"DOCKRION_API_KEY": API_KEY} if environ is None else environ
    code = cli_main(argv, environ=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_tail_server_prints_every_event_and_exits_0(server: RuntimeServer) -> None:
    run_id = new_run_id()
    asyncio.run(start_run(server.url, {"text": words(6), "pause": 0.01}, run_id, api_key=API_KEY))
    proc = subprocess.run(
        [sys.executable, "-m", "dockrion_nb", "tail", run_id, "--server", server.url, "--json"],
        env={**os.environ, "DOCKRION_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"following run {run_id} on {server.url} (Ctrl-C to stop)\n"
    printed = [parse_event(line) for line in proc.stdout.splitlines()]
    assert_same_as_server(server, run_id, printed)


def test_tail_server_survives_a_dropped_connection(server: RuntimeServer, proxy: TcpProxy) -> None:
    run_id = new_run_id()
    asyncio.run(start_run(server.url, {"text": words(80), "pause": 0.03}, run_id, api_key=API_KEY))
    streaming = threading.Event()

    def cut_once_streaming() -> None:
        deadline = time.monotonic() + 30
        while not any("/events?" in r for r in proxy.requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        streaming.set()
        proxy.cut()

    cutter = threading.Thread(target=cut_once_streaming, daemon=True)
    cutter.start()
    code, out, _ = cli(["tail", run_id, "--server", proxy.url, "--json"])
    cutter.join(30)
    assert code == 0 and streaming.is_set()
    assert len([r for r in proxy.requests if "/events?" in r]) >= 2
    assert_same_as_server(server, run_id, [parse_event(line) for line in out.splitlines()])


def test_tail_server_of_a_cancelled_run_exits_1(server: RuntimeServer) -> None:
    run_id = new_run_id()
    asyncio.run(start_run(server.url, {"text": words(80), "pause": 0.03}, run_id, api_key=API_KEY))
    server.wait_status(run_id, "running")
    threading.Timer(
        0.5, lambda: asyncio.run(cancel_run(server.url, run_id, api_key=API_KEY))
    ).start()
    code, out, _ = cli(["tail", run_id, "--server", server.url])
    assert code == 1
    assert out.splitlines()[-1].split()[2] == "cancelled"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["tail", "nope-run", "--server", "URL"],
            "the Dockrion server at URL has no run 'nope-run'",
        ),
        (["tail", "r1", "--server", "DEAD"], "cannot reach the Dockrion server at DEAD"),
        (["tail", "r1", "--server", "URL", "--url", "redis://x"], "--url: a backend option"),
        (["tail", "r1", "--server", "URL", "--api-key-env", "NO_SUCH_X"], "NO_SUCH_X: that"),
        (["tail", "r1", "--server", "URL", "--from", "0"], "--from must be 1 or more, not 0"),
    ],
)
def test_tail_server_errors_are_one_line_exit_2(
    server: RuntimeServer, argv: list[str], message: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    argv = [a.replace("URL", server.url).replace("DEAD", dead) for a in argv]
    code, out, err = cli(argv)
    assert code == 2 and out == ""
    expected = message.replace("URL", server.url).replace("DEAD", dead)
    assert err.startswith("dockrion-nb: error: ") and expected in err
    assert err.count("\n") == 1


def test_tail_server_masks_credentials_and_needs_the_key(server: RuntimeServer) -> None:
    url = server.url.replace("http://", "http://alice:s3cret-pw@")
    code, _, err = cli(["tail", "r1", "--server", url], environ={})
    assert code == 2
    assert "401" in err and "DOCKRION_API_KEY" in err
    assert "s3cret-pw" not in err and "alice:***@" in err


# -- cancelling -------------------------------------------------------------------------------


async def test_cancel_ends_the_followed_run_with_cancelled(server: RuntimeServer) -> None:
    run_id = new_run_id()
    await start_run(server.url, {"text": words(80), "pause": 0.03}, run_id, api_key=API_KEY)
    seen: list[BaseEvent] = []
    async for event in follow(server.url, run_id, api_key=API_KEY):
        seen.append(event)
        if len(seen) == 5:
            answer = await cancel_run(server.url, run_id, reason="enough", api_key=API_KEY)
            assert answer == {"run_id": run_id, "status": "cancelled"}
    assert seen[-1].type == "cancelled"
    assert seen[-1].reason == "enough"  # type: ignore[attr-defined]
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
    # Dockrion does not stop the agent: it runs on and ends "completed" on the server
    assert server.wait_status(run_id, "completed") == "completed"
    with pytest.raises(ServerRequestError, match=r"refused cancelling the run \(400: .*finished"):
        await cancel_run(server.url, run_id, api_key=API_KEY)


# -- errors -------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachableError, match=rf"cannot reach the Dockrion server at {url}"):
        await get_run(url, "r1")
    with pytest.raises(
        ServerUnreachableError, match="check the URL and that the server is running"
    ):
        await collect(url, "r1")


async def test_an_unknown_run_is_run_not_found(server: RuntimeServer) -> None:
    with pytest.raises(RunNotFoundError, match=r"has no run 'nope-1' \(Run 'nope-1' not found\)"):
        await get_run(server.url, "nope-1", api_key=API_KEY)
    with pytest.raises(RunNotFoundError, match="has no run 'nope-2'"):
        await collect(server.url, "nope-2")
    with pytest.raises(RunNotFoundError):
        await cancel_run(server.url, "nope-3", api_key=API_KEY)


async def test_a_missing_api_key_is_refused_with_a_hint(
    server: RuntimeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKRION_API_KEY", raising=False)
    with pytest.raises(ServerRequestError, match=r"refused starting a run \(401: API key required"):
        await start_run(server.url, {"text": "a"})
    with pytest.raises(ServerRequestError, match="DOCKRION_API_KEY"):
        await collect(server.url, "any-run", api_key="wrong")
    monkeypatch.setenv("DOCKRION_API_KEY", API_KEY)  # the default, as the server reads it
    run_id = new_run_id()
    assert (await start_run(server.url, {"text": "a"}, run_id))["run_id"] == run_id


async def test_input_the_agent_rejects_is_the_servers_reason(server: RuntimeServer) -> None:
    with pytest.raises(ServerRequestError, match=r"\(422: body.text: Field required\)"):
        await start_run(server.url, {"pause": 1}, api_key=API_KEY)
    with pytest.raises(ValueError, match="JSON object"):
        await start_run(server.url, ["text"], api_key=API_KEY)  # type: ignore[arg-type]


@pytest.fixture
def other_http_server() -> Iterator[str]:
    """A real HTTP server that is not Dockrion (Python's own, serving an empty folder)."""
    handler = http.server.SimpleHTTPRequestHandler
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def test_a_server_that_is_not_dockrion_is_named_so(other_http_server: str) -> None:
    with pytest.raises(NotADockrionServerError, match="does not serve Dockrion's runs API"):
        await get_run(other_http_server, "r1")
    with pytest.raises(NotADockrionServerError, match="does not serve Dockrion's runs API"):
        await collect(other_http_server, "r1")


async def test_credentials_in_the_url_are_masked_in_errors() -> None:
    url = f"http://alice:s3cret-pw@127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachableError) as caught:
        await get_run(url, "r1")
    assert "s3cret-pw" not in str(caught.value)
    assert "http://alice:***@127.0.0.1:" in str(caught.value)
    with pytest.raises(ValueError) as bad:
        follow("ftp://bob:hunter2@host/", "r1")
    assert "hunter2" not in str(bad.value) and "ftp://bob:***@host" in str(bad.value)


async def test_credentials_in_the_url_still_reach_the_server(server: RuntimeServer) -> None:
    run_id = new_run_id()
    url = server.url.replace("http://", "http://alice:s3cret-pw@")
    await start_run(url, {"text": words(2)}, run_id, api_key=API_KEY)
    seen = await collect(url, run_id)
    assert [e.type for e in seen] == expected_types(2)


# -- last: restarts the module's server --------------------------------------------------------


async def test_a_restarted_server_that_forgot_the_run_is_one_clear_error(
    server: RuntimeServer,
) -> None:
    """Dockrion keeps runs in its process memory: the follower rides out the outage (the
    server's port refuses connections meanwhile), then says the run is gone."""
    run_id = new_run_id()
    await start_run(server.url, {"text": words(200), "pause": 0.03}, run_id, api_key=API_KEY)
    states: list[str] = []
    seen: list[BaseEvent] = []
    restarting: asyncio.Task[None] | None = None
    with pytest.raises(RunNotFoundError) as caught:
        async for event in follow(server.url, run_id, api_key=API_KEY, on_state=states.append):
            seen.append(event)
            if len(seen) == 10:
                restarting = asyncio.create_task(asyncio.to_thread(server.restart))
    assert restarting is not None
    await restarting
    assert f"no longer knows run {run_id} (restarted?" in str(caught.value)
    assert f"events up to #{len(seen)} arrived" in str(caught.value)
    assert "reconnecting" in states and states[-1] == "closed"
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
