"""A loopback TCP proxy a test controls: it forwards to a real server and can drop links.

``cut()`` closes every open connection at once (a dropped network link, mid-stream);
``refuse()`` also turns new connections away (accepted, then closed at once) until
``restore()``, as a server that is down would. ``requests`` keeps every HTTP request line
seen from clients, so a test can check where a client resumed.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

REQUEST_LINE = re.compile(rb"(GET|POST|DELETE|PUT|PATCH) (\S+) HTTP/1\.[01]\r\n")


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self.refused = 0
        self.accepted = 0
        self._refusing = False
        self._closed = False
        self._lock = threading.Lock()
        self._links: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            with self._lock:
                self._links.update((client, upstream))
            for src, dst, sniff in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, sniff), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, sniff: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if sniff:
                    for match in REQUEST_LINE.finditer(data):
                        self.requests.append(f"{match[1].decode()} {match[2].decode()}")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._links.discard(sock)
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> int:
        """Close every open connection now; returns how many were open."""
        with self._lock:
            links = list(self._links)
        self._drop(*links)
        return len(links) // 2

    def refuse(self) -> None:
        """Drop every connection and turn new ones away until ``restore()``."""
        self._refusing = True
        self.cut()

    def restore(self) -> None:
        self._refusing = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        self._acceptor.join(2)
        for thread in self._threads:
            thread.join(2)


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
