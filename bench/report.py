"""Rows, targets and the markdown that ``python -m bench`` prints and writes."""

from __future__ import annotations

import cProfile
import math
import os
import platform
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ProfileRun = Callable[[cProfile.Profile], Awaitable[Any]]

HEADER = (
    "| # | benchmark | ours (dockrion-nb) | Dockrion 0.0.3 | ratio | Redis ceiling | target | met |"
)
COLUMNS = 8


@dataclass
class Target:
    """What the issue asks of a row: a ratio against Dockrion, every subscriber receiving
    everything, a share of the raw ceiling, or an exact value."""

    min_ratio: float | None = None
    delivered: bool = False
    min_ceiling_share: float | None = None
    max_value: float | None = None  # e.g. duplicate sequences: 0
    min_value: float | None = None
    text: str = ""

    def describe(self) -> str:
        if self.text:
            return self.text
        parts = []
        if self.min_ratio is not None:
            parts.append("no worse" if self.min_ratio == 1.0 else f"≥ {self.min_ratio:g}x")
        if self.delivered:
            parts.append("delivered 1.0")
        if self.min_ceiling_share is not None:
            parts.append(f"≥ {self.min_ceiling_share:.0%} of ceiling")
        if self.max_value is not None:
            parts.append(f"≤ {self.max_value:g}")
        if self.min_value is not None:
            parts.append(f"≥ {self.min_value:g}")
        return ", ".join(parts) or "report"


@dataclass
class Row:
    """One line of the table. ``higher`` says which direction is better for the figures."""

    key: str
    name: str
    unit: str
    ours: float | None = None
    dockrion: float | None = None
    ceiling: float | None = None
    higher: bool = True
    ours_note: str = ""
    dockrion_note: str = ""
    ceiling_note: str = ""
    ours_delivered: float | None = None
    dockrion_delivered: float | None = None
    target: Target | None = None
    reason: str = ""  # why ours (or the row) is not measured
    detail: str = ""  # extra figures shown with the profile of a missed target
    profile: ProfileRun | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float | None:
        a, b = self.ours, self.dockrion
        if a is None or b is None or self.unit == "dups":
            return None
        if self.higher:
            return a / b if b > 0 else (math.inf if a > 0 else None)
        return b / a if a > 0 else (math.inf if b > 0 else None)

    @property
    def ceiling_share(self) -> float | None:
        if self.ours is None or self.ceiling is None or self.ceiling <= 0:
            return None
        return self.ours / self.ceiling if self.higher else self.ceiling / self.ours

    @property
    def met(self) -> bool | None:
        t = self.target
        if t is None or self.ours is None:
            return None
        ok = True
        if t.min_ratio is not None:
            r = self.ratio
            ok = ok and r is not None and r >= t.min_ratio
        if t.delivered:
            ok = ok and self.ours_delivered is not None and self.ours_delivered >= 1.0
        if t.min_ceiling_share is not None:
            share = self.ceiling_share
            ok = ok and share is not None and share >= t.min_ceiling_share
        if t.max_value is not None:
            ok = ok and self.ours <= t.max_value
        if t.min_value is not None:
            ok = ok and self.ours >= t.min_value
        return ok

    def cells(self) -> list[str]:
        ours = fmt(self.ours, self.unit, self.ours_delivered, self.ours_note)
        if self.ours is None and (self.reason or not self.ours_note):
            ours = "not measured" + (f": {self.reason}" if self.reason else "")
        dock = fmt(self.dockrion, self.unit, self.dockrion_delivered, self.dockrion_note)
        ratio = self.ratio
        ratio_s = "—" if ratio is None else ("∞" if math.isinf(ratio) else f"{ratio:.2f}x")
        ceil = fmt(self.ceiling, self.unit, None, self.ceiling_note)
        share = self.ceiling_share
        if share is not None and self.ceiling is not None:
            ceil += f" (ours {share:.0%})"
        met = {None: "—", True: "yes", False: "**no**"}[self.met]
        target = self.target.describe() if self.target else "—"
        return [self.key, self.name, ours, dock, ratio_s, ceil, target, met]


def fmt(value: float | None, unit: str, delivered: float | None = None, note: str = "") -> str:
    if value is None:
        return note or "—"
    if unit == "ev/s":
        s = f"{value:,.0f}/s"
    elif unit == "ms":
        digits = 3 if value < 1 else 2 if value < 10 else 1
        s = f"{value:.{digits}f} ms"
    elif unit == "s":
        s = f"{value:.2f} s"
    elif unit == "dups":
        s = f"{value:,.0f} duplicates"
    else:
        s = f"{value:,.4g} {unit}".strip()
    if delivered is not None:
        s += f", delivered {delivered:.3f}"
    if note:
        s += f" ({note})"
    return s


def table(rows: list[Row]) -> str:
    lines = [HEADER, "|" + "---|" * COLUMNS]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(server: str, load_before: str = "") -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "redis-py": ver("redis") + (" + hiredis " + ver("hiredis") if ver("hiredis") else ""),
        "pydantic": ver("pydantic"),
        "dockrion (reference)": ver("dockrion"),
        "dockrion-nb": ver("dockrion-nb") + f" (commit {git_commit()})",
        "server": server,
        "load average (1/5/15 min) before": load_before or "?",
        "load average (1/5/15 min) after": load_average(),
        "OS": platform.platform(),
    }
