"""Dockrion's event filter: presets, explicit lists, ``custom``/``custom:<name>``.

Mandatory events (started, complete, error, cancelled) always pass, because a run without its
lifecycle events cannot be followed.
"""

from __future__ import annotations

from collections.abc import Iterable

from .events import CUSTOM_PREFIX, MANDATORY_TYPES

CONFIGURABLE = frozenset({"token", "step", "progress", "checkpoint", "heartbeat"})
PRESETS: dict[str, frozenset[str]] = {
    "minimal": frozenset(),
    "chat": frozenset({"token", "step", "progress", "heartbeat"}),
    "debug": CONFIGURABLE | {"custom"},
    "all": CONFIGURABLE | {"custom"},
}


class EventsFilter:
    """Which event types a run emits. ``None`` allows everything."""

    def __init__(self, config: str | Iterable[str] | None = None) -> None:
        self.config = config
        self._builtin: set[str]
        self._custom: set[str] | None  # None: every custom event
        if config is None:
            self._builtin, self._custom = set(CONFIGURABLE), None
        elif isinstance(config, str):
            if config not in PRESETS:
                raise ValueError(
                    f"unknown events preset {config!r}: use one of "
                    f"{', '.join(sorted(PRESETS))}, or a list such as token,step,custom:name"
                )
            preset = PRESETS[config]
            self._builtin = set(preset - {"custom"})
            self._custom = None if "custom" in preset else set()
        else:
            self._builtin, self._custom = set(), set()
            for item in config:
                self._add(item.strip())

    def _add(self, item: str) -> None:
        if item.startswith(CUSTOM_PREFIX):
            name = item[len(CUSTOM_PREFIX) :]
            if not name:
                raise ValueError("'custom:' needs a name, e.g. custom:fraud_check")
            if self._custom is not None:
                self._custom.add(name)
        elif item == "custom":
            self._custom = None
        elif item in CONFIGURABLE:
            self._builtin.add(item)
        elif item in MANDATORY_TYPES:
            pass
        else:
            allowed = ", ".join(sorted(CONFIGURABLE | {"custom", "custom:<name>"}))
            raise ValueError(f"unknown event type {item!r} in the events filter: use {allowed}")

    @classmethod
    def parse(cls, text: str | None) -> EventsFilter:
        """``"chat"`` or ``"token,step,custom:x"`` as typed in a magic or on a command line."""
        if text is None or not text.strip():
            return cls(None)
        text = text.strip()
        if "," not in text and text in PRESETS:
            return cls(text)
        return cls([p for p in text.split(",") if p.strip()])

    def is_allowed(self, event_type: str, custom_name: str | None = None) -> bool:
        if event_type in MANDATORY_TYPES or event_type in self._builtin:
            return True
        if event_type in CONFIGURABLE:
            return False
        if custom_name is None:
            custom_name = (
                event_type[len(CUSTOM_PREFIX) :]
                if event_type.startswith(CUSTOM_PREFIX)
                else event_type
            )
        return self._custom is None or custom_name in self._custom

    def __repr__(self) -> str:
        return f"EventsFilter({self.config!r})"
