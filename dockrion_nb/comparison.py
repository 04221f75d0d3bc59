"""``CompareView``: two or more runs side by side, stored or live, in one widget.

Each run is followed by a ``RunView`` of its own that has no comm (a member): it subscribes,
keeps and batches that run's events exactly as a shown view does, and hands each message to
the comparison, which sends what all members have ready as one custom message
(``{kind: "compare", parts: [{run: i, msg}]}``) within one widget's budget. However many runs
are compared, the page gets at most about 20 comm messages a second from it. Each member's
small state (status, counts, the last sequence sent) travels in the ``runs`` trait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import anywidget
import traitlets as t

from .displays import Displays, latest_parent
from .engine import Engine, get_engine
from .events import BaseEvent, validate_run_id
from .static_view import RunMetrics, compare_html, compare_rows, run_metrics
from .tables import text_table
from .widget import CSS_PATH, ESM_PATH, MSG_INTERVAL, RunView

MAX_RUNS = 8
"""Runs one comparison shows: enough side by side, and a bound on the work behind it."""
MEMBER_STATE = (
    "run_id",
    "backend",
    "status",
    "connection",
    "note",
    "event_count",
    "sent_upto",
    "last_sequence",
    "latency_seconds",
    "max_events",
)


class _Member(RunView):
    """One compared run: a ``RunView`` without a comm of its own; its messages go to the
    comparison (``relay``)."""

    def __init__(self, run_id: str, relay: CompareView, index: int, **kwargs: Any) -> None:
        self._relay = relay
        self._index = index
        super().__init__(run_id, **kwargs)

    def open(self) -> None:
        """No comm: the comparison carries this run's messages."""

    def _emit(self, payload: dict[str, Any]) -> None:
        self._relay._member_message(self._index, payload)

    def _can_send(self) -> bool:
        return self._relay._can_send()

    def _ipython_display_(self) -> None:
        raise TypeError("a compared run is shown by its CompareView")

    def _refresh_static(self, force: bool = False) -> None:
        """This run stopped following (engine thread): the comparison notes it."""
        self._relay._member_ended(self._index)


