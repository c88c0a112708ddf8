"""RSSI smoothing that rejects outliers, and distance from path loss.

A median over the last few samples throws away the single deep fades and reflections BLE is full
of; an exponentially weighted mean over the medians then follows real movement without jitter.
"""

from __future__ import annotations

from collections import deque
from statistics import median

WINDOW = 5
ALPHA = 0.3
RSSI_MIN, RSSI_MAX = -127.0, 20.0  # dBm, as PROTOCOL.md bounds `rssi`


class RssiFilter:
    """Median-of-window then EWMA; `value` is None until the first sample."""

    def __init__(self, window: int = WINDOW, alpha: float = ALPHA) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._alpha = alpha
        self.value: float | None = None

    def update(self, rssi: float) -> float | None:
        """The smoothed value; a sample outside the physical range leaves it unchanged."""
        if not RSSI_MIN <= rssi <= RSSI_MAX:
            # HCI reports 127 for "not available"; some adapters report -128: neither is a signal
            return self.value
        self._recent.append(rssi)
        m = median(self._recent)
        self.value = m if self.value is None else self.value + self._alpha * (m - self.value)
        return self.value


def distance_m(rssi: float, measured_power: float, exponent: float) -> float:
    """Log-distance path loss: measured_power is the RSSI at 1 m."""
    return round(min(1000.0, 10 ** ((measured_power - rssi) / (10 * exponent))), 2)
