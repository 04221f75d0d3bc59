"""IPython magics: ``%stream_backend``, ``%%publish``, ``%publish``, ``%replay``, ``%watch``,
``%compare``, ``%runs``, and ``%dockrion`` for runs on a Dockrion server.

Thin on purpose: argument parsing, display and one-line errors here; the work is done by the
functions in ``dockrion_nb.api``, which scripts can call without magics. Defaults are traitlets
settings, so ``%config StreamMagics.redis_url = "redis://localhost:6379/0"`` works (and so does
an ``ipython_config.py``).

How a ``%%publish`` cell runs: the body is transformed like any IPython cell (magics and ``!``
inside it work), its last expression is kept as the run's output, and it is compiled with
top-level ``await`` allowed. Code without ``await`` runs directly in the kernel's thread, like a
normal cell. Code with ``await`` runs to completion on a private asyncio loop in the kernel's
thread: the kernel's own loop is set aside for the duration (it is blocked by the running cell
anyway) and restored afterwards. No nest-asyncio patch is applied. The consequence: an object
bound to the kernel's loop by an earlier cell (e.g. an aiohttp session created with top-level
``await``) cannot be awaited inside ``%%publish``; create it inside the cell. Tasks the body
leaves running are cancelled when the cell ends. Interrupting the kernel cancels the body
(``cancelled`` event) and surfaces ``KeyboardInterrupt``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import json
import os
import shlex
import traceback
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any, Protocol, TypeVar, cast

from IPython.core import magic as _magic
from IPython.core import magic_arguments as _margs
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from traitlets import Enum, Int, TraitError, Unicode, validate

from . import api
from .backend_options import build_config
from .backends.base import BackendError
from .config import ConfigError
from .engine import backend_location, get_engine, reset_engine
from .events import EventValidationError, validate_run_id
from .eventtext import parse_events_text, parse_fields, user_event
from .filters import EventsFilter
from .redaction import mask_url, masked_logger, scrub
from .tracing import RunExistsError, Trace

log = masked_logger("dockrion_nb.magics")
F = TypeVar("F", bound=Callable[..., Any])

RESULT_NAME = "_dockrion_nb_cell_result_"
VIEWS = ("widget", "table", "json", "df")


class Decorator(Protocol):
    def __call__(self, fn: F, /) -> F: ...


def magic_arguments() -> Decorator:
    """IPython's decorator, typed (argparse usage and ``%magic?`` help)."""
    return cast(Decorator, _margs.magic_arguments())  # type: ignore[no-untyped-call]


def argument(*args: Any, **kwargs: Any) -> Decorator:
    return cast(Decorator, _margs.argument(*args, **kwargs))  # type: ignore[no-untyped-call]


# IPython types these as "function or decorator"; ours are always used bare.
line_magic = cast(Decorator, _magic.line_magic)
line_cell_magic = cast(Decorator, _magic.line_cell_magic)


def parse_argstring(magic: Any, line: str) -> Any:
    """Parse a magic's line with shell-style quoting, the same for every magic (so ``'a b'``
    and ``message="two words"`` are one value each); a bad option raises ``UsageError``."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read the options: {exc}") from None
    return magic.parser.parse_args(tokens)


# Errors that are the user's input or environment, shown as one line without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    BackendError,
    EventValidationError,
    ValueError,
    LookupError,
    TimeoutError,
    ImportError,
)


def one_line(exc: BaseException | str) -> str:
    """A message fit for ``UsageError``: one line, passwords masked."""
    text = str(exc) or type(exc).__name__
    return scrub(" ".join(part.strip() for part in text.splitlines() if part.strip()))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input and backend errors into a one-line ``UsageError`` (no traceback)."""
    try:
        yield
    except UsageError:
        raise
    except USER_ERRORS as exc:
        raise UsageError(one_line(exc)) from None


@contextlib.contextmanager
def _run_exists_as_flags() -> Iterator[None]:
    """A re-run cell's refusal, naming the magic's flags instead of ``trace()``'s ``mode``."""
    try:
        yield
    except RunExistsError as exc:
        how = "add --replace to clear it first, or --append to add to it"
        raise UsageError(str(RunExistsError(exc.run_id, exc.summary, how))) from None


