"""Health figures shown as sensors: rounded so they change when they move visibly, not with every
message (each change is a recorded state row)."""

from __future__ import annotations

import pytest

from custom_components.asset_tracker.analytics import RateWindow, significant


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (741.2, 740.0),
        (746.0, 750.0),
        (3.27, 3.3),
        (0.0412, 0.041),
        (12.0, 12.0),
        (99.6, 100.0),
        (-27.4, -27.0),
        (0.0, 0.0),
        (None, None),
    ],
)
def test_two_significant_figures(value: float | None, shown: float | None) -> None:
    assert significant(value) == shown


def test_a_busy_node_rate_changes_only_when_it_moves_visibly() -> None:
    """A node sending 12 events a second: its 5-minute rate shown to two figures stays put while
    the window slides, where the raw rate changed with every message."""
    window = RateWindow(300_000)
    now = 0
    shown, raw = set(), set()
    for second in range(600):
        now = second * 1000
        window.add(now, 12 if second % 2 else 11)
        if second >= 300:
            raw.add(window.per_minute(now))
            shown.add(significant(window.per_minute(now)))
    assert len(raw) > 1
    assert len(shown) < len(raw)
    assert shown <= {690.0, 700.0, 710.0}
