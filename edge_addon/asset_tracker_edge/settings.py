"""Runtime settings (PROTOCOL.md "Runtime settings"): changed from Home Assistant without a restart.

Changes are all or nothing, persisted atomically before listeners hear of them, and versioned so
that a repeated or older command changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .durable_file import write_json_atomic

_LOGGER = logging.getLogger(__name__)

# key -> (type, low, high); defaults come from the configuration's sections
SPEC: dict[str, tuple[type, float | None, float | None]] = {
    "presence.away_timeout_s": (int, 5, 86400),
    "presence.debounce": (int, 1, 20),
    "telemetry.interval_s": (int, 1, 3600),
    "telemetry.delta_db": (float, 0, 30),
    "telemetry.min_interval_s": (float, 0.5, 3600),
    "batching.window_ms": (int, 10, 60000),
    "batching.max_events": (int, 1, 500),
    "rules.threshold.enabled": (bool, None, None),
    "rules.threshold.hold_s": (int, 0, 3600),
    "rules.threshold.hysteresis": (float, 0, 100),
    "rules.rate.enabled": (bool, None, None),
    "rules.rate.max_per_min": (float, 0.1, 100),
    "rules.rate.window_s": (int, 120, 3600),
    "rules.zscore.enabled": (bool, None, None),
    "rules.zscore.z": (float, 2, 10),
    "rules.missing.enabled": (bool, None, None),
    "rules.missing.after_s": (int, 60, 604800),
    "rules.battery.enabled": (bool, None, None),
    "rules.battery.min_pct": (int, 1, 100),
    "rules.battery.hold_s": (int, 0, 86400),
    "rules.movement.enabled": (bool, None, None),
    "rules.movement.jump_m": (float, 0.5, 100),
    "rules.movement.rssi": (bool, None, None),
    "unknown_tags.report": (bool, None, None),
}


def defaults_from(config: dict[str, Any]) -> dict[str, Any]:
    """Initial values: the configuration's presence, telemetry, batching and rules sections."""
    values: dict[str, Any] = {}
    for key in SPEC:
        node: Any = config
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        values[key] = node
    return values


def check(key: str, value: Any) -> str | None:
    """Why a value is not acceptable for a key, or None."""
    if key not in SPEC:
        return "unknown setting"
    kind, low, high = SPEC[key]
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if kind is int and value != int(value):
        return "must be a whole number"
    if low is not None and value < low:
        return f"value must be at least {low:g}"
    if high is not None and value > high:
        return f"value must be at most {high:g}"
    return None


def together(values: dict[str, Any], changed: dict[str, Any]) -> dict[str, str]:
    """What is wrong with values that are each acceptable but not side by side, for the keys
    `changed` names (the ones a `set` can fix)."""
    spacing, interval = values.get("telemetry.min_interval_s"), values.get("telemetry.interval_s")
    if spacing is None or interval is None or spacing <= interval:
        return {}
    if "telemetry.min_interval_s" in changed:
        return {"telemetry.min_interval_s": f"must be at most telemetry.interval_s ({interval:g})"}
    return {"telemetry.interval_s": f"must be at least telemetry.min_interval_s ({spacing:g})"}


class RuntimeSettings:
    """The node's current settings, their version and who listens to changes."""

    def __init__(self, defaults: dict[str, Any], path: Path | None = None) -> None:
        self._path = path
        self._values = dict(defaults)
        self.version = 0
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            saved = json.loads(self._path.read_text(encoding="utf-8"))
            values = {k: v for k, v in saved["values"].items() if check(k, v) is None}
            version = int(saved["version"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            _LOGGER.warning("Ignoring unreadable settings file %s: %s", self._path, err)
            return
        self._values.update(values)
        self.version = version

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def get(self, key: str) -> Any:
        return self._values[key]

    def apply(self, changes: dict[str, Any], version: int | None) -> dict[str, str]:
        """All or nothing; returns {key: error}, empty when applied."""
        errors = {k: e for k, v in changes.items() if (e := check(k, v)) is not None}
        if not changes:
            errors["set"] = "no settings given"
        if not errors:
            errors = together(self._values | changes, changes)
        if errors:
            return errors
        typed = {k: (float(v) if SPEC[k][0] is float else v) for k, v in changes.items()}
        self._values.update(typed)
        self.version = max(self.version + 1, version or 0)
        self._save()
        for listener in list(self._listeners):
            listener(self.values())
        return {}

    def _save(self) -> None:
        if self._path is not None:
            write_json_atomic(self._path, {"version": self.version, "values": self._values})

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)
