"""A running Dockrion server's runs, followed over its HTTP/SSE API (the ``[server]`` extra).

What Dockrion's runtime (``dockrion_runtime`` from ``dockrion==0.0.3``) serves, when its
Dockfile has ``streaming: {async_runs: true}``:

- ``POST /runs?run_id=ID`` with the agent's input (a JSON object): ``202`` and
  ``{"run_id", "status": "accepted", "events_url", "created_at"}``; the agent runs in the
  background. A taken or invalid run id is a ``400``, input that fails the Dockfile's
  ``io_schema`` a ``422``.
- ``GET /runs/ID``: ``{"run_id", "status", "created_at", "completed_at", "output", "error",
  "metadata"}``, status ``accepted``, ``running``, ``completed``, ``failed`` or ``cancelled``.
- ``GET /runs/ID/events?from_sequence=K``: Server-Sent Events, one frame per event,
  ``event: TYPE`` and ``data: JSON`` (the wire event), with no ``id:`` line and no heartbeats.
  ``K >= 1`` first replays the stored events numbered ``K`` or more, then streams live ones;
  ``K = 0`` streams live ones only. The stream ends after the run's terminal event. Its replay
  and its live subscription do not meet: an event published between the two is not sent.
  ``event: timeout`` ends it after ``timeout`` seconds (checked only when an event arrives);
  ``event: error`` with ``{"error": ...}`` reports a fault on the server's side.
- ``DELETE /runs/ID?reason=...``: ``{"run_id", "status": "cancelled"}``. The server marks the
  run cancelled and publishes a ``cancelled`` event, but the agent's code is not stopped: it
  runs on, publishes its ``complete`` later (with a higher sequence) and ``GET /runs/ID`` then
  says ``completed``. A finished run is a ``400``.
- Unknown runs are ``404`` (``{"error": "Run 'ID' not found", "code": "NOT_FOUND"}``, or
  ``{"detail": ...}`` on the events endpoint). With ``auth.mode: api_key`` every endpoint wants
  the key in ``X-API-Key`` (or ``Authorization: Bearer``), else ``401``. Runs live in the
  server's process memory: a restarted server has forgotten them.

What ``follow`` adds on top: it tracks the sequence itself (the stream has no ``id:``), so after
a dropped connection, a fault or a server outage it reconnects with bounded exponential backoff
and asks for ``from_sequence = last + 1``; a jump in sequence (the server's replay/live seam) is
filled by reconnecting from the same point, and events the server no longer holds arrive as one
``gap`` event. Every event is yielded once, in order, until the terminal one. When the stream
goes quiet it asks ``GET /runs/ID``: a run that ended there (its terminal event lost in that
seam) is read again from the store, and a server that no longer answers is reconnected to.

Every request runs on the caller's event loop (the notebook engine's, for the magics and the
view). URLs are masked (``dockrion_nb.redaction``) in every message; event content is
untrusted and is quoted, bounded, in errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from ..backends.base import BackendError
from ..events import BaseEvent, EventValidationError, GapEvent, parse_event, validate_run_id
from ..redaction import mask_url, masked_logger, scrub

log = masked_logger("dockrion_nb.integrations.dockrion_server")

API_KEY_ENV = "DOCKRION_API_KEY"
"""Where the API key is read from when none is given (the variable Dockrion's server uses)."""
API_KEY_HEADER = "X-API-Key"
REQUEST_TIMEOUT = 10.0
"""Seconds to connect, and to wait for an answer to a plain request."""
IDLE_CHECK = 5.0
"""Seconds without a frame before the follower asks the server how the run is doing."""
RETRY_FOR = 300.0
"""Seconds of failed reconnects, with no event in between, before the follower gives up."""
SSE_TIMEOUT = 3600
"""The longest connection Dockrion's events endpoint allows (its ``timeout`` parameter)."""
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
QUEUE_SIZE = 1000
"""Frames read ahead of the consumer; past that the socket is left unread (backpressure)."""
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
MAX_QUOTE = 200

_RUN_NOT_FOUND = re.compile(r"^Run '.*' not found$")


# -- errors ---------------------------------------------------------------------------------


class DockrionServerError(BackendError):
    """A Dockrion server could not do what was asked; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, backend="dockrion-server")


class ServerUnreachableError(DockrionServerError):
    """No answer (refused, timed out, unknown host), or the link stayed down too long."""


class RunNotFoundError(DockrionServerError, LookupError):
    """The server does not know the run (never started there, or the server restarted)."""


class NotADockrionServerError(DockrionServerError):
    """Something answered, but not as Dockrion's runs API does."""


class ServerRequestError(DockrionServerError):
    """The server refused the request (``status``): no API key, bad input, a finished run."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _quote(value: object) -> str:
    """Untrusted text for a message: one line, at most ``MAX_QUOTE`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


def _backoff(attempt: int) -> float:
    """Exponential, capped at ``BACKOFF_CAP`` seconds, with jitter so followers spread out."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1))


# -- one server -----------------------------------------------------------------------------


class DockrionServer:
    """Where a Dockrion server is and how to authenticate to it.

    ``api_key`` defaults to ``$DOCKRION_API_KEY`` and is sent as ``X-API-Key``; ``headers``
    are added to (and override) every request's headers. Credentials in the URL are sent as
    HTTP basic auth and masked in every message.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        shown = mask_url(str(url))
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"a Dockrion server URL starts with http:// or https://, not {shown!r}"
            )
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(
                f"invalid Dockrion server URL {shown!r}: {scrub(str(exc), url)}"
            ) from None
        if not timeout > 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {timeout}")
        self.url = url.rstrip("/")
        self.masked_url = mask_url(self.url)
        self.timeout = timeout
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {"Accept": "application/json"}
        if key:
            self._headers[API_KEY_HEADER] = key
        self._headers.update(headers or {})

    def __repr__(self) -> str:
        return f"DockrionServer({self.masked_url!r})"

    def client(self) -> httpx.AsyncClient:
        """A client for this server; use it on one event loop, then close it."""
        return httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self.timeout)

    async def request(
        self, method: str, path: str, *, doing: str, run_id: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One request; the server's JSON object answer, or the error that explains it."""
        async with self.client() as client:
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.RequestError as exc:
                raise self.unreachable(exc) from None
        if response.status_code >= 400:
            raise self.refusal(response, doing, run_id)
        return self.json_object(response, doing)

    def unreachable(self, exc: BaseException) -> ServerUnreachableError:
        reason = scrub(str(exc) or type(exc).__name__, self.url)
        return ServerUnreachableError(
            f"cannot reach the Dockrion server at {self.masked_url} ({reason}); check the URL "
            "and that the server is running"
        )

    def refusal(self, response: httpx.Response, doing: str, run_id: str | None) -> Exception:
        """The error for a 4xx/5xx answer, with the server's own message (quoted)."""
        status = response.status_code
        message = scrub(_server_message(response), self.url)
        where = self.masked_url
        if status == 404:
            if run_id is not None and _is_run_not_found(response):
                return RunNotFoundError(
                    f"the Dockrion server at {where} has no run {run_id!r} ({message}); "
                    "check the run id"
                )
            return NotADockrionServerError(
                f"{where} answered 404 to {response.request.method} "
                f"{response.request.url.path}: it does not serve Dockrion's runs API; check "
                "that the URL is the server's root and that its Dockfile sets "
                "streaming.async_runs"
            )
        if status in (401, 403):
            return ServerRequestError(
                f"the Dockrion server at {where} refused {doing} ({status}: {message}); give "
                f"its API key (api_key=..., or the {API_KEY_ENV} environment variable)",
                status,
            )
        return ServerRequestError(
            f"the Dockrion server at {where} refused {doing} ({status}: {message})", status
        )

    def json_object(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        body: Any = None
        if kind == "application/json":
            with contextlib.suppress(ValueError):
                body = response.json()
        if not isinstance(body, dict):
            raise NotADockrionServerError(
                f"{self.masked_url} answered {doing} with {kind or 'no content type'} "
                f"({_quote(response.text[:MAX_QUOTE])!r}), not as Dockrion's runs API does; "
                "check the URL"
            )
        return body


def _server_message(response: httpx.Response) -> str:
    """The reason a Dockrion (FastAPI) error answer gives, or the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return _quote(response.text) or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(body.get("error"), str):
            return _quote(body["error"])
        if isinstance(detail, str):
            return _quote(detail)
        if isinstance(detail, dict):
            return _quote(detail.get("message") or detail.get("error") or json.dumps(detail))
        if isinstance(detail, list):  # FastAPI's input validation errors
            parts = [
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                for item in detail
                if isinstance(item, dict)
            ]
            return _quote("; ".join(parts))
    return _quote(json.dumps(body))


def _is_run_not_found(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    if body.get("code") == "NOT_FOUND":
        return True
    detail = body.get("detail")
    return isinstance(detail, str) and bool(_RUN_NOT_FOUND.match(detail))


def _server(url: str | DockrionServer, **options: Any) -> DockrionServer:
    if isinstance(url, DockrionServer):
        return url
    return DockrionServer(url, **options)


# -- the runs API -----------------------------------------------------------------------------


async def start_run(
    url: str | DockrionServer,
    payload: Mapping[str, Any],
    run_id: str | None = None,
    *,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``POST /runs``: start the agent on ``payload``; returns the server's answer (its
    ``run_id`` among it). ``run_id`` asks for that id (the server may refuse client ids)."""
    if not isinstance(payload, Mapping):
        raise ValueError(
            f"a run's input is a JSON object such as {{'input': ...}}, not {type(payload).__name__}"
        )
    try:
        body = json.dumps(dict(payload))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a run's input must be JSON: {exc}") from None
    params = {"run_id": validate_run_id(run_id)} if run_id is not None else {}
    server = _server(url, api_key=api_key, headers=headers)
    answer = await server.request(
        "POST",
        "/runs",
        doing="starting a run",
        content=body,
        params=params,
        headers={"Content-Type": "application/json"},
    )
    if not isinstance(answer.get("run_id"), str):
        raise NotADockrionServerError(
            f"{server.masked_url} accepted the run but its answer names no run_id: "
            f"{_quote(json.dumps(answer))}"
        )
    return answer


async def get_run(
    url: str | DockrionServer,
    run_id: str,
    *,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``GET /runs/ID``: the run's status (``accepted``, ``running``, ``completed``, ``failed``,
    ``cancelled``), output and error."""
    validate_run_id(run_id)
    server = _server(url, api_key=api_key, headers=headers)
    return await server.request("GET", f"/runs/{run_id}", doing="reading the run", run_id=run_id)


async def cancel_run(
    url: str | DockrionServer,
    run_id: str,
    *,
    reason: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``DELETE /runs/ID``: ask the server to cancel the run.

    Dockrion 0.0.3 then publishes ``cancelled`` (which ends every follower) but does not stop
    the agent's code, which runs to its end on the server.
    """
    validate_run_id(run_id)
    server = _server(url, api_key=api_key, headers=headers)
    params = {"reason": reason} if reason else {}
    return await server.request(
        "DELETE", f"/runs/{run_id}", doing="cancelling the run", run_id=run_id, params=params
    )


# -- following a run --------------------------------------------------------------------------


def follow(
    url: str | DockrionServer,
    run_id: str,
    from_sequence: int = 1,
    *,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    on_state: Callable[[str], None] | None = None,
    retry_for: float = RETRY_FOR,
    idle_check: float = IDLE_CHECK,
) -> AsyncIterator[BaseEvent]:
    """The run's events from ``from_sequence`` on, each once and in order, until its terminal
    event (``complete``, ``error`` or ``cancelled``).

    Survives dropped connections and server outages (see the module's docstring); gives up
    with ``ServerUnreachableError`` after ``retry_for`` seconds of failed reconnects.
    ``on_state`` hears ``"live"`` whenever a connection is up, ``"reconnecting"`` while it is
    down and ``"closed"`` at the end. The first connection fails at once when nothing answers
    (``ServerUnreachableError``); an unknown run is ``RunNotFoundError``.
    """
    validate_run_id(run_id)
    if isinstance(from_sequence, bool) or not isinstance(from_sequence, int) or from_sequence < 1:
        raise ValueError(f"from_sequence must be 1 or more, not {from_sequence!r}")
    if not retry_for >= 0:
        raise ValueError(f"retry_for must be 0 or more seconds, not {retry_for}")
    if not idle_check > 0:
        raise ValueError(f"idle_check must be more than 0 seconds, not {idle_check}")
    server = _server(url, api_key=api_key, headers=headers)
    return _Follower(server, run_id, from_sequence, on_state, retry_for, idle_check).events()


class _Reconnect(Exception):
    """This connection is over; open another from the last sequence (``failure``: with
    backoff, counted against ``retry_for``)."""

    def __init__(self, why: str, *, failure: bool) -> None:
        super().__init__(why)
        self.failure = failure


Item = tuple[str, Any]


class _Follower:
    """The state of one ``follow``: the last sequence yielded and the reconnect budget."""

    def __init__(
        self,
        server: DockrionServer,
        run_id: str,
        from_sequence: int,
        on_state: Callable[[str], None] | None,
        retry_for: float,
        idle_check: float,
    ) -> None:
        self.server = server
        self.run_id = run_id
        self.last = from_sequence - 1
        self.on_state = on_state
        self.retry_for = retry_for
        self.idle_check = idle_check
        self.state = ""
        self.connected = False  # a connection was up at least once
        self.done = False
        self.attempt = 0
        self.failing_since: float | None = None
        self.filling_gap = False
        self.probe_reconnected = False
        self.link_events = 0
        self.links = 0

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:  # a broken listener must not break delivery
                log.exception("state listener %r failed", self.on_state)

    async def events(self) -> AsyncIterator[BaseEvent]:
        async with self.server.client() as client:
            try:
                while not self.done:
                    queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE)
                    reader = asyncio.create_task(self._read(client, self.last + 1, queue))
                    self.links += 1
                    self.link_events = 0
                    why: _Reconnect | None = None
                    try:
                        while not self.done:
                            kind, item = await self._next(client, queue)
                            if kind == "open":
                                self.connected = True
                                self._set_state("live")
                            elif kind == "end":
                                raise _Reconnect(
                                    "the server ended the stream before the run ended",
                                    failure=self.link_events == 0,
                                )
                            elif kind == "fail":
                                raise self._classify(item)
                            else:
                                for event in self._take(item):
                                    yield event
                    except _Reconnect as exc:
                        why = exc
                    finally:
                        reader.cancel()
                        await asyncio.wait([reader])
                    if why is not None:
                        await self._before_reconnect(why)
            finally:
                self._set_state("closed")

    async def _read(self, client: httpx.AsyncClient, from_sequence: int, queue: Any) -> None:
        """One SSE connection (its own task, so the consumer can wait with a timeout)."""
        params = {"from_sequence": from_sequence, "timeout": SSE_TIMEOUT}
        try:
            async with aconnect_sse(
                client,
                "GET",
                f"/runs/{self.run_id}/events",
                params=params,
                timeout=httpx.Timeout(self.server.timeout, read=None),
            ) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    raise self.server.refusal(response, "following the run", self.run_id)
                kind = response.headers.get("content-type", "").partition(";")[0].strip()
                if kind != "text/event-stream":
                    await response.aread()
                    raise NotADockrionServerError(
                        f"{self.server.masked_url} answered GET /runs/{self.run_id}/events "
                        f"with {kind or 'no content type'}, not an event stream; check the URL"
                    )
                await queue.put(("open", None))
                async for sse in source.aiter_sse():
                    await queue.put(("sse", sse))
            await queue.put(("end", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put(("fail", exc))

    async def _next(self, client: httpx.AsyncClient, queue: asyncio.Queue[Item]) -> Item:
        """The next item from the reader; while the stream is quiet, check on the run."""
        while True:
            try:
                return await asyncio.wait_for(queue.get(), self.idle_check)
            except TimeoutError:
                await self._probe(client)

    async def _probe(self, client: httpx.AsyncClient) -> None:
        """``GET /runs/ID`` while the stream is quiet: is the run over, is the server there?"""
        try:
            response = await client.get(f"/runs/{self.run_id}")
        except httpx.RequestError as exc:
            raise _Reconnect(
                f"no answer to a status check ({scrub(str(exc), self.server.url)})", failure=True
            ) from None
        if response.status_code >= 400:
            error = self.server.refusal(response, "reading the run", self.run_id)
            raise self._classify(error)
        status = self.server.json_object(response, "reading the run").get("status")
        if status not in TERMINAL_STATUSES:
            return
        if self.probe_reconnected and self.link_events == 0:
            raise DockrionServerError(
                f"the Dockrion server at {self.server.masked_url} reports run {self.run_id} "
                f"{_quote(status)}, but its event stream never sent the run's terminal event "
                f"(events up to #{self.last} arrived)"
            )
        self.probe_reconnected = True
        raise _Reconnect(f"the run is {status} but its stream went quiet", failure=False)

    def _classify(self, exc: BaseException) -> BaseException:
        """A transient failure as ``_Reconnect``; anything else as the error to raise."""
        if isinstance(exc, ServerRequestError) and exc.status >= 500:
            return _Reconnect(str(exc), failure=True)
        if isinstance(exc, RunNotFoundError) and self.connected:
            return RunNotFoundError(
                f"the Dockrion server at {self.server.masked_url} no longer knows run "
                f"{self.run_id} (restarted? Dockrion keeps runs in its process memory); events "
                f"up to #{self.last} arrived"
            )
        if isinstance(exc, httpx.RequestError):
            if not self.connected and isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                return self.server.unreachable(exc)
            return _Reconnect(scrub(str(exc) or type(exc).__name__, self.server.url), failure=True)
        return exc

    async def _before_reconnect(self, why: _Reconnect) -> None:
        if not why.failure:
            log.debug("run %s: reconnecting from #%d: %s", self.run_id, self.last + 1, why)
            return
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if self.connected:
            self._set_state("reconnecting")
        if now - self.failing_since > self.retry_for:
            raise ServerUnreachableError(
                f"lost the Dockrion server at {self.server.masked_url} for more than "
                f"{self.retry_for:g} s while following run {self.run_id} ({why}); events up "
                f"to #{self.last} arrived: follow again from {self.last + 1}"
            )
        self.attempt += 1
        delay = _backoff(self.attempt)
        log.info(
            "run %s: connection lost (%s); reconnecting from #%d in %.2f s",
            self.run_id,
            why,
            self.last + 1,
            delay,
        )
        await asyncio.sleep(delay)

    def _take(self, sse: ServerSentEvent) -> list[BaseEvent]:
        """The events one SSE frame adds, in order: none, the event, or a gap then the event."""
        payload: Any = None
        if sse.data:
            with contextlib.suppress(ValueError):
                payload = json.loads(sse.data)
        if not isinstance(payload, dict) or "type" not in payload:
            return self._control(sse, payload)
        try:
            event = parse_event(payload)
        except EventValidationError as exc:
            return self._invalid(payload, exc)
        if event.run_id != self.run_id:
            log.warning("run %s: ignored an event of run %s", self.run_id, _quote(event.run_id))
            return []
        seq = event.sequence
        if seq == 0:
            log.warning("run %s: ignored an event with no sequence (%s)", self.run_id, event.type)
            return []
        if seq <= self.last:
            return []
        out: list[BaseEvent] = []
        if seq > self.last + 1:
            if not self.filling_gap:
                self.filling_gap = True
                raise _Reconnect(f"the stream skipped #{self.last + 1}..#{seq - 1}", failure=False)
            out.append(self._gap(seq - 1, "the Dockrion server no longer holds these events"))
        self._advance(seq)
        out.append(event)
        if event.is_terminal:
            self.done = True
        return out

    def _advance(self, seq: int) -> None:
        self.last = seq
        self.filling_gap = False
        self.probe_reconnected = False
        self.link_events += 1
        self.attempt = 0
        self.failing_since = None

    def _gap(self, to_sequence: int, reason: str) -> GapEvent:
        return GapEvent(
            run_id=self.run_id, from_sequence=self.last + 1, to_sequence=to_sequence, reason=reason
        )

    def _control(self, sse: ServerSentEvent, payload: Any) -> list[BaseEvent]:
        """A frame that is not an event: the server's timeout or fault notice, or not Dockrion."""
        if sse.event == "timeout":
            raise _Reconnect("the server's stream timed out", failure=False)
        if sse.event == "error":
            said = payload.get("error") if isinstance(payload, dict) else sse.data
            raise _Reconnect(f"the server's stream failed: {_quote(said)}", failure=True)
        if payload is None and sse.data:
            raise NotADockrionServerError(
                f"{self.server.masked_url} sent an SSE frame that is not a Dockrion event "
                f"(event {_quote(sse.event)!r}, data {_quote(sse.data[:MAX_QUOTE])!r}); check "
                "the URL"
            )
        log.debug("run %s: ignored an SSE frame %r", self.run_id, sse.event)
        return []

    def _invalid(self, payload: dict[str, Any], exc: EventValidationError) -> list[BaseEvent]:
        """An event the server sent that is not valid: a gap in its place, never silence."""
        seq = payload.get("sequence")
        if isinstance(seq, int) and seq == self.last + 1 and payload.get("run_id") == self.run_id:
            gap = self._gap(seq, f"the server sent an invalid event: {_quote(exc)}")
            self._advance(seq)
            return [gap]
        log.warning("run %s: ignored an invalid event: %s", self.run_id, _quote(exc))
        return []


# -- the live view's source -----------------------------------------------------------------


class ServerSource:
    """What a ``RunView`` follows instead of the notebook's bus: runs on a Dockrion server.

    ``source(run_id, from_sequence, live)`` is ``follow``; listeners added with
    ``add_state_listener`` hear its connection state; ``cancel(run_id)`` is ``cancel_run``.
    """

    def __init__(
        self,
        url: str | DockrionServer,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_for: float = RETRY_FOR,
        idle_check: float = IDLE_CHECK,
    ) -> None:
        self.server = _server(url, api_key=api_key, headers=headers)
        self.name = f"dockrion server {self.server.masked_url}"
        self.retry_for = retry_for
        self.idle_check = idle_check
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"ServerSource({self.server.masked_url!r})"

    def __call__(self, run_id: str, from_sequence: int = 1, live: bool = True) -> Any:
        if not live:
            raise ValueError(
                "a Dockrion server's event stream has no replay-only read: follow the run live"
            )
        return follow(
            self.server,
            run_id,
            from_sequence,
            on_state=self._notify,
            retry_for=self.retry_for,
            idle_check=self.idle_check,
        )

    def add_state_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(state)`` on every change of a follow's link; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _notify(self, state: str) -> None:
        for listener in list(self._listeners):
            listener(state)

    async def cancel(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        return await cancel_run(self.server, run_id, reason=reason)


__all__ = [
    "API_KEY_ENV",
    "DockrionServer",
    "DockrionServerError",
    "NotADockrionServerError",
    "RunNotFoundError",
    "ServerRequestError",
    "ServerSource",
    "ServerUnreachableError",
    "cancel_run",
    "follow",
    "get_run",
    "start_run",
]
