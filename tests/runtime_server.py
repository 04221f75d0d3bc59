"""The real Dockrion runtime (``dockrion_runtime`` from ``dockrion==0.0.3``) on a loopback port,
serving a small agent of the tests' own.

The agent is a LangGraph graph (loaded by Dockrion's LangGraph adapter from the Dockfile's
``entrypoint``) whose nodes emit through Dockrion's own ``StreamContext``
(``get_current_context()``, which the adapter sets in the thread running the graph): a
``progress`` event per word of its input's ``text``, then a ``token`` per word, each after
``pause`` seconds; the adapter adds a ``step`` after each node, the runtime ``started`` and
``complete``. So a run of n words has 2n + 4 events. The Dockfile asks for async runs on the
memory backend and API-key auth (the key is in ``DOCKRION_API_KEY``, as Dockrion reads it).

The server is a subprocess (uvicorn) started with a bounded wait for ``/ready`` and stopped by
its PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse
from servers import free_port

API_KEY = "test-key-0123456789abcdef"
STARTUP_TIMEOUT = 90.0

AGENT = '''\
"""The tests' agent: two LangGraph nodes that emit through Dockrion's StreamContext."""
import time
from typing import TypedDict

from dockrion_events import get_current_context
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    text: str
    pause: float
    words: list
    answer: str


def plan(state):
    ctx = get_current_context()
    words = state["text"].split()
    for i in range(len(words)):
        ctx.sync_emit_progress("plan", (i + 1) / len(words), f"word {i + 1} of {len(words)}")
        time.sleep(state.get("pause") or 0)
    return {"words": words}


def write(state):
    ctx = get_current_context()
    for word in state["words"]:
        ctx.sync_emit_token(word + " ")
        time.sleep(state.get("pause") or 0)
    return {"answer": " ".join(state["words"])}


def build():
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("write", write)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "write")
    graph.add_edge("write", END)
    return graph.compile()
'''

DOCKFILE = """\
version: "1.0"
agent:
  name: words-agent
  description: the tests' agent
  entrypoint: words_agent:build
  framework: langgraph
io_schema:
  strict: false
  input:
    type: object
    properties:
      text: {type: string}
      pause: {type: number}
    required: [text]
auth:
  mode: api_key
  api_keys:
    env_var: DOCKRION_API_KEY
expose:
  host: 127.0.0.1
  port: 8080
streaming:
  async_runs: true
  backend: memory
"""

SERVE = """\
import sys
from pathlib import Path

import uvicorn

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))

from dockrion_runtime import create_app
from dockrion_sdk.core.loader import load_dockspec

app = create_app(load_dockspec(str(here / "Dockfile.yaml")))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


class RuntimeServer:
    """One Dockrion runtime process serving the tests' agent."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"X-API-Key": API_KEY}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"

    def start(self) -> None:
        (self.workdir / "words_agent.py").write_text(AGENT)
        (self.workdir / "Dockfile.yaml").write_text(DOCKFILE)
        (self.workdir / "serve.py").write_text(SERVE)
        env = {**os.environ, "DOCKRION_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.workdir / "serve.py"), str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Dockrion server exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the Dockrion server was not ready in {STARTUP_TIMEOUT:g} s:\n{self.log_tail()}"
        )

    def restart(self) -> None:
        """Stop the server and start a fresh one on the same port (runs are forgotten)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # -- reading the server's own truth, without the code under test ----------------------------

    def status(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/runs/{run_id}", headers=self.headers, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, run_id: str, *statuses: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = str(self.status(run_id)["status"])
            if status in statuses:
                return status
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} never reached {statuses}")

    def stored_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event the server holds for a finished run, from its own replay."""
        with (
            httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client,
            connect_sse(
                client, "GET", f"/runs/{run_id}/events", params={"from_sequence": 1}
            ) as source,
        ):
            return [json.loads(sse.data) for sse in source.iter_sse()]


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def expected_types(n: int) -> list[str]:
    """The event types of a finished run of n words, in order."""
    return ["started", *["progress"] * n, "step", *["token"] * n, "step", "complete"]
