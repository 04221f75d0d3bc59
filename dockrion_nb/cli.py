"""``dockrion-nb``: the notebook's verbs from a terminal.

``publish``, ``tail`` (follow a run live), ``replay``, ``runs``, ``demo`` (a simulated agent
run) and ``export`` (a finished run as OpenTelemetry spans, over OTLP/HTTP), with the same
backend options as ``%stream_backend``; ``tail --server URL`` follows a run on a running
Dockrion server instead, over its HTTP/SSE API. With Redis (``--url`` or ``REDIS_URL``) a
terminal can publish while a notebook watches, or the other way round; on the memory backend
``demo`` prints the whole trace here, no notebook needed.

Exit codes: 0 success (a followed run completed; a run exported, whatever its status), 1 a
followed run ended in ``error`` or ``cancelled``, 2 any error (one line on stderr), 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from . import __version__
from .backend_options import build_config
from .backends import BackendError, build_backend
from .backends.factory import BackendFallbackWarning
from .bus import EventBus
from .config import ConfigError, StreamingConfig
from .context import StreamContext
from .demo import simulate_agent
from .engine import backend_location
from .events import EventValidationError, validate_run_id
from .eventtext import parse_events_text, parse_fields, user_event
from .integrations import IntegrationUnavailableError, load_module
from .redaction import mask_url, scrub
from .runstore import list_runs_with_status
from .selection import NoEventsError, aselect_events, check_types
from .tables import RunTable
from .terminal import TracePrinter, follow_run, print_run

PROG = "dockrion-nb"
API_KEY_ENV = "DOCKRION_API_KEY"
MEMORY_HINT = (
    " (the memory backend only sees this process; use --url or REDIS_URL to share runs "
    "between processes)"
)


class CommandError(Exception):
    """A one-line error for the user; exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors on one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


FROM_HELP = "start at sequence N (default 1)"
TYPE_HELP = "only these event types: token step ... custom custom:NAME (comma lists work)"


