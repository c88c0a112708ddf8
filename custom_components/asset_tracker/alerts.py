"""Correlated alerts: many assets vanishing from one node at once point at the node, not the tag."""

from __future__ import annotations

from collections import deque

from .const import MASS_VANISH_COUNT, MASS_VANISH_WINDOW_MS


class VanishCorrelator:
    """Raises one node-level alert when several assets go away from a node within a window."""

    def __init__(
        self, count: int = MASS_VANISH_COUNT, window_ms: int = MASS_VANISH_WINDOW_MS
    ) -> None:
        self.count = count
        self.window_ms = window_ms
        self._recent: dict[str, deque[tuple[int, str]]] = {}
        self._alerted_at: dict[str, int] = {}

    def record(self, node: str, asset: str, at_ms: int) -> int | None:
        """Returns the number vanished when this departure completes a mass vanish, else None."""
        recent = self._recent.setdefault(node, deque())
        recent.append((at_ms, asset))
        while recent and at_ms - recent[0][0] > self.window_ms:
            recent.popleft()
        distinct = len({a for _, a in recent})
        if distinct < self.count or self.suppressing(node, at_ms):
            return None
        self._alerted_at[node] = at_ms
        return distinct

    def suppressing(self, node: str, at_ms: int) -> bool:
        """True while a node alert is fresh: per-asset 'missing' alerts from it are folded in."""
        alerted = self._alerted_at.get(node)
        return alerted is not None and abs(at_ms - alerted) <= self.window_ms