def check_from_last(from_sequence: int, last: int | None) -> None:
    """The flags' own errors (the Python API names its parameters instead)."""
    if from_sequence < 1:
        raise UsageError(f"--from must be 1 or more, not {from_sequence}")
    if last is not None and last < 1:
        raise UsageError(f"--last must be 1 or more, not {last}")


# %%publish options that only a traced cell takes (argparse destinations).
TRACED_CELL_FLAGS = (
    "agent",
    "framework",
    "events",
    "langchain",
    "instrument",
    "replace",
    "append",
)


def flags_given(args: Any, names: tuple[str, ...]) -> list[str]:
    """The flags among ``names`` that were given, as typed (``--events-body``)."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n)]


def describe_settings(info: dict[str, Any]) -> str:
    """``redis at redis://***@host:6379/0; ttl 3600 s, max 1000 events per run, pool 10``."""
    where = backend_location(info)
    if info.get("topology") not in (None, "one server"):
        where += f" ({info['topology']})"  # a cluster or a Sentinel-managed master
    parts = []
    if "stream_ttl_seconds" in info:
        parts.append(f"ttl {info['stream_ttl_seconds']} s")
    if "max_events_per_run" in info:
        parts.append(f"max {info['max_events_per_run']} events per run")
    if "connection_pool_size" in info:
        parts.append(f"pool {info['connection_pool_size']}")
    if "max_runs" in info:
        parts.append(f"at most {info['max_runs']} runs")
    return f"{where}; {', '.join(parts)}" if parts else where