class CompareView(anywidget.AnyWidget):
    """Runs ``run_ids`` side by side: outputs, step waterfalls on one time axis, token counts,
    time to first token, latency, errors, and a diff of the final outputs.

    Works on stored runs and live ones (``live=False`` stops after the replay). Each run's
    latest attempt is compared. ``max_events`` bounds what is kept per run.
    """

    _esm = ESM_PATH
    _css = CSS_PATH

    _kind = t.Unicode("compare").tag(sync=True)
    run_ids = t.List(t.Unicode()).tag(sync=True)
    runs = t.List(t.Dict()).tag(sync=True)
    _store_key = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        run_ids: Iterable[str],
        *,
        live: bool = True,
        max_events: int | None = None,
        engine: Engine | None = None,
        **kwargs: Any,
    ) -> None:
        ids = [validate_run_id(r) for r in run_ids]
        if len(ids) < 2:
            raise ValueError(f"run_ids: compare needs two runs or more, got {len(ids)}: {ids}")
        if len(ids) > MAX_RUNS:
            raise ValueError(f"run_ids: compare shows at most {MAX_RUNS} runs, got {len(ids)}")
        duplicates = sorted({r for r in ids if ids.count(r) > 1})
        if duplicates:
            raise ValueError(f"run_ids: each run once, {', '.join(duplicates)} is repeated")
        self._engine = engine or get_engine()
        super().__init__(run_ids=ids, _store_key=uuid.uuid4().hex, **kwargs)
        self._lock = threading.Lock()
        self._parts: list[dict[str, Any]] = []
        self._dirty = True
        self._next_slot = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        # each display and what its static HTML showed (see _static_key)
        self._displays = Displays()
        self._ended: set[int] = set()
        self._final = threading.Event()
        self.messages_sent = 0
        # Members start following as they are made: a member's first message may reach
        # _flush before the next one exists, so the list grows one by one.
        self.members: list[_Member] = []
        for i, run_id in enumerate(ids):
            member = _Member(run_id, self, i, live=live, max_events=max_events, engine=self._engine)
            member.observe(self._member_changed, names=list(MEMBER_STATE))
            self.members.append(member)
        self._dirty = True
        self._schedule()
        self.on_msg(self._on_front_end_msg)
        with contextlib.suppress(RuntimeError):  # the runs may all have ended already
            self._engine.loop.call_soon_threadsafe(self._all_ended)

    # -- Python API -----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> list[str]:
        """Block until every run has ended and the comparison's final state is out (or
        ``timeout`` seconds); returns their statuses."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for member in self.members:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(member.wait(left))
        if all(not m.following for m in self.members):
            self._final.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out

    def events(self, run_id: str) -> list[BaseEvent]:
        """The events received so far for one of the compared runs."""
        for member in self.members:
            if member.run_id == run_id:
                return member.events
        raise KeyError(f"run_id: {run_id!r} is not compared here ({', '.join(self.run_ids)})")

    def metrics(self) -> dict[str, RunMetrics]:
        """Each run's figures (latest attempt): status, latency, time to first token, ..."""
        return {m.run_id: run_metrics(m.events) for m in self.members}

    def close(self) -> None:
        """End every run's subscription, then close the widget."""
        if "members" in self.__dict__ and not self._closing:
            self._closing = True
            for member in self.members:
                member.close()
        super().close()
        self.__dict__.pop("_repr_mimebundle_", None)

    # -- static fallback -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if self.comm is not None:
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle:
                data, metadata = dict(bundle[0]), dict(bundle[1])
        runs = [(m.run_id, m.events) for m in self.members]
        data["text/plain"] = self._summary_text()
        data["text/html"] = compare_html(runs)
        return data, metadata

    def _summary_text(self) -> str:
        metrics = [run_metrics(m.events) for m in self.members]
        header = ("", *self.run_ids)
        return f"CompareView of {len(self.members)} runs\n" + text_table(
            header, compare_rows(metrics)
        )

    def _ipython_display_(self) -> None:
        """Display with a display id, so the static view can be replaced by the final one
        once every run has ended."""
        self._displays.show(self._static_key, self._repr_mimebundle_)

    def _member_ended(self, index: int) -> None:
        """Engine thread: a run stopped following; once all have, the static view is final."""
        self._ended.add(index)
        self._all_ended()

    def _all_ended(self) -> None:
        """Engine thread: once every run has stopped following (and every member exists: a
        stored run can end before the next member is made), send the runs' final state at
        once and refresh the static view, both under the latest request (nbclient saves only
        what comes under the running cell; the earlier updates went under the cell that made
        this view)."""
        if self._final.is_set() or len(self._ended) < len(self.run_ids):
            return
        if len(self.members) < len(self.run_ids):
            return
        if self._can_send():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._dirty = True
            with latest_parent():
                self._flush()
                self._refresh_static()
        self._final.set()

    def refresh_static(self) -> None:
        """Replace the static text/HTML of every display of this comparison with the current
        one. Automatic once every run has ended, for each display shown before that."""
        self._refresh_static(force=True)

    def _static_key(self) -> tuple[Any, ...]:
        """What the static HTML depends on: each run's (see ``RunView._static_key``)."""
        return tuple(m._static_key() for m in list(self.__dict__.get("members", [])))

    def _refresh_static(self, force: bool = False) -> None:
        """Update every display whose comparison changed since it was shown (or all, with
        ``force``); a front end draws the widget again, which keeps nothing of value here."""
        if self.comm is None or self._closing:
            return
        self._displays.refresh(self._static_key, self._repr_mimebundle_, force)

    # -- engine thread: carrying the members' messages -------------------------------------------

    def _can_send(self) -> bool:
        """Whether messages have somewhere to go (a comm; a test's page)."""
        return self.comm is not None and not self._closing

    def _emit(self, payload: dict[str, Any]) -> None:
        """One custom message to the front end (a test seam)."""
        self.send(payload)

    def _member_state(self, member: RunView) -> dict[str, Any]:
        return {name: getattr(member, name) for name in MEMBER_STATE}

    def _member_changed(self, _change: Any) -> None:
        self._dirty = True
        self._schedule()

    def _member_message(self, index: int, payload: dict[str, Any]) -> None:
        with self._lock:
            self._parts.append({"run": index, "msg": payload})
        self._schedule()

    def _schedule(self) -> None:
        """Send within the budget: now if the slot is free, else once, when it is."""
        if self._timer is not None:
            return
        delay = self._next_slot - time.monotonic()
        if delay <= 0 and self._engine.in_engine_thread:
            self._flush()
            return
        with contextlib.suppress(RuntimeError):
            self._engine.loop.call_soon_threadsafe(self._arm, max(0.0, delay))

    def _arm(self, delay: float) -> None:
        if self._timer is None:
            self._timer = self._engine.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        """One message with every member's pending parts, and the members' state (engine
        thread)."""
        self._timer = None
        with self._lock:
            parts, self._parts = self._parts, []
        if not self._can_send():
            return
        sent = 0
        if self._dirty:
            self._dirty = False
            self.runs = [self._member_state(m) for m in list(self.members)]
            sent += 1
        if parts:
            self._emit({"kind": "compare", "parts": parts})
            sent += 1
        self.messages_sent += sent
        self._next_slot = time.monotonic() + MSG_INTERVAL * max(1, sent)

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Kernel thread: a run's store asks for events it missed ({kind, run, after})."""
        if not isinstance(content, dict):
            return
        index = content.get("run")
        if (
            isinstance(index, int)
            and not isinstance(index, bool)
            and 0 <= index < len(self.members)
        ):
            inner = {k: v for k, v in content.items() if k != "run"}
            self.members[index]._on_front_end_msg(self.members[index], inner, [])


__all__ = ["MAX_RUNS", "CompareView"]