def build_parser() -> ArgumentParser:
    backend = ArgumentParser(add_help=False)
    group = backend.add_argument_group("backend (as %stream_backend)")
    group.add_argument(
        "--backend",
        choices=["memory", "redis"],
        help="default: redis when --url or REDIS_URL is set, else memory",
    )
    group.add_argument("--url", help="Redis URL (default: $REDIS_URL)")
    group.add_argument(
        "--ttl", type=int, metavar="SECONDS", help="stream_ttl_seconds, 60..604800 (default 3600)"
    )
    group.add_argument(
        "--max-events", type=int, metavar="N", help="max_events_per_run, 10..100000 (default 1000)"
    )
    group.add_argument("--pool-size", type=int, metavar="N", help="connection_pool_size")
    group.add_argument(
        "--max-runs", type=int, metavar="N", help="memory: keep at most N runs (least recent go)"
    )
    group.add_argument(
        "--dockfile", metavar="PATH", help="read the streaming: section of a Dockfile"
    )

    parser = ArgumentParser(
        prog=PROG,
        description="Publish, follow, replay, list and export Dockrion streaming runs.",
        epilog="Exit codes: 0 ok, 1 the run ended in error/cancelled, 2 error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "publish",
        parents=[backend],
        help="publish events to a run",
        description="Publish one event (TYPE key=value ...) or a file of events "
        "(JSON Lines or a YAML list; '-' reads stdin), validated whole first.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument(
        "event_type",
        nargs="?",
        metavar="TYPE",
        help="started, progress, token, step, checkpoint, heartbeat, complete, "
        "error, cancelled, or a custom name",
    )
    p.add_argument(
        "fields",
        nargs="*",
        metavar="key=value",
        help="event fields; values are JSON when they parse",
    )
    p.add_argument("--file", "-f", metavar="PATH", help="events file, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the stored events as JSON Lines")

    p = sub.add_parser(
        "tail",
        parents=[backend],
        help="follow a run live until it ends",
        description="Print a run's events (stored ones first, then live ones) "
        "until its terminal event. A run that has not started yet is waited for.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the run; it may not have started yet")
    p.add_argument("--from", dest="from_sequence", type=int, default=1, metavar="N", help=FROM_HELP)
    p.add_argument("--type", dest="types", nargs="+", action="extend", metavar="T", help=TYPE_HELP)
    p.add_argument("--json", action="store_true", help="JSON Lines (the wire form)")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up after this long without the run ending",
    )
    p.add_argument(
        "--server",
        metavar="URL",
        help="follow the run on a running Dockrion server (its HTTP/SSE API) instead of a "
        "backend; needs dockrion-nb[server]",
    )
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=API_KEY_ENV,
        help=f"with --server: the environment variable holding its API key (default {API_KEY_ENV})",
    )

    p = sub.add_parser("replay", parents=[backend], help="print a run's stored events")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--from", dest="from_sequence", type=int, default=1, metavar="N", help=FROM_HELP)
    p.add_argument("--last", type=int, metavar="N", help="only the last N (matching) events")
    p.add_argument("--type", dest="types", nargs="+", action="extend", metavar="T", help=TYPE_HELP)
    p.add_argument("--json", action="store_true", help="JSON Lines (the wire form)")

    p = sub.add_parser("runs", parents=[backend], help="list the runs the backend holds")
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="glob on the run id")
    p.add_argument("--json", action="store_true", help="one JSON object per run")

    p = sub.add_parser(
        "demo",
        parents=[backend],
        help="publish a simulated agent run",
        description="A made-up agent run with realistic timing (about 3 s): "
        "started, steps, progress, a streamed answer, a checkpoint, complete. "
        "Its trace is printed as it happens.",
    )
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: demo-<random>")
    p.add_argument("--error", action="store_true", help="the run fails (an error event)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="X times faster than real time (default 1)",
    )
    speed.add_argument("--fast", action="store_true", help="no pauses at all")
    p.add_argument("--json", action="store_true", help="JSON Lines (the wire form)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the final line")

    p = sub.add_parser(
        "export",
        parents=[backend],
        help="send a finished run to an OpenTelemetry backend",
        description="Write a finished run as OpenTelemetry spans with the GenAI conventions "
        "(an invoke_agent root, a span per step, chat spans with token usage) and send them "
        "over OTLP/HTTP (protobuf) to Jaeger, Phoenix, Langfuse or a collector. Needs "
        'pip install "dockrion-nb[otel]". Headers (an API key) come from '
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS or OTEL_EXPORTER_OTLP_HEADERS.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument(
        "--otlp",
        required=True,
        metavar="URL",
        help="the OTLP/HTTP traces endpoint, e.g. http://localhost:4318/v1/traces "
        "(a URL with no path gets /v1/traces)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="export a run that has not finished, its root span marked open",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up on the receiver after this long, retries included (default 10)",
    )
    return parser


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> StreamingConfig:
    """The backend the options ask for; Redis when a URL is given or ``REDIS_URL`` is set."""
    backend = args.backend
    if backend is None and args.dockfile is None:
        backend = "redis" if (args.url or environ.get("REDIS_URL")) else "memory"
    return build_config(
        backend,
        url=args.url,
        ttl=args.ttl,
        max_events=args.max_events,
        pool_size=args.pool_size,
        max_runs=args.max_runs,
        dockfile=args.dockfile,
        environ=environ,
    )


class Session:
    """One connected backend for the length of a command."""

    def __init__(self, cfg: StreamingConfig, environ: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.environ = environ
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BackendFallbackWarning)
            self.backend = build_backend(cfg, environ=environ)
        self.bus = EventBus(self.backend)
        self.location = backend_location(self.backend.describe())
        self.fallback_reason: str | None = getattr(self.backend, "fallback_reason", None)

    def no_events_hint(self) -> str:
        return MEMORY_HINT if self.backend.name == "memory" else ""


Command = Callable[[argparse.Namespace, Session, IO[str], IO[str]], Awaitable[int]]


async def cmd_publish(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    run_id = validate_run_id(args.run_id)
    if args.file is not None:
        if args.event_type is not None or args.fields:
            raise CommandError("give either TYPE [key=value ...] or --file, not both")
        text = sys.stdin.read() if args.file == "-" else _read(args.file)
        events = parse_events_text(text, run_id)
    elif args.event_type is not None:
        events = [user_event(args.event_type, run_id, parse_fields(args.fields))]
    else:
        raise CommandError("give the event: TYPE [key=value ...], or --file PATH (- for stdin)")
    stored = await s.bus.publish_many(run_id, events)
    if s.backend.name == "memory":
        err.write(
            "note: the memory backend keeps events inside this process, so they are gone when "
            "it exits; use --url or REDIS_URL to publish for other processes\n"
        )
    for event in stored:
        if args.json:
            out.write(event.to_json() + "\n")
        else:
            out.write(f"published {event.type} #{event.sequence} to run {run_id}\n")
    if not args.json and len(stored) > 1:
        err.write(f"{len(stored)} events published to run {run_id} on {s.location}\n")
    return 0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def check_from_last(from_sequence: int, last: int | None) -> None:
    """The flags' own errors (the Python API names its parameters instead)."""
    if from_sequence < 1:
        raise CommandError(f"--from must be 1 or more, not {from_sequence}")
    if last is not None and last < 1:
        raise CommandError(f"--last must be 1 or more, not {last}")


def _exit_for(last: Any) -> int:
    return 0 if last is not None and last.type == "complete" else 1


async def cmd_tail(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    run_id = validate_run_id(args.run_id)
    check_from_last(args.from_sequence, None)
    types = check_types(args.types)
    if not await s.bus.get_events(run_id, args.from_sequence):
        err.write(
            f"waiting for run {run_id} on {s.location} (Ctrl-C to stop){s.no_events_hint()}\n"
        )
        err.flush()
    printer = TracePrinter(out, as_json=args.json)
    follow = follow_run(s.bus, run_id, printer, from_sequence=args.from_sequence, types=types)
    try:
        last = await asyncio.wait_for(follow, args.timeout)
    except TimeoutError:
        printer.close()
        seen = f"after {printer.count} events" if printer.count else "with no events"
        raise CommandError(f"run {run_id} did not end within {args.timeout:g} s ({seen})") from None
    if last is None:
        raise CommandError(f"the subscription to run {run_id} ended before the run did")
    return _exit_for(last)


async def cmd_tail_server(
    args: argparse.Namespace, environ: Mapping[str, str], out: IO[str], err: IO[str]
) -> int:
    """``tail --server URL``: a run on a Dockrion server, printed until it ends."""
    run_id = validate_run_id(args.run_id)
    if args.from_sequence < 1:
        raise CommandError(f"--from must be 1 or more, not {args.from_sequence}")
    backend_options = [
        flag
        for flag, value in (
            ("--backend", args.backend),
            ("--url", args.url),
            ("--ttl", args.ttl),
            ("--max-events", args.max_events),
            ("--pool-size", args.pool_size),
            ("--dockfile", args.dockfile),
        )
        if value is not None
    ]
    if backend_options:
        raise CommandError(f"{', '.join(backend_options)}: a backend option, not for --server")
    key = environ.get(args.api_key_env)
    if key is None and args.api_key_env != API_KEY_ENV:
        raise CommandError(f"--api-key-env {args.api_key_env}: that variable is not set")
    types = check_types(args.types)
    try:
        server: Any = load_module(
            "dockrion_nb.integrations.dockrion_server", "server", "tail --server"
        )
    except IntegrationUnavailableError as exc:
        raise CommandError(str(exc)) from None
    await server.get_run(args.server, run_id, api_key=key or "")  # there, and knows the run
    events = server.follow(args.server, run_id, args.from_sequence, api_key=key or "")
    err.write(f"following run {run_id} on {mask_url(args.server)} (Ctrl-C to stop)\n")
    err.flush()
    printer = TracePrinter(out, as_json=args.json)
    try:
        last = await asyncio.wait_for(print_run(events, printer, types=types), args.timeout)
    except TimeoutError:
        printer.close()
        seen = f"after {printer.count} events" if printer.count else "with no events"
        raise CommandError(f"run {run_id} did not end within {args.timeout:g} s ({seen})") from None
    if last is None:
        raise CommandError(f"the server's stream of run {run_id} ended before the run did")
    return _exit_for(last)


async def cmd_replay(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    check_from_last(args.from_sequence, args.last)
    try:
        events = await aselect_events(
            s.bus,
            args.run_id,
            from_sequence=args.from_sequence,
            last=args.last,
            types=args.types,
            location=s.location,
        )
    except NoEventsError as exc:
        raise CommandError(f"{exc}{s.no_events_hint()}") from None
    printer = TracePrinter(out, as_json=args.json)
    for event in events:
        printer.feed(event)
    printer.close()
    return 0


async def cmd_runs(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    table = RunTable(await list_runs_with_status(s.bus, args.pattern or None), s.location)
    if args.json:
        for row in table:
            out.write(json.dumps({**dataclasses.asdict(row), "status": row.status}) + "\n")
    else:
        out.write(repr(table) + "\n")
        if not table and s.backend.name == "memory":
            err.write(MEMORY_HINT.strip(" ()") + "\n")
    return 0


async def cmd_demo(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    run_id = validate_run_id(args.run_id or f"demo-{uuid.uuid4().hex[:8]}")
    speed = 0.0 if args.fast else args.speed
    if not args.quiet:
        err.write(f"demo run {run_id} on {s.location}")
        if s.backend.name == "redis":
            err.write(f"; follow it elsewhere with: {PROG} tail {run_id}")
        err.write("\n")
        err.flush()
    printer = TracePrinter(out if not args.quiet else io.StringIO(), as_json=args.json)
    follower = asyncio.create_task(follow_run(s.bus, run_id, printer))
    await asyncio.sleep(0)  # subscribed before the first event; replay covers it anyway
    t0 = time.perf_counter()
    ctx = StreamContext(run_id, s.bus, prefix_custom=True)
    try:
        final = await simulate_agent(ctx, speed=speed, fail=args.error)
        last = await asyncio.wait_for(follower, 30)
    finally:
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower
    took = time.perf_counter() - t0
    status = final.type if final is not None else "unknown"
    err.write(f"run {run_id}: {status} after {took:.1f} s, {printer.count} events\n")
    return _exit_for(last)


def otlp_endpoint(url: str) -> str:
    """The traces endpoint for ``--otlp URL``: as given, or with ``/v1/traces`` when the URL
    has no path (OTLP's base-URL rule)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise CommandError(
            f"--otlp must be an http:// or https:// URL, not {shown_url(url)!r} "
            "(e.g. http://localhost:4318/v1/traces)"
        )
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/v1/traces"))
    return url


def shown_url(url: str) -> str:
    """``url`` fit to print: the password masked, a query string (often a token) hidden."""
    masked = mask_url(url)
    head, sep, _ = masked.partition("?")
    return f"{head}?***" if sep else masked


async def cmd_export(args: argparse.Namespace, s: Session, out: IO[str], err: IO[str]) -> int:
    run_id = validate_run_id(args.run_id)
    endpoint = otlp_endpoint(args.otlp)
    shown = shown_url(endpoint)
    try:
        otel_export: Any = load_module(
            "dockrion_nb.integrations.otel_export", "otel", "dockrion-nb export"
        )
    except IntegrationUnavailableError as exc:
        raise CommandError(str(exc)) from None
    events = await s.bus.get_events(run_id)
    if not events:
        raise CommandError(f"no events for run {run_id} on {s.location}{s.no_events_hint()}")
    plan = otel_export.plan_run(run_id, events, partial=args.partial)
    try:
        result = await asyncio.to_thread(
            otel_export.send_otlp, plan, endpoint, shown_as=shown, timeout=args.timeout
        )
    except otel_export.OtlpExportError as exc:
        raise CommandError(scrub(str(exc), endpoint)) from None
    out.write(
        f"exported run {run_id} ({result.status}) as {result.span_count} spans, "
        f"trace {result.trace_id}, to {shown}\n"
    )
    return 0


COMMANDS: dict[str, Command] = {
    "publish": cmd_publish,
    "tail": cmd_tail,
    "replay": cmd_replay,
    "runs": cmd_runs,
    "demo": cmd_demo,
    "export": cmd_export,
}

USER_ERRORS = (
    CommandError,
    ConfigError,
    BackendError,
    EventValidationError,
    ValueError,
    LookupError,
    TimeoutError,
)


async def _run(
    args: argparse.Namespace, environ: Mapping[str, str], out: IO[str], err: IO[str]
) -> int:
    if args.command == "tail" and args.server is not None:
        return await cmd_tail_server(args, environ, out, err)
    session = Session(config_from(args, environ), environ)
    if session.fallback_reason:
        err.write(f"warning: {session.fallback_reason}\n")
    try:
        await session.backend.ping()
        return await COMMANDS[args.command](args, session, out, err)
    finally:
        with contextlib.suppress(Exception):
            await session.bus.close()


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args, env, out, err))
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        err.write(f"{PROG}: error: {scrub(message)}\n")
        return 2
    except BrokenPipeError:  # `dockrion-nb replay ... | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
