"""Per-asset presence: unknown -> present -> away, debounced, with an away timeout on a timer.

An asset becomes present after `debounce` adverts within the away timeout, and away when no advert
has arrived for `away_timeout_s`, checked on every tick, not only when the next advert comes. The
state is persisted, so a restart or an outage does not turn every asset unknown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .durable_file import write_json_atomic

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class Presence:
    """The state of one asset."""

    state: str = "unknown"
    last_seen_ms: int = 0
    streak: int = 0
    changed_ms: int = 0


class PresenceTracker:
    """All assets' presence; `seen` and `tick` return the transitions they caused."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self.assets: dict[str, Presence] = {}
        self.transitions = 0
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            self.assets = {k: Presence(**v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError) as err:
            _LOGGER.warning("Ignoring unreadable presence file %s: %s", self._path, err)

    def seen(self, asset: str, now_ms: int, debounce: int, away_timeout_ms: int) -> str | None:
        p = self.assets.setdefault(asset, Presence())
        gap = now_ms - p.last_seen_ms
        p.streak = p.streak + 1 if gap <= away_timeout_ms else 1
        p.last_seen_ms = max(p.last_seen_ms, now_ms)
        self._dirty = True
        if p.state != "present" and p.streak >= debounce:
            return self._move(p, "present", now_ms)
        return None

    def tick(self, now_ms: int, away_timeout_ms: int) -> list[tuple[str, str]]:
        moved = [
            (asset, self._move(p, "away", now_ms))
            for asset, p in self.assets.items()
            if p.state == "present" and now_ms - p.last_seen_ms >= away_timeout_ms
        ]
        for _asset, p in ((a, self.assets[a]) for a, _ in moved):
            p.streak = 0
        return moved

    def _move(self, p: Presence, state: str, now_ms: int) -> str:
        p.state, p.changed_ms = state, now_ms
        self.transitions += 1
        self._dirty = True
        return state

    def save(self) -> None:
        if self._path is not None and self._dirty:
            body: dict[str, Any] = {
                k: {
                    "state": p.state,
                    "last_seen_ms": p.last_seen_ms,
                    "streak": p.streak,
                    "changed_ms": p.changed_ms,
                }
                for k, p in self.assets.items()
            }
            write_json_atomic(self._path, body)
            self._dirty = False
