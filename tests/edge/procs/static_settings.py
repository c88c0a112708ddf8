"""A minimal in-memory RuntimeSettings for driving the delivery core in tests (the real one
validates every key of the protocol; this one accepts the batching keys and rejects the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class StaticSettings:
    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {"batching.window_ms": 1000, "batching.max_events": 200}
        self._values.update(values or {})
        self.version = 0
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def get(self, key: str) -> Any:
        return self._values[key]

    def apply(self, changes: dict[str, Any], version: int | None) -> dict[str, str]:
        errors = {k: "unknown setting" for k in changes if k not in self._values}
        errors.update(
            {
                k: "must be an integer"
                for k, v in changes.items()
                if k in self._values and (not isinstance(v, int) or isinstance(v, bool))
            }
        )
        if errors:
            return errors
        self._values.update(changes)
        self.version = version if version is not None else self.version + 1
        for callback in list(self._subscribers):
            callback(self.values())
        return {}

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)