def cell_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the cell's own code down, without the magic's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def run_on_private_loop(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh loop in this thread, even when this thread's
    loop (the kernel's) is the running one: it is set aside while the cell body runs."""
    __tracebackhide__ = True
    outer = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(coro)
    finally:
        asyncio._set_running_loop(outer)


class CellCode:
    """A ``%%publish`` body compiled once: top-level ``await`` allowed, last expression kept."""

    def __init__(self, shell: Any, body: str) -> None:
        transformed = shell.transform_cell(body)
        self.filename: str = shell.compile.cache(transformed, shell.execution_count, raw_code=body)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(
            transformed, self.filename, "exec", flags=flags | ast.PyCF_ONLY_AST, dont_inherit=True
        )
        self.shows_result = False
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body[-1]
            keep = ast.Assign(targets=[ast.Name(id=RESULT_NAME, ctx=ast.Store())], value=last.value)
            tree.body[-1] = ast.copy_location(keep, last)
            ast.fix_missing_locations(tree)
            self.shows_result = not transformed.rstrip().endswith(";")
        self.code: CodeType = compile(tree, self.filename, "exec", flags=flags, dont_inherit=True)
        self.is_async = bool(self.code.co_flags & inspect.CO_COROUTINE)

    def run(self, global_ns: dict[str, Any], local_ns: dict[str, Any]) -> Any:
        """Run in the user's namespace and return the last expression's value (or None)."""
        __tracebackhide__ = True  # IPython shows the cell's frames, not the package's
        local_ns.pop(RESULT_NAME, None)
        if self.is_async:
            run_on_private_loop(eval(self.code, global_ns, local_ns))
        else:
            exec(self.code, global_ns, local_ns)
        return local_ns.pop(RESULT_NAME, None)


@magics_class
class StreamMagics(Magics):
    """Magics that publish, trace, watch and replay runs of Dockrion's streaming events.

    Defaults are settable with ``%config StreamMagics.<name> = value``.
    """

    redis_url = Unicode(
        "${REDIS_URL}",
        help="Redis URL used by `%stream_backend redis` without --url (${VAR} expanded).",
    ).tag(config=True)
    stream_ttl_seconds = Int(
        3600, help="Seconds a Redis run stream lives after its last event (60..604800)."
    ).tag(config=True)
    max_events_per_run = Int(
        1000, help="Events kept per run, oldest trimmed first (10..100000)."
    ).tag(config=True)
    connection_pool_size = Int(10, help="Redis connection pool size.").tag(config=True)
    context_name = Unicode(
        "ctx", help="Name of the StreamContext a `%%publish` cell finds in its namespace."
    ).tag(config=True)
    replay_as = Enum(
        VIEWS, default_value="widget", help="Default view of `%replay`: widget, table, json, df."
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        if shell is not None and "config" not in kwargs:
            kwargs["config"] = shell.config
        super().__init__(shell=shell, **kwargs)

    @validate("context_name")
    def _valid_name(self, proposal: Any) -> str:
        name = str(proposal["value"])
        if not name.isidentifier():
            raise TraitError(f"context_name must be a Python identifier, not {name!r}")
        return name

    def _defaults(self) -> dict[str, Any]:
        return {
            "redis_url": self.redis_url,
            "stream_ttl_seconds": self.stream_ttl_seconds,
            "max_events_per_run": self.max_events_per_run,
            "connection_pool_size": self.connection_pool_size,
        }

    # -- %stream_backend --------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "backend",
        nargs="?",
        choices=["memory", "redis"],
        help="memory (this process only) or redis (any process, survives the kernel). "
        "Without it, and without --dockfile, show the active backend.",
    )
    @argument(
        "--url",
        help="Redis URL, e.g. redis://:password@localhost:6379/0, a cluster "
        "redis+cluster://h1:7000,h2:7000/ or a Sentinel-managed master "
        "redis+sentinel://h1:26379,h2:26379/mymaster/0 "
        "(default: StreamMagics.redis_url, which is ${REDIS_URL}).",
    )
    @argument(
        "--ttl",
        type=int,
        metavar="SECONDS",
        help="Redis only: stream_ttl_seconds, 60..604800 (default 3600).",
    )
    @argument(
        "--max-events", type=int, metavar="N", help="max_events_per_run, 10..100000 (default 1000)."
    )
    @argument(
        "--pool-size", type=int, metavar="N", help="Redis only: connection_pool_size (default 10)."
    )
    @argument(
        "--max-runs",
        type=int,
        metavar="N",
        help="Memory only: keep at most N runs, evicting the least recently written "
        "(default: keep every run until it is cleared).",
    )
    @argument(
        "--dockfile",
        metavar="PATH",
        help="Load the streaming: section of a Dockfile; other options override it.",
    )
    @line_magic
    def stream_backend(self, line: str) -> None:
        """Show or choose the backend runs are published to and read from.

        Examples::

            %stream_backend                        # show the active backend
            %stream_backend memory --max-events 5000
            %stream_backend redis --url redis://localhost:6379/0 --ttl 7200
            %stream_backend redis --url redis+cluster://10.0.0.1:7000,10.0.0.2:7000/
            %stream_backend redis --url redis+sentinel://10.0.0.5:26379/mymaster/0
            %stream_backend --dockfile Dockfile.yaml

        The new backend is validated and connected (PING) at once; on failure the previous one
        stays active. If the redis library is missing, the memory backend is used and a
        warning says so.
        """
        args = parse_argstring(self.stream_backend, line)
        engine = get_engine()
        with user_errors():
            if args.backend is None and args.dockfile is None:
                given = [args.url, args.ttl, args.max_events, args.pool_size, args.max_runs]
                if any(v is not None for v in given):
                    raise UsageError("name the backend: %stream_backend memory|redis [options]")
                print(f"stream backend: {describe_settings(engine.describe())}")
                return
            cfg = build_config(
                args.backend,
                url=args.url,
                ttl=args.ttl,
                max_events=args.max_events,
                pool_size=args.pool_size,
                max_runs=args.max_runs,
                dockfile=args.dockfile,
                defaults=self._defaults(),
            )
            import warnings

            from .backends.factory import BackendFallbackWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BackendFallbackWarning)
                info = api.use_backend(cfg, engine=engine)
        reason = info.get("fallback_reason")
        if reason:
            print(f"warning: {reason}")
        print(f"stream backend: {describe_settings(info)}; connected")

    # -- %%publish / %publish ---------------------------------------------------------------

    @magic_arguments()
    @argument("run_id", help="The run's id: 1-128 letters, digits, '_' or '-'.")
    @argument(
        "event_type",
        nargs="?",
        help="Line form: the event type (progress, token, "
        "step, checkpoint, heartbeat, complete, error, cancelled, started, or a custom "
        "name).",
    )
    @argument(
        "fields",
        nargs="*",
        help="Line form: key=value fields; values are JSON when "
        'they parse (0.5, true, {"a": 1}), text otherwise.',
    )
    @argument("--agent", help="Cell: agent_name of the started event.")
    @argument("--framework", help="Cell: framework of the started event.")
    @argument(
        "--events",
        metavar="PRESET_OR_LIST",
        help="Cell: which events the run emits: "
        "minimal, chat, debug, all, or a list such as token,step,custom:fraud_check.",
    )
    @argument(
        "--watch",
        action="store_true",
        help="Cell: show the live view above the cell's output first.",
    )
    @argument(
        "--replace",
        action="store_true",
        help="Cell: the run id already holds events (a re-run cell): clear them first.",
    )
    @argument(
        "--append",
        action="store_true",
        help="Cell: the run id already holds events: add this run to them (a new attempt "
        "after the old one). Without --replace or --append such a cell is refused.",
    )
    @argument(
        "--langchain",
        action="store_true",
        help="Cell: trace every LangChain/LangGraph call the cell makes (tokens, steps, "
        "usage) with no change to its code; needs dockrion-nb[langchain].",
    )
    @argument(
        "--instrument",
        action="store_true",
        help="Cell: trace the OpenAI and Anthropic clients the cell uses (streamed tokens, "
        "usage, time to first token); needs dockrion-nb[openai] or [anthropic].",
    )
    @argument(
        "--events-body",
        action="store_true",
        help="Cell: the body is events "
        "(JSON Lines or a YAML list), validated whole, then published in order.",
    )
    @line_cell_magic
    def publish(self, line: str, cell: str | None = None) -> Any:
        """Publish events, or run a cell as a traced run.

        Cell, default: the body runs as a traced run. ``started`` is emitted, the run's
        StreamContext is in the namespace as ``ctx`` (``StreamMagics.context_name``), the code
        runs (top-level ``await`` works), then ``complete`` (output: the last expression made
        JSON-safe, and the latency), ``error`` (message, exception type as code, traceback in
        details; the exception still surfaces) or, on interrupt, ``cancelled``::

            %%publish run-1 --agent researcher --watch
            ctx.sync_emit_progress("search", 0.5)
            await ctx.emit_token("hello")
            {"answer": 42}

        A run id that already holds events (the cell ran before) is refused unless
        ``--replace`` (clear the old run first) or ``--append`` (a new attempt after it) says
        what to do. ``--langchain`` and ``--instrument`` trace the LangChain/LangGraph calls
        and the OpenAI/Anthropic clients the cell uses, with no emits of its own.

        Cell, ``--events-body``: one event per line (JSON Lines) or a YAML list; every event is
        validated first (errors name the line), then all are published in order::

            %%publish run-1 --events-body
            {"type": "started", "agent_name": "bot"}
            {"type": "token", "content": "Hi"}
            {"type": "complete", "output": {"text": "Hi"}}

        Line form, one event::

            %publish run-1 progress step=search progress=0.5 message="3 sources"
        """
        __tracebackhide__ = True  # a failing cell's traceback starts at the cell's own code
        args = parse_argstring(self.publish, line)
        with user_errors():
            run_id = validate_run_id(args.run_id)
        if cell is None:
            return self._publish_line(run_id, args)
        if args.event_type is not None or args.fields:
            extra = " ".join([args.event_type or "", *args.fields]).strip()
            raise UsageError(
                f"%%publish takes only a run id, not {extra!r}; put events in the body "
                "with --events-body"
            )
        if args.events_body:
            traced_only = flags_given(args, TRACED_CELL_FLAGS)
            if traced_only:
                verb = "applies" if len(traced_only) == 1 else "apply"
                raise UsageError(
                    f"{', '.join(traced_only)} {verb} to a traced cell, not --events-body "
                    "(put agent_name in the started event)"
                )
            return self._publish_body(run_id, cell, args.watch)
        return self._run_traced(run_id, cell, args)

    def _publish_line(self, run_id: str, args: Any) -> None:
        if args.event_type is None:
            raise UsageError(
                "usage: %publish RUN_ID TYPE [key=value ...] (or %%publish RUN_ID for a cell)"
            )
        cell_only = flags_given(args, (*TRACED_CELL_FLAGS, "watch", "events_body"))
        if cell_only:
            verb = "is" if len(cell_only) == 1 else "are"
            raise UsageError(f"{', '.join(cell_only)} {verb} only for the %%publish cell magic")
        engine = get_engine()
        with user_errors():
            event = user_event(args.event_type, run_id, parse_fields(args.fields))
            stored = api.publish(run_id, event, engine=engine)
        print(f"published {stored.type} #{stored.sequence} to run {run_id}")

    def _publish_body(self, run_id: str, body: str, watch: bool) -> None:
        engine = get_engine()
        with user_errors():
            events = parse_events_text(body, run_id)
            if watch:
                api.watch(run_id, engine=engine)
            stored = api.publish_many(run_id, events, engine=engine)
        seqs = [e.sequence for e in stored]
        span = f"#{seqs[0]}" if len(seqs) == 1 else f"#{seqs[0]}-#{seqs[-1]}"
        print(
            f"published {len(stored)} event{'s' if len(stored) != 1 else ''} ({span}) "
            f"to run {run_id} on {engine.location()}"
        )

    def _run_traced(self, run_id: str, body: str, args: Any) -> Any:
        __tracebackhide__ = True
        engine = get_engine()
        if args.replace and args.append:
            raise UsageError("--replace and --append are opposites: give one of them")
        with user_errors():
            events = EventsFilter.parse(args.events) if args.events else None
        code = CellCode(self.shell, body)  # a SyntaxError surfaces before the run starts
        integrations = [
            name
            for name, on in (("langchain", args.langchain), ("instrument", args.instrument))
            if on
        ]
        trace = Trace(
            run_id,
            agent=args.agent,
            framework=args.framework,
            events=events,
            integrations=integrations,
            mode="replace" if args.replace else "append" if args.append else "new",
            engine=engine,
        )
        with user_errors(), _run_exists_as_flags():
            if integrations:
                # A missing framework is one line before the run starts, not a failed run.
                from .integrations import CELL_SCOPES, load_module

                for name in integrations:
                    load_module(*CELL_SCOPES[name], f"--{name}")
            if args.watch:
                api.watch(run_id, engine=engine)
            trace.start()
        shell = self.shell
        assert shell is not None
        shell.user_ns[self.context_name] = trace.ctx
        try:
            with trace.scope():
                value = code.run(shell.user_global_ns, shell.user_ns)
        except BaseException as exc:
            try:
                trace.end(exc, cell_traceback(exc, code.filename))
            except Exception as publish_exc:
                log.warning(
                    "run %s: could not record the failure: %s", run_id, one_line(publish_exc)
                )
            raise
        with user_errors():
            trace.complete(value)
        return value if code.shows_result else None

    # -- %replay, %watch, %runs ---------------------------------------------------------------

    @magic_arguments()
    @argument("run_id", help="The run to replay.")
    @argument(
        "--from",
        dest="from_sequence",
        type=int,
        default=1,
        metavar="N",
        help="Start at sequence N (default 1).",
    )
    @argument("--last", type=int, metavar="N", help="Only the last N (matching) events.")
    @argument(
        "--type",
        dest="types",
        nargs="+",
        action="extend",
        metavar="T",
        help="Only these types: token step ... custom custom:<name> (comma lists work). "
        "The widget always keeps started/complete/error/cancelled.",
    )
    @argument(
        "--as",
        dest="view",
        choices=VIEWS,
        default=None,
        help="widget (default, StreamMagics.replay_as), table, json, or df (pandas).",
    )
    @line_magic
    def replay(self, line: str) -> Any:
        """Show the stored events of a run.

        ``%replay run-1`` shows the replay widget; ``--as table`` an HTML/text table, ``--as
        json`` the raw events (JSON Lines), ``--as df`` a pandas DataFrame. The result is the
        cell's output, so ``df = %replay run-1 --as df`` keeps it. A run with no stored events
        is an error that names the backend.
        """
        args = parse_argstring(self.replay, line)
        check_from_last(args.from_sequence, args.last)
        with user_errors():
            return api.replay(
                args.run_id,
                from_sequence=args.from_sequence,
                last=args.last,
                types=args.types,
                as_=cast(api.ReplayView, args.view or self.replay_as),
                engine=get_engine(),
            )

    @magic_arguments()
    @argument("run_id", help="The run to watch; it may not have started yet.")
    @argument(
        "--from",
        dest="from_sequence",
        type=int,
        default=1,
        metavar="N",
        help="Start at sequence N (default 1).",
    )
    @argument(
        "--type",
        dest="types",
        nargs="+",
        action="extend",
        metavar="T",
        help="Only these types (started/complete/error/cancelled always show).",
    )
    @argument("--max-events", type=int, metavar="N", help="Keep at most N events in the view.")
    @line_magic
    def watch(self, line: str) -> None:
        """Show the live view of a run: stored events first, then new ones as they arrive.

        Returns at once; the view keeps updating while other cells run. A run with no events
        yet is not an error: the view shows "waiting" until it starts. Use
        ``dockrion_nb.watch(run_id)`` to keep a handle (``.events``, ``.wait()``, ``.close()``).
        """
        args = parse_argstring(self.watch, line)
        check_from_last(args.from_sequence, None)
        with user_errors():
            api.watch(
                args.run_id,
                from_sequence=args.from_sequence,
                types=args.types,
                max_events=args.max_events,
                engine=get_engine(),
            )

    @magic_arguments()
    @argument("run_ids", nargs="+", metavar="RUN_ID", help="Two or more runs to compare.")
    @argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="Stop after the stored events (default: follow runs still going).",
    )
    @argument("--max-events", type=int, metavar="N", help="Keep at most N events per run.")
    @line_magic
    def compare(self, line: str) -> None:
        """Show two or more runs side by side: outputs, step waterfalls on one time axis,
        tokens, time to first token, latency, errors, and a diff of the final outputs::

            %compare run-a run-b
            %compare baseline-1 candidate-1 candidate-2 --no-live

        Works on stored runs and on live ones. ``dockrion_nb.compare(...)`` returns the view.
        """
        args = parse_argstring(self.compare, line)
        with user_errors():
            api.compare(
                *args.run_ids, live=args.live, max_events=args.max_events, engine=get_engine()
            )

    @magic_arguments()
    @argument("pattern", nargs="?", help="Glob on the run id, e.g. 'demo-*'.")
    @line_magic
    def runs(self, line: str) -> Any:
        """List the runs the backend holds: run id, events, last sequence, status (from the
        last event), run status (what a ``RunManager`` recorded: accepted, running, completed,
        failed or cancelled; on Redis by any process), first and last time, and on Redis the
        TTL left."""
        args = parse_argstring(self.runs, line)
        with user_errors():
            return api.runs(args.pattern, engine=get_engine())


