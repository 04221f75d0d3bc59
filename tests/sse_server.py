"""A loopback HTTP server that answers like the OpenAI and Anthropic APIs, one scripted reply
per request, streaming Server-Sent Events chunk by chunk.

Each streamed chunk can wait on a gate (``gate(timeout) -> bool``) before it is sent: the
tests gate chunk k+1 on the subscriber having seen what chunk k carried, which only an
integration that publishes while the SDK is still reading can satisfy. A gate that times out
is recorded in ``late`` and gating stops, so a non-live implementation fails instead of
hanging.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Gate = Callable[[float], bool]


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event: an optional ``event:`` line, one ``data:`` line, a blank line."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


@dataclass
class Chunk:
    data: bytes
    gate: Gate | None = None


@dataclass
class Reply:
    """One scripted answer: a JSON body, or SSE chunks (``broken``: the connection drops
    before the body ends)."""

    status: int = 200
    json_body: Any = None
    chunks: list[Chunk] = field(default_factory=list)
    broken: bool = False


@dataclass
class Seen:
    method: str
    path: str
    body: Any


class SseServer:
    def __init__(self, gate_timeout: float = 10.0) -> None:
        self.gate_timeout = gate_timeout
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        """The reply when none is queued (the bench serves one reply again and again)."""
        self.requests: list[Seen] = []
        self.late: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="sse-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def expect(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def wait_gate(self, gate: Gate, what: str) -> None:
        if self.late:  # once one gate was missed, stop waiting: the test fails on `late`
            return
        if not gate(self.gate_timeout):
            self.late.append(what)


def _handler(server: SseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            server.requests.append(Seen(self.command, self.path, body))
            reply = server.replies.popleft() if server.replies else server.default
            if reply is None:
                reply = Reply(status=599, json_body={"error": {"message": "no reply scripted"}})
            if not reply.chunks:
                payload = json.dumps(reply.json_body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for index, chunk in enumerate(reply.chunks):
                    if chunk.gate is not None:
                        server.wait_gate(chunk.gate, f"{self.path} chunk {index}")
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk.data), chunk.data))
                    self.wfile.flush()
                if reply.broken:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client closed the stream early

    return Handler


# -- the providers' documented shapes ------------------------------------------------------------
# Each stream builder returns (SSE bytes, how many token events the integration should publish
# for that chunk), so a test can gate every chunk on the tokens of the chunks before it.

Script = list[tuple[bytes, int]]
CREATED = 1_700_000_000


def openai_chat_chunks(
    model: str, tokens: list[str], *, finish: str = "stop", usage: dict[str, int] | None = None
) -> Script:
    """Chat completion chunks as the API streams them: a role chunk, one chunk per token, a
    chunk with the finish reason, the usage chunk (``include_usage``), then ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_1",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": None,
        }

    script: Script = [(sse(chunk({"role": "assistant", "content": ""})), 0)]
    script += [(sse(chunk({"content": token})), 1) for token in tokens]
    script.append((sse(chunk({}, finish)), 1))
    if usage is not None:
        last = {**chunk({}), "choices": [], "usage": openai_usage(**usage)}
        script.append((sse(last), 0))
    script.append((sse("[DONE]"), 0))
    return script


def openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def openai_chat_completion(model: str, text: str, prompt: int, completion: int) -> Any:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": openai_usage(prompt, completion),
    }


def openai_response(
    model: str, text: str | None, status: str, usage: dict[str, int] | None
) -> dict[str, Any]:
    output = []
    if text is not None:
        output = [
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "model": model,
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": None
        if usage is None
        else {
            "input_tokens": usage["input"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["output"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["input"] + usage["output"],
        },
    }


def openai_response_events(model: str, tokens: list[str], usage: dict[str, int]) -> Script:
    """A Responses API stream: created, in_progress, the message item and its text part
    added, one ``response.output_text.delta`` per token, the done events, ``completed``."""
    text = "".join(tokens)
    seq = iter(range(1000))

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    in_progress = openai_response(model, None, "in_progress", None)
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant"}
    part_ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    done_part = {"type": "output_text", "text": text, "annotations": []}
    script: Script = [
        (event("response.created", response=in_progress), 0),
        (event("response.in_progress", response=in_progress), 0),
        (event("response.output_item.added", output_index=0, item={**item, "content": []}), 0),
        (
            event(
                "response.content_part.added",
                **part_ids,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
            0,
        ),
    ]
    script += [
        (event("response.output_text.delta", **part_ids, delta=token, logprobs=[]), 1)
        for token in tokens
    ]
    script += [
        (event("response.output_text.done", **part_ids, text=text, logprobs=[]), 0),
        (event("response.content_part.done", **part_ids, part=done_part), 0),
        (
            event(
                "response.output_item.done",
                output_index=0,
                item={**item, "status": "completed", "content": [done_part]},
            ),
            0,
        ),
        (
            event("response.completed", response=openai_response(model, text, "completed", usage)),
            1,
        ),
    ]
    return script


def anthropic_message(
    model: str, text: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_events(
    model: str,
    tokens: list[str],
    *,
    input_tokens: int,
    output_tokens: int,
    stop_reason: str = "end_turn",
) -> Script:
    """A Messages stream: message_start, content_block_start, a ping, one text_delta per
    token, content_block_stop, message_delta (stop reason, output tokens), message_stop."""

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, **fields}, event=kind)

    start = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    script: Script = [
        (event("message_start", message=start), 0),
        (
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            0,
        ),
        (event("ping"), 0),
    ]
    script += [
        (
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": token}),
            1,
        )
        for token in tokens
    ]
    script += [
        (event("content_block_stop", index=0), 0),
        (
            event(
                "message_delta",
                delta={"stop_reason": stop_reason, "stop_sequence": None},
                usage={"output_tokens": output_tokens},
            ),
            1,
        ),
        (event("message_stop"), 0),
    ]
    return script


def serve_repeating(kind: str, tokens: list[str], urls: Any, stop: Any) -> None:
    """A child process's server (the bench): every request gets the same stream of ``tokens``,
    OpenAI chat chunks or an Anthropic Messages stream; its URL goes to ``urls``."""
    script = (
        openai_chat_chunks("m", tokens)
        if kind == "openai"
        else anthropic_events("m", tokens, input_tokens=1, output_tokens=len(tokens))
    )
    server = SseServer()
    server.default = Reply(chunks=[Chunk(data) for data, _ in script])
    urls.put(server.url)
    stop.wait()
    server.close()
