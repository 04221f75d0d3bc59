"""Dockrion's event filter: presets, explicit lists, ``custom``/``custom:<name>``.

Mandatory events (started, complete, error, cancelled) always pass, because a run without its
lifecycle events cannot be followed. The API is Dockrion's ``EventsFilter`` name for name
(``is_allowed(event_type, custom_event_name)``, the ``allows_*`` properties, the LangGraph
stream-mode mapping); the one difference is that a custom type passed alone
(``is_allowed("custom:fraud_check")`` or ``is_allowed("fraud_check")``) is judged as the custom
event it is, where Dockrion answers False: that is how a reader filters stored events, which
carry only their type.
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

    MANDATORY_EVENTS: frozenset[str] = MANDATORY_TYPES
    CONFIGURABLE_EVENTS: frozenset[str] = CONFIGURABLE
    PRESETS: dict[str, frozenset[str]] = PRESETS

    def __init__(self, events_config: str | Iterable[str] | None = None) -> None:
        self.config = events_config
        self._builtin: set[str]
        self._custom: set[str] | None  # None: every custom event
        if events_config is None:
            self._builtin, self._custom = set(CONFIGURABLE), None
        elif isinstance(events_config, str):
            if events_config not in PRESETS:
                raise ValueError(
                    f"Unknown events preset: '{events_config}'. Valid presets: "
                    f"{', '.join(sorted(PRESETS))} (or give a list such as "
                    "token,step,custom:name)"
                )
            preset = PRESETS[events_config]
            self._builtin = set(preset - {"custom"})
            self._custom = None if "custom" in preset else set()
        else:
            self._builtin, self._custom = set(), set()
            for item in events_config:
                self._add(item.strip())

    def _add(self, item: str) -> None:
        if item.startswith(CUSTOM_PREFIX):
            name = item[len(CUSTOM_PREFIX) :]
            if not name:
                raise ValueError(
                    "Custom event name cannot be empty in 'custom:': give a name, "
                    "e.g. custom:fraud_check"
                )
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
            raise ValueError(
                f"Unknown event type: '{item}'. Valid types: {allowed} (started, complete, "
                "error and cancelled always pass)"
            )

    @classmethod
    def parse(cls, text: str | None) -> EventsFilter:
        """``"chat"`` or ``"token,step,custom:x"`` as typed in a magic or on a command line."""
        if text is None or not text.strip():
            return cls(None)
        text = text.strip()
        if "," not in text and text in PRESETS:
            return cls(text)
        return cls([p for p in text.split(",") if p.strip()])

    def _custom_allowed(self, name: str) -> bool:
        return self._custom is None or name in self._custom

    def is_allowed(self, event_type: str, custom_event_name: str | None = None) -> bool:
        """Whether an event passes: Dockrion's rule for built-in types and for
        ``("custom", name)``; any other type alone is a custom event (``custom:`` stripped)."""
        if event_type in MANDATORY_TYPES or event_type in self._builtin:
            return True
        if event_type == "custom" or custom_event_name is not None:
            return self._custom_allowed(custom_event_name or event_type)
        if event_type in CONFIGURABLE:
            return False
        if event_type.startswith(CUSTOM_PREFIX):
            event_type = event_type[len(CUSTOM_PREFIX) :]
        return self._custom_allowed(event_type)

    # -- Dockrion's LangGraph mapping ------------------------------------------------------------

    def get_langgraph_stream_modes(self) -> list[str]:
        """LangGraph ``stream_mode`` list for the allowed events: tokens -> ``messages``, steps
        -> ``updates``, progress/checkpoints/custom events -> ``custom``; ``["values"]`` when
        none of those pass."""
        modes = []
        if "token" in self._builtin:
            modes.append("messages")
        if "step" in self._builtin:
            modes.append("updates")
        if (
            "progress" in self._builtin
            or "checkpoint" in self._builtin
            or self._custom is None
            or bool(self._custom)
        ):
            modes.append("custom")
        return modes or ["values"]

    def is_native_event_allowed(self, langgraph_mode: str, inner_type: str = "") -> bool:
        """Whether an item of LangGraph's stream passes: ``messages`` is a token, ``updates`` a
        step, ``custom`` carries ``inner_type`` (``progress``, ``custom:name``, ...)."""
        if langgraph_mode == "messages":
            return self.is_allowed("token")
        if langgraph_mode == "updates":
            return self.is_allowed("step")
        if langgraph_mode == "custom":
            if inner_type.startswith(CUSTOM_PREFIX):
                return self.is_allowed("custom", inner_type[len(CUSTOM_PREFIX) :])
            return self.is_allowed(inner_type)
        return langgraph_mode == "values"

    # -- what passes -----------------------------------------------------------------------------

    @property
    def allows_tokens(self) -> bool:
        return "token" in self._builtin

    @property
    def allows_steps(self) -> bool:
        return "step" in self._builtin

    @property
    def allows_progress(self) -> bool:
        return "progress" in self._builtin

    @property
    def allows_checkpoints(self) -> bool:
        return "checkpoint" in self._builtin

    @property
    def allows_heartbeats(self) -> bool:
        return "heartbeat" in self._builtin

    @property
    def allows_all_custom(self) -> bool:
        return self._custom is None

    def get_allowed_events(self) -> set[str]:
        """The mandatory types, the allowed built-in ones and ``custom`` when every custom
        event passes (named custom events are not listed, as in Dockrion)."""
        allowed = set(MANDATORY_TYPES) | self._builtin
        if self._custom is None:
            allowed.add("custom")
        return allowed

    def __repr__(self) -> str:
        """Dockrion's: ``EventsFilter(all)``, ``EventsFilter(preset='chat')`` or the list."""
        if self._builtin == CONFIGURABLE and self._custom is None:
            return "EventsFilter(all)"
        for name, preset in PRESETS.items():
            custom_match = self._custom is None if "custom" in preset else self._custom == set()
            if self._builtin == set(preset - {"custom"}) and custom_match:
                return f"EventsFilter(preset='{name}')"
        events = sorted(self._builtin)
        if self._custom is None:
            events.append("custom")
        else:
            events.extend(f"custom:{name}" for name in sorted(self._custom))
        return f"EventsFilter({events})"
