"""Local anomaly rules, each switched and tuned live from the runtime settings.

Rules fire on a change of condition (edge-triggered) and re-arm when it clears, so a warm freezer
raises one alert, not one per advertisement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Setting = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly: its rule, severity and what it is about."""

    rule: str
    severity: str
    message: str
    metric: str | None = None
    value: float | None = None


@dataclass(slots=True)
class Ewma:
    """Running mean and variance for the z-score rule."""

    mean: float | None = None
    var: float = 0.0
    n: int = 0

    def update(self, x: float, alpha: float = 0.05) -> float | None:
        """z-score of x against the history before it (None while warming up)."""
        if self.mean is None:
            self.mean, self.n = x, 1
            return None
        std = math.sqrt(self.var)
        z = (x - self.mean) / std if self.n >= 10 and std > 1e-6 else None
        diff = x - self.mean
        self.mean += alpha * diff
        self.var = (1 - alpha) * (self.var + alpha * diff * diff)
        self.n += 1
        return z


@dataclass(slots=True)
class AssetRules:
    """Per-asset rule state."""

    thresholds: dict[str, float]
    active: set[str] = field(default_factory=set)
    last: dict[str, tuple[int, float]] = field(default_factory=dict)
    stats: dict[str, Ewma] = field(default_factory=dict)
    stationary_m: float | None = None

    def readings(self, now_ms: int, readings: dict[str, float], setting: Setting) -> list[Finding]:
        found: list[Finding] = []
        for metric, value in readings.items():
            found += self._threshold(metric, value, setting)
            found += self._rate(metric, value, now_ms, setting)
            found += self._zscore(metric, value, setting)
            self.last[metric] = (now_ms, value)
        return found

    def _edge(self, key: str, firing: bool, finding: Finding) -> list[Finding]:
        if firing and key not in self.active:
            self.active.add(key)
            return [finding]
        if not firing:
            self.active.discard(key)
        return []

    def _threshold(self, metric: str, value: float, setting: Setting) -> list[Finding]:
        if not setting("rules.threshold.enabled"):
            return []
        low = self.thresholds.get(f"{metric}_min")
        high = self.thresholds.get(f"{metric}_max")
        out = (low is not None and value < low) or (high is not None and value > high)
        bound = low if low is not None and value < low else high
        message = f"{metric} {value:g} outside its limit {bound}"
        return self._edge(
            f"threshold:{metric}", out, Finding("threshold", "critical", message, metric, value)
        )

    def _rate(self, metric: str, value: float, now_ms: int, setting: Setting) -> list[Finding]:
        if metric != "temperature" or not setting("rules.rate.enabled") or metric not in self.last:
            return []
        then, before = self.last[metric]
        minutes = (now_ms - then) / 60_000
        if minutes <= 0:
            return []
        per_min = abs(value - before) / max(
            minutes, 1 / 6
        )  # at least 10 s apart, or noise dominates
        limit = float(setting("rules.rate.max_per_min"))
        message = f"{metric} changing {per_min:.2f}/min (limit {limit:g})"
        return self._edge(
            f"rate:{metric}", per_min > limit, Finding("rate", "warning", message, metric, value)
        )

    def _zscore(self, metric: str, value: float, setting: Setting) -> list[Finding]:
        z = self.stats.setdefault(metric, Ewma()).update(value)
        if not setting("rules.zscore.enabled") or z is None:
            return []
        limit = float(setting("rules.zscore.z"))
        message = f"{metric} {value:g} is {z:+.1f} standard deviations from usual"
        return self._edge(
            f"zscore:{metric}", abs(z) > limit, Finding("zscore", "warning", message, metric, value)
        )

    def battery(self, pct: float, setting: Setting) -> list[Finding]:
        if not setting("rules.battery.enabled"):
            return []
        limit = float(setting("rules.battery.min_pct"))
        low = pct < limit
        message = f"battery {pct:g}% below {limit:g}%"
        return self._edge("battery", low, Finding("battery", "warning", message, "battery", pct))

    def movement(self, distance: float, setting: Setting) -> list[Finding]:
        """A distance jump while the asset had been stationary."""
        if not setting("rules.movement.enabled"):
            return []
        jump = float(setting("rules.movement.jump_m"))
        if self.stationary_m is None:
            self.stationary_m = distance
            return []
        moved = abs(distance - self.stationary_m) > jump
        finding = Finding(
            "movement",
            "warning",
            f"moved {abs(distance - self.stationary_m):.1f} m",
            "distance",
            distance,
        )
        result = self._edge("movement", moved, finding)
        if not moved:
            self.stationary_m += 0.1 * (distance - self.stationary_m)  # slow drift is not movement
        return result

    def missing(self, gone_for_ms: int, setting: Setting) -> list[Finding]:
        if not setting("rules.missing.enabled"):
            return []
        after = int(setting("rules.missing.after_s"))
        gone = gone_for_ms >= after * 1000
        finding = Finding(
            "missing", "critical", f"not seen for {gone_for_ms // 1000} s", None, None
        )
        return self._edge("missing", gone, finding)
