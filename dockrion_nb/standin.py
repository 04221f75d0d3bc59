"""A loopback stand-in for OpenAI's Chat Completions API: an LLM for tutorials, with no key.

``OpenAIStandIn`` is a small HTTP server on 127.0.0.1 (a free port) in a daemon thread of this
process. ``POST /v1/chat/completions`` gets its scripted ``reply``: streamed (``stream: true``)
word by word as the documented SSE chunks (a role chunk, one ``chat.completion.chunk`` per
word, a chunk with ``finish_reason: "stop"``, a usage chunk when the request asks with
``stream_options: {"include_usage": true}``, then ``data: [DONE]``), or else as one
``chat.completion``. Any other path is a 404 in OpenAI's error shape. Token counts are words,
a stand-in's estimate. Point the real ``openai`` client at ``base_url`` to try an integration
offline; ``stop()`` (or leaving its ``with`` block) shuts the server and its thread down.

Standard library only: importing this module imports no SDK.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

DEFAULT_REPLY = "Hello from the stand-in: no API key, no network, only 127.0.0.1."
CHAT_PATH = "/v1/chat/completions"
CREATED = 1_700_000_000  # a fixed `created` time, so replies are the same every run

log = logging.getLogger("dockrion_nb.standin")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (the SDK closing a kept-alive connection) is no error;
        anything else is logged, not printed to the notebook's stderr as socketserver would."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        log.exception("the OpenAI stand-in failed to answer %s", client_address)


class OpenAIStandIn:
    """A scripted OpenAI chat-completions server on loopback; started when constructed.

    ``delay`` is the pause before each streamed word, so a live view visibly fills in.
    """

    def __init__(self, reply: str = DEFAULT_REPLY, *, delay: float = 0.05) -> None:
        if not reply.strip():
            raise ValueError("reply must have at least one word")
        if delay < 0:
            raise ValueError(f"delay must be 0 or more seconds, not {delay}")
        self.reply = reply
        self.delay = delay
        self.requests = 0
        """How many chat-completion requests it has answered."""
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(
            target=self._httpd.serve_forever, name="openai-standin", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def words(self) -> list[str]:
        """The reply as it is streamed: each word with the space before it."""
        parts = self.reply.split(" ")
        return [parts[0], *(" " + p for p in parts[1:])]

    def stop(self) -> None:
        """Stop serving, close the port and wait for the server's thread; idempotent."""
        if self.thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self.thread.join(5)

    def __enter__(self) -> OpenAIStandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"OpenAIStandIn({self.base_url}, {state}, {self.requests} requests)"

    # -- the documented shapes ----------------------------------------------------------------

    def completion(self, model: str, prompt_tokens: int) -> dict[str, Any]:
        """The whole reply as one ``chat.completion`` object."""
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(prompt_tokens),
        }

    def chunks(self, model: str, prompt_tokens: int, include_usage: bool) -> list[dict[str, Any]]:
        """The reply as the ``chat.completion.chunk`` objects of a stream, in order."""

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": word}) for word in self.words()]
        out.append(chunk({}, "stop"))
        if include_usage:
            out.append({**chunk({}), "choices": [], "usage": self.usage(prompt_tokens)})
        return out

    def usage(self, prompt_tokens: int) -> dict[str, int]:
        completion = len(self.words())
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }


def prompt_words(body: Any) -> int:
    """The words in a request's messages (text content only): the stand-in's prompt tokens."""
    messages = body.get("messages") if isinstance(body, dict) else None
    count = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
    return count


def _handler(standin: OpenAIStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a notebook's stderr is for real problems

        def do_GET(self) -> None:
            self._read_body()
            self._json(404, _error(f"no such endpoint: GET {self.path}", "not_found"))

        def do_POST(self) -> None:
            raw = self._read_body()
            if self.path.partition("?")[0] != CHAT_PATH:
                self._json(404, _error(f"no such endpoint: POST {self.path}", "not_found"))
                return
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._json(400, _error("the body must be a JSON object", "invalid_request_error"))
                return
            standin.requests += 1
            model = str(body.get("model") or "standin")
            prompt = prompt_words(body)
            if body.get("stream") is True:
                options = body.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                self._stream(standin.chunks(model, prompt, usage))
            else:
                self._json(200, standin.completion(model, prompt))

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, chunks: list[dict[str, Any]]) -> None:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [json.dumps(c) for c in chunks] + ["[DONE]"]
            try:
                for index, text in enumerate(events):
                    if 0 < index <= len(standin.words()) and standin.delay:
                        time.sleep(standin.delay)  # before each word
                    data = f"data: {text}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client closed the stream early

    return Handler


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


__all__ = ["DEFAULT_REPLY", "OpenAIStandIn", "prompt_words"]
