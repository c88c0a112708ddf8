"""RSSI smoothing that rejects outliers, and distance from path loss.

A median over the last few samples throws away the single deep fades and reflections BLE is full
of; an exponentially weighted mean over the medians then follows real movement without jitter.
The mean's weight follows the time between samples, so a tag that advertises ten times a second
is smoothed over the same time as one that advertises once a second (a weight per sample would
leave the fast tag's value as jittery as its raw adverts, and every jitter past the telemetry
deadband costs a message).
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median

WINDOW = 3
TIME_CONSTANT_S = 1.0
ALPHA = 0.5  # the weight per sample when samples carry no time
RSSI_MIN, RSSI_MAX = -127.0, 20.0  # dBm, as PROTOCOL.md bounds `rssi`


class RssiFilter:
    """Median-of-window then a time-weighted EWMA; `value` is None until the first sample."""

    def __init__(
        self, window: int = WINDOW, alpha: float = ALPHA, time_constant_s: float = TIME_CONSTANT_S
    ) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._alpha = alpha
        self._tau_ms = time_constant_s * 1000
        self._last_ms: int | None = None
        self.value: float | None = None

    def update(self, rssi: float, at_ms: int | None = None) -> float | None:
        """The smoothed value; a sample outside the physical range leaves it unchanged."""
        if not RSSI_MIN <= rssi <= RSSI_MAX:
            # HCI reports 127 for "not available"; some adapters report -128: neither is a signal
            return self.value
        self._recent.append(rssi)
        m = median(self._recent)
        alpha = self._alpha
        if at_ms is not None:
            if self._last_ms is not None:
                alpha = 1.0 - math.exp(-max(0, at_ms - self._last_ms) / self._tau_ms)
            self._last_ms = at_ms
        self.value = m if self.value is None else self.value + alpha * (m - self.value)
        return self.value


def distance_m(rssi: float, measured_power: float, exponent: float) -> float:
    """Log-distance path loss: measured_power is the RSSI at 1 m."""
    return round(min(1000.0, 10 ** ((measured_power - rssi) / (10 * exponent))), 2)
