"""Calibration a person can do: stand with an asset at a marked spot of a floor plan for a while;
each placed node's receiver offset is fitted from what it heard against what the radio map
predicts there, and the fit is shown as the position error at that spot before and after.

The fit is least squares of `heard - predicted = tag + node offset` over every sample and node,
with the node offsets summing to none (a tag's own transmit power is unknown: only how the nodes
differ from each other can be learned). One spot cannot separate the path-loss exponent from the
offsets (each node is at one distance from it), so the exponent keeps the model's value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .floorplan import FloorPlans
from .radio_map import FloorPlan, RadioMap

MIN_SAMPLES = 5
MIN_NODES = 3  # placed nodes that heard the asset
MAX_OFFSET_DB = 20.0


@dataclass(frozen=True, slots=True)
class Calibration:
    samples: int
    offsets_db: dict[str, float]  # per node: the offset to store (the old one plus the fitted)
    error_before_m: float  # median position error at the spot, with the old offsets
    error_after_m: float  # and with the fitted ones


def spot_room(plan: FloorPlan, floor: str, x: float, y: float) -> str | None:
    """The room of the plan the spot lies in."""
    return next(
        (r.room_id for r in plan.rooms if r.floor == floor and _inside(x, y, r.outline)),
        None,
    )


def predicted(radio_map: RadioMap, room: str, x: float, y: float) -> dict[str, float]:
    """What each node should hear from the spot: the map's nearest spot in the room."""
    spots = radio_map.spots[room]
    i = int(((spots[:, 0] - x) ** 2 + (spots[:, 1] - y) ** 2).argmin())
    return {n: float(v) for n, v in zip(radio_map.nodes, radio_map.means[room][i], strict=True)}


def fit_offsets(
    samples: Sequence[Mapping[str, float]], expected: Mapping[str, float]
) -> dict[str, float]:
    """Per node heard, its offset (dB) against `expected`, the offsets summing to zero."""
    nodes = sorted({n for s in samples for n in s if n in expected})
    rows = [
        (i, nodes.index(n), s[n] - expected[n])
        for i, s in enumerate(samples)
        for n in s
        if n in nodes
    ]
    # unknowns: one tag level per sample, then one offset per node; plus sum(offsets) = 0
    a = np.zeros((len(rows) + 1, len(samples) + len(nodes)))
    b = np.zeros(len(rows) + 1)
    for k, (i, j, residual) in enumerate(rows):
        a[k, i] = a[k, len(samples) + j] = 1.0
        b[k] = residual
    a[-1, len(samples) :] = 1.0
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    return {n: float(solution[len(samples) + j]) for j, n in enumerate(nodes)}


def position_error(
    radio_map: RadioMap,
    samples: Sequence[Mapping[str, float]],
    online: Mapping[str, bool],
    spot: tuple[str, float, float],
) -> float:
    """The median distance from the spot of where the map puts each sample (a wrong floor counts
    as the distance plus the floor's height: 3 m)."""
    floor, x, y = spot
    errors = []
    for heard in samples:
        fit = radio_map.fit(heard, online)
        room = max(fit.rooms, key=lambda r: fit.rooms[r])
        position = radio_map.position(room, heard, online)
        if position is None:
            continue
        error = math.dist((position.x, position.y), (x, y))
        errors.append(error + (3.0 if position.floor != floor else 0.0))
    return statistics.median(errors) if errors else math.inf


def calibrate(
    plans: FloorPlans,
    samples: Sequence[Mapping[str, float]],
    online: Mapping[str, bool],
    spot: tuple[str, float, float],
) -> Calibration:
    """Fits the offsets of the nodes that heard the asset at `spot` (floor, x, y); ValueError
    with too few samples or nodes."""
    plan = plans.radio_plan()
    if plan is None:
        raise ValueError("no usable plan")
    floor, x, y = spot
    room = spot_room(plan, floor, x, y)
    if room is None:
        raise LookupError(spot)
    before = RadioMap(plan)
    placed = [{n: v for n, v in s.items() if n in before.nodes} for s in samples]
    placed = [s for s in placed if len(s) >= 2]
    if len(placed) < MIN_SAMPLES or len({n for s in placed for n in s}) < MIN_NODES:
        raise ValueError(f"{len(placed)} samples")
    fitted = fit_offsets(placed, predicted(before, room, x, y))
    old = {n.node_id: n.offset_db for n in plan.nodes}
    offsets = {n: max(-MAX_OFFSET_DB, min(MAX_OFFSET_DB, old[n] + d)) for n, d in fitted.items()}
    nodes = [replace(n, offset_db=offsets.get(n.node_id, n.offset_db)) for n in plan.nodes]
    after = RadioMap(replace(plan, nodes=nodes))
    return Calibration(
        len(placed),
        {n: round(v, 2) for n, v in offsets.items()},
        round(position_error(before, placed, online, spot), 2),
        round(position_error(after, placed, online, spot), 2),
    )


def _inside(x: float, y: float, outline: Sequence[tuple[float, float]]) -> bool:
    inside = False
    for (x0, y0), (x1, y1) in zip(outline, [*outline[1:], outline[0]], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside
