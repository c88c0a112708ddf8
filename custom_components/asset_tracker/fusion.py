"""Which node an asset is nearest to, from what every node saw recently, with hysteresis.

The strongest smoothed signal wins only when it beats the current node by a margin, so an asset
between two rooms does not flap; a current node that has not seen the asset within the window
loses its claim at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Sighting:
    """The latest smoothed observation of an asset by one node, and that node's presence verdict."""

    rssi: float | None
    distance_m: float | None
    wall_ms: int
    present: bool | None = None
    order: tuple[int, int] = (0, 0)


def fused_presence(sightings: dict[str, Sighting]) -> str:
    """Present when any node says so; away only when every node that judged says away."""
    verdicts = [s.present for s in sightings.values() if s.present is not None]
    if any(verdicts):
        return "present"
    return "away" if verdicts else "unknown"


def choose_node(
    sightings: dict[str, Sighting],
    current: str | None,
    now_ms: int,
    window_ms: int,
    hysteresis_db: float,
) -> str | None:
    """The node the asset belongs to now (None when no node saw it within the window)."""
    recent = {
        node: s.rssi
        for node, s in sightings.items()
        if s.rssi is not None and now_ms - s.wall_ms <= window_ms
    }
    if not recent:
        return None
    best = max(recent, key=lambda node: (recent[node], node))
    if current in recent and recent[best] - recent[current] < hysteresis_db:
        return current
    return best
