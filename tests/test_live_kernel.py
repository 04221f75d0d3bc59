"""In a real kernel: the live view updates while another cell is still running.

A cell shows ``%watch``; the next cell is a ``%%publish`` run that sleeps between events. The
widget's comm messages must arrive on IOPub between that cell's ``busy`` and ``idle`` status
messages: the kernel is blocked in ``time.sleep`` and the engine thread still delivers. Order on
the one IOPub socket is arrival order, so the check needs no clocks. The same holds when the
events come from another process over Redis, and a kernel interrupt ends a traced cell with a
``cancelled`` event.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import redis_cleanup

pytestmark = pytest.mark.slow

jupyter_client = pytest.importorskip("jupyter_client")


class Kernel:
    """A real ipykernel driven over ZMQ; every IOPub message is kept in arrival order."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.connection_file = str(workdir / "kernel.json")
        self.km.start_kernel(env=env, cwd=str(workdir))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.log: list[dict[str, Any]] = []

    def _next(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the kernel did not answer in time")
        msg: dict[str, Any] = self.kc.get_iopub_msg(timeout=remaining)
        self.log.append(msg)
        return msg

    def submit(self, code: str) -> str:
        msg_id: str = self.kc.execute(code)
        return msg_id

    def wait_for(self, msg_id: str, msg_type: str, timeout: float = 60, **content: Any) -> None:
        """Read IOPub until a message of ``msg_type`` for cell ``msg_id`` matches ``content``."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] != msg_type:
                continue
            if all(msg["content"].get(k) == v for k, v in content.items()):
                return

    def run(self, code: str, timeout: float = 60) -> dict[str, Any]:
        """Execute a cell, read IOPub until it is idle, and return its execute_reply."""
        msg_id = self.submit(code)
        self.wait_for(msg_id, "status", timeout, execution_state="idle")
        return self.reply(msg_id, timeout)

    def reply(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("no execute_reply") from None
            if msg["parent_header"].get("msg_id") == msg_id:
                content: dict[str, Any] = msg["content"]
                return content

    def index(self, msg_id: str, state: str) -> int:
        for i, msg in enumerate(self.log):
            if (
                msg["msg_type"] == "status"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["content"]["execution_state"] == state
            ):
                return i
        raise AssertionError(f"no {state} status for {msg_id}")

    def stdout(self, msg_id: str) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.log
            if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
        )

    def view_comm(self, run_id: str) -> str:
        """The comm id of the RunView widget of ``run_id``."""
        for msg in self.log:
            if msg["msg_type"] == "comm_open":
                state = msg["content"].get("data", {}).get("state", {})
                if state.get("run_id") == run_id:
                    comm_id: str = msg["content"]["comm_id"]
                    return comm_id
        raise AssertionError(f"no widget was opened for run {run_id}")

    def comm_msgs(self, comm_id: str, start: int = 0, stop: int | None = None) -> list[Any]:
        return [
            m
            for m in self.log[start:stop]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
        ]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    k = Kernel(tmp_path, env)
    try:
        yield k
    finally:
        k.close()


def event_sequences(msgs: list[Any]) -> list[int]:
    """Sequences carried by the widget's custom messages (event batches)."""
    seqs: list[int] = []
    for msg in msgs:
        data = msg["content"]["data"]
        if data.get("method") != "custom":
            continue
        payload = data.get("content", {})
        if payload.get("kind") == "events":
            seqs.extend(e["sequence"] for e in payload["events"] if e.get("sequence"))
    return seqs


def view_status_updates(msgs: list[Any]) -> list[str]:
    out = []
    for msg in msgs:
        data = msg["content"]["data"]
        if data.get("method") == "update" and "status" in data.get("state", {}):
            out.append(data["state"]["status"])
    return out


def test_live_view_updates_while_the_publishing_cell_is_busy(kernel: Kernel) -> None:
    reply = kernel.run("%load_ext dockrion_nb\n%watch live-1")
    assert reply["status"] == "ok", reply
    comm = kernel.view_comm("live-1")

    cell = kernel.submit(
        "%%publish live-1 --agent sleeper\n"
        "import time\n"
        "for i in range(8):\n"
        "    ctx.sync_emit_progress('work', (i + 1) / 8, f'step {i}')\n"
        "    time.sleep(0.5)\n"
        "'slept'\n"
    )
    kernel.wait_for(cell, "status", execution_state="idle")
    assert kernel.reply(cell)["status"] == "ok"
    busy, idle = kernel.index(cell, "busy"), kernel.index(cell, "idle")

    during = kernel.comm_msgs(comm, busy, idle)
    seqs_during = event_sequences(during)
    # Events reached the front end in several batches while the cell was still sleeping.
    assert len([m for m in during if m["content"]["data"].get("method") == "custom"]) >= 3
    assert seqs_during[:3] == [1, 2, 3]  # started, then the first progress events
    assert seqs_during == sorted(seqs_during) and len(set(seqs_during)) == len(seqs_during)
    assert "running" in view_status_updates(during)

    # The rest (the last progress event, complete) follows; nothing is lost or doubled.
    kernel.run("import time; time.sleep(0.5)")
    seqs_all = event_sequences(kernel.comm_msgs(comm))
    assert seqs_all == list(range(1, 11))
    assert view_status_updates(kernel.comm_msgs(comm))[-1] == "complete"

    # Top-level await in a traced cell, inside the kernel whose own loop is running.
    cell = kernel.submit(
        "%%publish live-await\nimport asyncio\nawait asyncio.sleep(0.05)\n{'ok': True}\n"
    )
    kernel.wait_for(cell, "status", execution_state="idle")
    assert kernel.reply(cell)["status"] == "ok"
    results = [
        m["content"]["data"]["text/plain"]
        for m in kernel.log
        if m["msg_type"] == "execute_result" and m["parent_header"].get("msg_id") == cell
    ]
    assert results == ["{'ok': True}"]


def test_live_view_follows_another_process_over_redis(kernel: Kernel, redis_url: str) -> None:
    run_id = f"live-x-{os.getpid()}-{int(time.time())}"
    try:
        reply = kernel.run(
            f"%load_ext dockrion_nb\n%stream_backend redis --url {redis_url}\n%watch {run_id}"
        )
        assert reply["status"] == "ok", reply
        comm = kernel.view_comm(run_id)
        # The kernel is blocked in subprocess.run while another process publishes the run.
        cell = kernel.submit(
            "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-m', 'dockrion_nb', 'demo', '{run_id}', "
            f"'--url', {redis_url!r}, '--speed', '2', '--quiet'], check=True)\n"
        )
        kernel.wait_for(cell, "status", execution_state="idle")
        assert kernel.reply(cell)["status"] == "ok"
        busy, idle = kernel.index(cell, "busy"), kernel.index(cell, "idle")
        during = event_sequences(kernel.comm_msgs(comm, busy, idle))
        assert len(during) >= 10 and during[0] == 1
        kernel.run("import time; time.sleep(0.5)")
        seqs = event_sequences(kernel.comm_msgs(comm))
        assert seqs == sorted(set(seqs)) and seqs[-1] >= 30
        assert view_status_updates(kernel.comm_msgs(comm))[-1] == "complete"
    finally:
        redis_cleanup(redis_url, run_id)


def display_ids(kernel: Kernel, msg_id: str) -> list[str]:
    """The display ids of what cell ``msg_id`` displayed."""
    return [
        m["content"]["transient"]["display_id"]
        for m in kernel.log
        if m["msg_type"] == "display_data"
        and m["parent_header"].get("msg_id") == msg_id
        and m["content"].get("transient", {}).get("display_id")
    ]


def display_updates(kernel: Kernel, display_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in kernel.log
        if m["msg_type"] == "update_display_data"
        and m["content"].get("transient", {}).get("display_id") == display_id
    ]


def test_the_static_view_becomes_final_when_the_run_ends(kernel: Kernel) -> None:
    """A view shown before its run ends: the static HTML in its output (what GitHub and
    nbviewer show of a saved notebook) is replaced by the final view when the run ends, with no
    call, under the cell then running (so nbclient records it) and before ``wait()`` returns.
    A display made after the end is final already and is left alone."""
    show = kernel.submit("from dockrion_nb.widget import RunView\nw = RunView('auto-static')\nw")
    kernel.wait_for(show, "status", execution_state="idle")
    [shown] = display_ids(kernel, show)
    cell = kernel.submit(
        "from dockrion_nb.engine import get_engine\n"
        "ctx = get_engine().context('auto-static', agent_name='bot')\n"
        "ctx.sync_emit_started()\n"
        "for word in ['<b>final', ' answer</b>']:\n"
        "    ctx.sync_emit_token(word)\n"
        "ctx.sync_emit_complete(latency_seconds=0.5)\n"
        "print('waited', w.wait(10))\n"
    )
    kernel.wait_for(cell, "status", execution_state="idle")
    assert kernel.stdout(cell) == "waited complete\n"
    [update] = display_updates(kernel, shown)
    data = update["content"]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data  # the live view stays
    assert "auto-static</b> &middot; complete &middot; 4 events" in data["text/html"]
    assert "&lt;b&gt;final answer&lt;/b&gt;" in data["text/html"]
    assert "complete, 4 events" in data["text/plain"]
    assert update["parent_header"]["msg_id"] == cell
    printed = next(
        i
        for i, m in enumerate(kernel.log)
        if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
    )
    assert kernel.index(cell, "busy") < kernel.log.index(update) < printed

    again = kernel.submit("display(w)")
    kernel.wait_for(again, "status", execution_state="idle")
    [later] = display_ids(kernel, again)
    kernel.run("import time; time.sleep(0.5)")
    assert display_updates(kernel, later) == []
    assert len(display_updates(kernel, shown)) == 1


@pytest.mark.parametrize(
    ("run_id", "body"),
    [
        ("int-sync", "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\n"),
        (
            "int-async",
            "import asyncio\nprint('sleeping', flush=True)\nawait asyncio.sleep(30)\n",
        ),
    ],
)
def test_interrupting_a_traced_cell_emits_cancelled(kernel: Kernel, run_id: str, body: str) -> None:
    assert kernel.run("%load_ext dockrion_nb")["status"] == "ok"
    cell = kernel.submit(f"%%publish {run_id}\n{body}")
    kernel.wait_for(cell, "stream", text="sleeping\n")
    kernel.km.interrupt_kernel()
    kernel.wait_for(cell, "status", execution_state="idle")
    reply = kernel.reply(cell)
    assert (reply["status"], reply.get("ename")) == ("error", "KeyboardInterrupt")
    check = kernel.submit(
        "import json, dockrion_nb\n"
        f"print(json.dumps([e.type for e in dockrion_nb.replay('{run_id}', as_='events')]))\n"
    )
    kernel.wait_for(check, "status", execution_state="idle")
    assert json.loads(kernel.stdout(check)) == ["started", "cancelled"]


def test_python_executable_is_the_test_one(kernel: Kernel) -> None:
    """The kernel imports this checkout's dockrion_nb (not some other install)."""
    cell = kernel.submit("import dockrion_nb, sys; print(dockrion_nb.__file__); print(sys.prefix)")
    kernel.wait_for(cell, "status", execution_state="idle")
    path, prefix = kernel.stdout(cell).split()
    assert Path(path).resolve().parent == (Path(__file__).parents[1] / "dockrion_nb").resolve()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