@magics_class
class ServerMagics(Magics):
    """``%dockrion``: runs on a running Dockrion server, over its HTTP/SSE API."""

    @magic_arguments()
    @argument("action", choices=["attach", "run", "cancel"], help="What to do.")
    @argument("url", metavar="URL", help="The server's root URL, e.g. http://localhost:8080.")
    @argument(
        "target",
        metavar="RUN_ID|INPUT",
        help="attach, cancel: the run id. run: the agent's input, a JSON object in quotes.",
    )
    @argument("--run-id", help="run: ask the server for this run id.")
    @argument(
        "--from",
        dest="from_sequence",
        type=int,
        default=1,
        metavar="N",
        help="attach: start at sequence N (default 1).",
    )
    @argument(
        "--type",
        dest="types",
        nargs="+",
        action="extend",
        metavar="T",
        help="attach, run: only these types (started/complete/error/cancelled always show).",
    )
    @argument("--max-events", type=int, metavar="N", help="Keep at most N events in the view.")
    @argument("--no-watch", action="store_true", help="run: start the run, show no view.")
    @argument("--reason", help="cancel: the reason the cancelled event carries.")
    @argument(
        "--api-key-env",
        metavar="VAR",
        default="DOCKRION_API_KEY",
        help="The environment variable that holds the server's API key (default "
        "DOCKRION_API_KEY); the key itself never goes in the notebook.",
    )
    @line_magic
    def dockrion(self, line: str) -> None:
        """Attach to, start or cancel a run on a running Dockrion server.

        Examples::

            %dockrion attach http://localhost:8080 3f2c9a1e-run-id   # live view of its run
            %dockrion run http://localhost:8080 '{"input": "hello"}'  # start a run, watch it
            %dockrion cancel http://localhost:8080 3f2c9a1e-run-id   # DELETE /runs/ID

        The view follows the run over the server's SSE stream (``GET /runs/ID/events``): it
        replays the run from the start, then shows new events as they arrive, resumes from
        the last sequence when the connection drops ("reconnecting" meanwhile), ends at the
        run's terminal event, and has a "cancel run" button. An unreachable server, a run it
        does not know and a refused API key are one-line errors. Needs dockrion-nb[server].
        """
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"cannot read the options: {exc}") from None
        args = getattr(self.dockrion, "parser").parse_args(tokens)  # noqa: B009
        misplaced = [
            flag
            for flag, on, actions in (
                ("--run-id", args.run_id is not None, ("run",)),
                ("--from", args.from_sequence != 1, ("attach",)),
                ("--type", args.types is not None, ("attach", "run")),
                ("--max-events", args.max_events is not None, ("attach", "run")),
                ("--no-watch", args.no_watch, ("run",)),
                ("--reason", args.reason is not None, ("cancel",)),
            )
            if on and args.action not in actions
        ]
        if misplaced:
            raise UsageError(f"{', '.join(misplaced)}: not an option of %dockrion {args.action}")
        api_key = os.environ.get(args.api_key_env)
        if api_key is None and args.api_key_env != "DOCKRION_API_KEY":
            raise UsageError(f"--api-key-env {args.api_key_env}: that variable is not set")
        engine = get_engine()
        with user_errors():
            if args.action == "cancel":
                answer = api.cancel_server_run(
                    args.url, args.target, reason=args.reason, api_key=api_key, engine=engine
                )
                print(
                    f"run {args.target}: cancel requested; the server says "
                    f"{one_line(str(answer.get('status')))}"
                )
                return
            run_id = args.target
            if args.action == "run":
                run_id = api.start_server_run(
                    args.url,
                    _run_input(args.target),
                    run_id=args.run_id,
                    api_key=api_key,
                    engine=engine,
                )
                print(f"started run {run_id} on {mask_url(args.url)}")
                if args.no_watch:
                    return
            api.watch(
                run_id,
                from_sequence=args.from_sequence,
                types=args.types,
                max_events=args.max_events,
                engine=engine,
                server=args.url,
                api_key=api_key,
            )


def _run_input(text: str) -> dict[str, Any]:
    """``%dockrion run``'s input: a JSON object, or a one-line error that shows the form."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f'the run\'s input is not JSON ({exc}); quote a JSON object: \'{{"input": "hi"}}\''
        ) from None
    if not isinstance(payload, dict):
        raise UsageError(
            f'the run\'s input must be a JSON object such as \'{{"input": "hi"}}\', not '
            f"{type(payload).__name__}"
        )
    return payload


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; ``%config StreamMagics`` lists the settings."""
    magics = StreamMagics(ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    ipython.register_magics(ServerMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Forget the magics' configurable and stop the engine (its views stop following)."""
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, StreamMagics)]
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        for name in ("stream_backend", "publish", "replay", "watch", "runs", "dockrion", "compare"):
            owner = getattr(table.get(name), "__self__", None)
            if isinstance(owner, StreamMagics | ServerMagics):
                del table[name]
    reset_engine()


__all__ = ["ServerMagics", "StreamMagics", "load_ipython_extension", "unload_ipython_extension"]
