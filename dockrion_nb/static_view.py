"""The static view of runs: what a notebook shows where the widget cannot run.

nbconvert, nbviewer, GitHub and a notebook opened without a kernel show a widget's text/HTML
fallback, not its live front end. ``RunView`` and ``CompareView`` put these in their mime
bundle, and refresh them with the final view when the run ends. Event content is untrusted:
every string is escaped, nothing from an event becomes markup.
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import BaseEvent, clip, summarize

OUTPUT_CHARS = 4000
"""Output text shown in the static view; longer outputs keep their end ("…" marks the cut)."""
STEP_ROWS = 20
EVENT_ROWS = 10


@dataclass
class RunMetrics:
    """The figures a run is compared by, from its events (the latest attempt only)."""

    status: str = "waiting"
    events: int = 0
    latency_s: float | None = None
    time_to_first_token_ms: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    steps: int = 0
    failed_steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    output: str = ""
    agent: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def latest_attempt(events: Sequence[BaseEvent]) -> list[BaseEvent]:
    """The events from the last ``started`` on: a run re-run under the same id holds one
    ``started`` per attempt, and only the latest is the run as it stands."""
    starts = [i for i, e in enumerate(events) if e.type == "started"]
    return list(events[starts[-1] :]) if len(starts) > 1 else list(events)


def run_metrics(events: Sequence[BaseEvent]) -> RunMetrics:
    """Status, latency, time to first token, tokens and rate, steps, usage, errors, output."""
    m = RunMetrics()
    attempt = latest_attempt(events)
    m.events = len(attempt)
    if not attempt:
        return m
    m.status = "running"
    start = attempt[0].timestamp
    first_token = last_token = None
    text: list[str] = []
    for e in attempt:
        d = e.to_dict()
        if e.type == "started":
            m.agent = " ".join(str(d[k]) for k in ("agent_name", "framework") if d.get(k))
        elif e.type == "token":
            m.tokens += 1
            text.append(str(d.get("content", "")))
            first_token = first_token or e.timestamp
            last_token = e.timestamp
        elif e.type == "step":
            m.steps += 1
            if d.get("status") == "error":
                m.failed_steps += 1
        elif e.type == "custom:llm_usage":
            m.input_tokens += d.get("input_tokens") or 0
            m.output_tokens += d.get("output_tokens") or 0
            ttft = d.get("time_to_first_token_ms")
            if m.time_to_first_token_ms is None and isinstance(ttft, int | float):
                m.time_to_first_token_ms = float(ttft)
        elif e.type in ("complete", "error", "cancelled") and m.status == "running":
            m.status = e.type
            if e.type == "complete":
                latency = d.get("latency_seconds")
                m.latency_s = (
                    float(latency)
                    if isinstance(latency, int | float)
                    else (e.timestamp - start).total_seconds()
                )
                if not text and d.get("output"):
                    m.output = json.dumps(d["output"], ensure_ascii=False, indent=1)
            elif e.type == "error":
                m.errors.append(f"{d.get('code') or 'error'}: {d.get('error')}")
    if first_token is not None:
        m.time_to_first_token_ms = (first_token - start).total_seconds() * 1000
        span = (last_token - first_token).total_seconds() if last_token else 0.0
        if m.tokens >= 2 and span > 0:
            m.tokens_per_s = (m.tokens - 1) / span
    if text:
        m.output = "".join(text)
    return m


def tail_text(text: str, limit: int = OUTPUT_CHARS) -> str:
    """The end of ``text``, with "…" where it was cut."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    esc = html.escape
    head = "".join(f'<th style="text-align:left">{esc(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="text-align:left">{esc(str(c))}</td>' for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def run_html(run_id: str, backend: str, status: str, events: Sequence[BaseEvent]) -> str:
    """One run's final view as escaped HTML: header, output, errors, steps, last events."""
    esc = html.escape
    m = run_metrics(events)
    counts: dict[str, int] = {}
    for e in events:
        counts[e.type] = counts.get(e.type, 0) + 1
    parts = [
        '<div class="dockrion-runview-static">',
        f"<p><b>run {esc(run_id)}</b> &middot; {esc(status)} &middot; {len(events)} events"
        f" &middot; backend {esc(backend)}"
        + (f" &middot; {esc(m.agent)}" if m.agent else "")
        + (f" &middot; latency {m.latency_s:.2f} s" if m.latency_s is not None else "")
        + "</p>",
    ]
    if counts:
        parts.append(f"<p>{esc(', '.join(f'{k} {v}' for k, v in sorted(counts.items())))}</p>")
    for err in m.errors:
        parts.append(f'<p style="color:#d32f2f"><b>Error</b> {esc(err)}</p>')
    if m.output:
        stats = f"{m.tokens} tokens" if m.tokens else "output"
        if m.time_to_first_token_ms is not None:
            stats += f", first token after {fmt_ms(m.time_to_first_token_ms)}"
        if m.tokens_per_s is not None:
            stats += f", {m.tokens_per_s:.1f} tokens/s"
        parts.append(
            f"<p><b>Output</b> ({esc(stats)})</p>"
            f'<pre style="white-space:pre-wrap">{esc(tail_text(m.output))}</pre>'
        )
    steps = [e for e in latest_attempt(events) if e.type == "step"][-STEP_ROWS:]
    if steps:
        rows = []
        for e in steps:
            d = e.to_dict()
            dur = d.get("duration_ms")
            shown = fmt_ms(dur) if dur is not None else "-"
            rows.append((d.get("node_name", ""), shown, d.get("status") or ""))
        parts.append("<p><b>Steps</b></p>" + _table(("step", "duration", "status"), rows))
    last = [(e.sequence, e.type, clip(summarize(e), 200)) for e in events[-EVENT_ROWS:]]
    if last:
        parts.append(_table(("#", "type", "summary"), last))
    parts.append("</div>")
    return "".join(parts)


def output_diff(a: str, b: str, names: tuple[str, str]) -> str:
    """A unified diff of two outputs, line by line (empty when they are equal)."""
    lines = difflib.unified_diff(
        a.splitlines(), b.splitlines(), fromfile=names[0], tofile=names[1], lineterm=""
    )
    return "\n".join(lines)


def compare_rows(metrics: Sequence[RunMetrics]) -> list[tuple[str, ...]]:
    """The comparison table's rows: one metric a row, one run a column."""

    def each(fn: Any) -> tuple[str, ...]:
        return tuple(fn(m) for m in metrics)

    return [
        ("status", *each(lambda m: m.status)),
        ("events", *each(lambda m: str(m.events))),
        ("latency", *each(lambda m: fmt_ms(m.latency_s * 1000) if m.latency_s else "-")),
        ("time to first token", *each(lambda m: fmt_ms(m.time_to_first_token_ms))),
        ("tokens streamed", *each(lambda m: str(m.tokens))),
        (
            "tokens/s",
            *each(lambda m: f"{m.tokens_per_s:.1f}" if m.tokens_per_s is not None else "-"),
        ),
        ("LLM tokens in / out", *each(lambda m: f"{m.input_tokens} / {m.output_tokens}")),
        ("steps", *each(lambda m: str(m.steps))),
        ("errors", *each(lambda m: "; ".join(m.errors) or "none")),
    ]


def compare_html(runs: Sequence[tuple[str, Sequence[BaseEvent]]]) -> str:
    """Runs side by side as escaped HTML: the metrics table, outputs, and diffs of outputs."""
    esc = html.escape
    metrics = [run_metrics(events) for _, events in runs]
    names = [run_id for run_id, _ in runs]
    parts = [
        '<div class="dockrion-compare-static">',
        f"<p><b>Comparing {len(runs)} runs</b></p>",
        _table(("", *names), compare_rows(metrics)),
    ]
    cells = "".join(
        f'<td style="vertical-align:top;text-align:left"><pre style="white-space:pre-wrap">'
        f"{esc(tail_text(m.output, 1500))}</pre></td>"
        for m in metrics
    )
    parts.append(f"<p><b>Outputs</b></p><table><tr>{cells}</tr></table>")
    for k in range(1, len(runs)):
        diff = output_diff(metrics[0].output, metrics[k].output, (names[0], names[k]))
        parts.append(
            f"<p><b>Output diff</b> {esc(names[0])} → {esc(names[k])}</p>"
            f"<pre>{esc(diff) if diff else '(identical)'}</pre>"
        )
    parts.append("</div>")
    return "".join(parts)


__all__ = [
    "RunMetrics",
    "compare_html",
    "compare_rows",
    "latest_attempt",
    "output_diff",
    "run_html",
    "run_metrics",
    "tail_text",
]
