"""Sliding-window figures: events per minute, anomaly rate, latency percentiles, dwell, visits."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import date


class RateWindow:
    """Counts of timestamps within the last `window_ms`."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._times: deque[int] = deque()

    def add(self, now_ms: int, count: int = 1) -> None:
        self._times.extend([now_ms] * count)
        self._trim(now_ms)

    def count(self, now_ms: int) -> int:
        self._trim(now_ms)
        return len(self._times)

    def per_minute(self, now_ms: int) -> float:
        return round(self.count(now_ms) * 60_000 / self.window_ms, 2)

    def _trim(self, now_ms: int) -> None:
        while self._times and now_ms - self._times[0] > self.window_ms:
            self._times.popleft()


class LatencyWindow:
    """The last N end-to-end latencies, split into edge, outbox wait and transport (ms)."""

    def __init__(self, size: int = 500) -> None:
        self._total: deque[float] = deque(maxlen=size)
        self._parts: dict[str, deque[float]] = {
            part: deque(maxlen=size) for part in ("edge", "outbox", "transport")
        }

    def add(self, total: float, parts: dict[str, float]) -> None:
        self._total.append(total)
        for part, value in parts.items():
            self._parts[part].append(value)

    def p95(self) -> float | None:
        return percentile(self._total, 0.95)

    def split_p95(self) -> dict[str, float | None]:
        return {part: percentile(values, 0.95) for part, values in self._parts.items()}


def significant(value: float | None, figures: int = 2) -> float | None:
    """`value` to `figures` significant figures: a health figure that would otherwise change
    with every message (and be recorded each time) changes only when it moves visibly."""
    if value is None or value == 0:
        return value
    digits = figures - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    return float(int(rounded)) if digits <= 0 else rounded


def percentile(values: deque[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


@dataclass(slots=True)
class Visits:
    """Dwell in the current area and visits per area today."""

    area: str | None = None
    since_ms: int | None = None
    day: date | None = None
    per_area: dict[str, int] = field(default_factory=dict)

    def enter(self, area: str | None, now_ms: int, today: date) -> None:
        if today != self.day:
            self.day, self.per_area = today, {}
        if area == self.area:
            return
        self.area, self.since_ms = area, now_ms
        if area is not None:
            self.per_area[area] = self.per_area.get(area, 0) + 1

    def dwell_minutes(self, now_ms: int) -> float | None:
        if self.area is None or self.since_ms is None:
            return None
        return round((now_ms - self.since_ms) / 60_000, 1)
